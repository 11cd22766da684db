import { type VirtAddr, hex, va } from "../../util/address.js";
import { GuestDataError, VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { type DPathOptions, dPathBytes } from "./dpath.js";
import { checkKernelPointer } from "./walk.js";

/**
 * A process's open files as /proc/<pid>/fd and /proc/<pid>/fdinfo show them: the fd table of
 * `task->files` (fs/file.c), each `struct file` named by `d_path(&file->f_path)` and described
 * by `seq_show()` of fs/proc/fd.c (pos, flags with O_CLOEXEC from the close-on-exec bitmap,
 * mnt_id, ino). Same on 6.1 and 6.12.
 */

/** What the inode's S_IFMT bits (or an anon inode's name) say a file is. */
export type FileType = "file" | "dir" | "pipe" | "socket" | "link" | "char" | "block" | "anon" | "unknown";

export interface OpenFile {
  readonly fd: number;
  readonly file: VirtAddr;
  readonly type: FileType;
  /** The /proc/<pid>/fd/<fd> link target, decoded by `decodeGuestBytes`. */
  readonly path: string;
  /** fdinfo's `flags`: `f_flags`, plus O_CLOEXEC when the fd is close-on-exec. */
  readonly flags: number;
  readonly pos: bigint;
  readonly mntId: number;
  readonly ino: bigint;
  /** What could not be read for this fd (its path, say); absent when everything could. */
  readonly warnings?: readonly string[];
}

/** The kernel's NR_OPEN ceiling (fs.nr_open can be no larger): a bigger table is corrupt. */
const MAX_FDS = 1 << 20;
const O_CLOEXEC = 0o2000000;

const S_IFMT = 0o170000;
const TYPES: ReadonlyMap<number, FileType> = new Map([
  [0o140000, "socket"],
  [0o120000, "link"],
  [0o100000, "file"],
  [0o060000, "block"],
  [0o040000, "dir"],
  [0o020000, "char"],
  [0o010000, "pipe"],
]);

export function fileType(mode: number, path: string): FileType {
  if (path.startsWith("anon_inode:")) return "anon";
  return TYPES.get(mode & S_IFMT) ?? "unknown";
}

/** `fdinfo`'s flags as the kernel prints them ("0%o"). */
export function formatFlags(flags: number): string {
  return `0${flags.toString(8)}`;
}

function field(ctx: KernelContext, struct: string, member: string): bigint {
  return BigInt(ctx.layout.offsetof(struct, member));
}

/** The fd table of a task: `files->fdt`'s `fd[]` and `close_on_exec` words, bounded by max_fds. */
function fdTable(ctx: KernelContext, task: VirtAddr): { files: bigint[]; cloexec: Buffer } | undefined {
  const k = ctx.kernel;
  const filesPtr = k.readU64(va(task + field(ctx, "task_struct", "files")));
  if (filesPtr === 0n) return undefined; // an exiting task, or a kernel thread that dropped them
  const files = checkKernelPointer(filesPtr, ctx.bounds, `files of task ${hex(task)}`);
  const fdt = checkKernelPointer(
    k.readU64(va(files + field(ctx, "files_struct", "fdt"))),
    ctx.bounds,
    `fdt of files_struct ${hex(files)}`,
  );
  const maxFds = k.readU32(va(fdt + field(ctx, "fdtable", "max_fds")));
  if (maxFds > MAX_FDS)
    throw new GuestDataError(`fdtable ${hex(fdt)} claims ${maxFds} fds (at most ${MAX_FDS})`);
  const array = (member: string) =>
    checkKernelPointer(k.readU64(va(fdt + field(ctx, "fdtable", member))), ctx.bounds, `fdtable.${member}`);
  const raw = k.read(array("fd"), maxFds * 8);
  const out: bigint[] = [];
  for (let i = 0; i < maxFds; i++) out.push(raw.readBigUInt64LE(i * 8));
  return { files: out, cloexec: k.read(array("close_on_exec"), Math.ceil(maxFds / 64) * 8) };
}

/** Every open fd of the task's file table, in fd order; empty for a task without one. */
export function openFiles(ctx: KernelContext, task: VirtAddr, opts: DPathOptions = {}): OpenFile[] {
  const table = fdTable(ctx, task);
  if (!table) return [];
  const out: OpenFile[] = [];
  table.files.forEach((f, fd) => {
    if (f === 0n) return;
    const cloexec = (table.cloexec[fd >> 3]! >> (fd & 7)) & 1;
    out.push(readOpenFile(ctx, fd, checkKernelPointer(f, ctx.bounds, `fd ${fd}`), cloexec === 1, opts));
  });
  return out;
}

function readOpenFile(
  ctx: KernelContext,
  fd: number,
  file: VirtAddr,
  cloexec: boolean,
  opts: DPathOptions,
): OpenFile {
  const k = ctx.kernel;
  const ptr = (addr: bigint, what: string) => checkKernelPointer(k.readU64(va(addr)), ctx.bounds, what);
  const fPath = file + field(ctx, "file", "f_path");
  const mnt = ptr(fPath + field(ctx, "path", "mnt"), `f_path.mnt of file ${hex(file)}`);
  const dentry = ptr(fPath + field(ctx, "path", "dentry"), `f_path.dentry of file ${hex(file)}`);
  const inode = ptr(file + field(ctx, "file", "f_inode"), `f_inode of file ${hex(file)}`);
  const flags = k.readU32(va(file + field(ctx, "file", "f_flags"))) | (cloexec ? O_CLOEXEC : 0);
  const mode = k.readU16(va(inode + field(ctx, "inode", "i_mode")));
  const base = {
    fd,
    file,
    flags: flags >>> 0,
    pos: BigInt.asIntN(64, k.readU64(va(file + field(ctx, "file", "f_pos")))),
    mntId: k.readU32(va(mnt - field(ctx, "mount", "mnt") + field(ctx, "mount", "mnt_id"))),
    ino: k.readU64(va(inode + field(ctx, "inode", "i_ino"))),
  };
  try {
    const path = decodeGuestBytes(dPathBytes(ctx, mnt, dentry, opts));
    return { ...base, type: fileType(mode, path), path };
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    const warnings = [`path of fd ${fd} unreadable: ${error.message}`];
    return { ...base, type: fileType(mode, ""), path: "?", warnings };
  }
}
