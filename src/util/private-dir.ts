/**
 * The one directory vmsight puts its sockets, run directories and temporary files in. A fixed
 * name in a shared directory (/tmp) is a trap: whoever creates it first decides where the next
 * vmsight connects (a fake gdbstub feeding crafted replies) and can read or plant what QEMU
 * writes there. So, as OpenSSH and systemd do: make the directory ourselves, then look at what
 * is really there with lstat (never following a symlink) and refuse it unless it is a plain
 * directory, owned by us, mode 0700. In a sticky /tmp nobody else can rename or remove a
 * directory we own, so the check stays true after it is made.
 */
import { chmodSync, lstatSync, mkdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { VmsightError } from "./errors.js";

function myUid(): number | undefined {
  return process.geteuid?.() ?? process.getuid?.();
}

function refuse(path: string, why: string, hint: string): never {
  throw new VmsightError("E_UNSAFE_DIR", `refusing to use ${path}: it ${why}`, { hint });
}

/**
 * Creates `path` (one level, mode 0700) unless it exists, and returns it only when it is a
 * directory (not a symlink to one) owned by the current user with mode 0700.
 */
export function ensurePrivateDir(path: string): string {
  let created = false;
  try {
    mkdirSync(path, { mode: 0o700 });
    created = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
      throw new VmsightError("E_UNSAFE_DIR", `cannot create ${path}: ${(error as Error).message}`, {
        hint: "set XDG_RUNTIME_DIR or TMPDIR to a directory you may write",
        cause: error,
      });
    }
  }
  const removeIt = `remove it (rm -rf ${path}) and run vmsight again; if it comes back, another user is trying to intercept vmsight`;
  let st = lstatSync(path);
  if (st.isSymbolicLink()) refuse(path, "is a symbolic link, not a directory", removeIt);
  if (!st.isDirectory()) refuse(path, "is not a directory", removeIt);
  const uid = myUid();
  if (uid !== undefined && st.uid !== uid) {
    refuse(path, `is owned by uid ${st.uid}, not by you (uid ${uid})`, removeIt);
  }
  // A umask can only take bits away from 0700; a directory we just made gets exactly 0700.
  if (created && (st.mode & 0o777) !== 0o700) {
    chmodSync(path, 0o700);
    st = lstatSync(path);
  }
  const mode = st.mode & 0o777;
  if (mode !== 0o700) {
    refuse(path, `has mode 0${mode.toString(8)}, not 0700 (others may use it)`, `chmod 700 ${path}`);
  }
  return path;
}

/** $XDG_RUNTIME_DIR counts only when it is a real directory of ours that others cannot write. */
function usableRuntimeDir(): string | undefined {
  const dir = process.env.XDG_RUNTIME_DIR;
  if (!dir || !isAbsolute(dir)) return undefined;
  try {
    const st = statSync(dir);
    return st.isDirectory() && st.uid === myUid() && (st.mode & 0o022) === 0 ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * vmsight's private directory: `$XDG_RUNTIME_DIR/vmsight` where that is set (a per-user tmpfs,
 * made by systemd-logind), else `$TMPDIR/vmsight-<uid>`; created and checked on every call.
 */
export function privateDir(): string {
  const runtime = usableRuntimeDir();
  return ensurePrivateDir(
    runtime ? join(runtime, "vmsight") : join(tmpdir(), `vmsight-${myUid() ?? "user"}`),
  );
}
