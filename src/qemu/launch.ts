import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  constants,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { VmsightError } from "../util/errors.js";
import { ensurePrivateDir, privateDir } from "../util/private-dir.js";
import { type Accel, type AccelPreference, detectAccel } from "./accel.js";

export interface LaunchOptions {
  readonly kernel: string;
  readonly initrd: string;
  readonly append?: string;
  /** Guest RAM, e.g. "512M" or "4G" (default "512M"). */
  readonly memory?: string;
  readonly cpus?: number;
  /** Start with the vCPUs stopped (-S); resume with QMP `cont`. */
  readonly paused?: boolean;
  readonly accel?: AccelPreference;
  /** -cpu model; default qemu64 under TCG (`max` would turn on 5-level paging), host under KVM. */
  readonly cpu?: string;
  /** Where the sockets and logs go; default a fresh directory in vmsight's private directory. */
  readonly runDir?: string;
  /**
   * Guest RAM: "memfd" (default) is a shared memfd, which vmsight maps through the QEMU
   * process's /proc/<pid>/map_files (reads cost a memory access, not a system call) and which
   * the kernel frees with QEMU; "shared-file" is /dev/shm/vmsight-<id>, for other tools that want
   * the file; "anonymous" is QEMU's own default, read through /proc/<pid>/mem.
   */
  readonly memoryBackend?: "memfd" | "anonymous" | "shared-file";
  /** Only -qmp as a control channel: the serial console goes to the log file only, no socket. */
  readonly qmpOnly?: boolean;
  readonly extraArgs?: readonly string[];
  /** QEMU binary (default $VMSIGHT_QEMU or qemu-system-x86_64). */
  readonly qemu?: string;
  /**
   * Leave QEMU running when this process exits (`vmsight run`): it gets its own session and is
   * not killed by the exit hook that otherwise stops guests a crashed test run left behind.
   */
  readonly detach?: boolean;
  /** How long to wait for QEMU's sockets to appear (default 20 s). */
  readonly startTimeoutMs?: number;
}

export interface LaunchedGuest {
  readonly pid: number;
  readonly runDir: string;
  readonly qmpSocket: string;
  /** The guest's serial console as a unix socket; undefined with qmpOnly. */
  readonly serialSocket: string | undefined;
  /**
   * Everything the guest wrote to its serial console, whether or not anyone is connected. Exact
   * with qmpOnly (a plain file backend). Behind the socket it is best effort: when the client's
   * socket is full, QEMU 7.2 logs the failed (EAGAIN) write and then the retry, so bytes come
   * out doubled. Read the socket itself for exact output.
   */
  readonly serialLog: string;
  /** QEMU's own stderr. */
  readonly qemuLog: string;
  readonly accel: Accel;
  readonly accelReason: string;
  readonly memoryPath?: string;
  readonly args: readonly string[];
  /** Resolves with QEMU's exit code (null when killed by a signal) once it has exited. */
  readonly exited: Promise<number | null>;
  /**
   * Kills QEMU and removes the run directory (only the files it made there, when the caller
   * chose the directory) and the shared RAM file. Idempotent.
   */
  stop(): Promise<void>;
}

const MIB = 1024 * 1024;
const UNITS: Record<string, number> = { M: MIB, G: 1024 * MIB, T: 1024 * 1024 * MIB };

/** Parses a QEMU-style memory size ("512M", "4G"); returns bytes. */
export function parseMemorySize(text: string): number {
  const m = /^([1-9][0-9]{0,6})([MGT])$/i.exec(text.trim());
  const bytes = m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : Number.NaN;
  if (!(bytes >= 64 * MIB && bytes <= UNITS.T!)) {
    throw new VmsightError("E_USAGE", `memory size "${text}" is not a size between 64M and 1T`, {
      hint: 'write a whole number and a unit, e.g. "512M" or "4G"',
    });
  }
  return bytes;
}

export interface QemuArgsInput {
  readonly kernel: string;
  readonly initrd: string;
  readonly append: string;
  readonly memory: string;
  readonly cpus: number;
  readonly paused: boolean;
  readonly accel: Accel;
  readonly cpu: string;
  readonly runDir: string;
  readonly memoryPath: string | undefined;
  /** RAM in a shared memfd (ignored when memoryPath is set). */
  readonly memfd?: boolean;
  readonly qmpOnly: boolean;
  readonly extraArgs: readonly string[];
}

/** The QEMU command line, as data (no I/O) so it can be checked without starting anything. */
export function qemuArgs(o: QemuArgsInput): string[] {
  const serial = o.qmpOnly
    ? `file,id=ser0,path=${join(o.runDir, "serial.log")}`
    : `socket,id=ser0,path=${join(o.runDir, "serial.sock")},server=on,wait=off,logfile=${join(o.runDir, "serial.log")}`;
  const args = ["-accel", o.accel, "-cpu", o.cpu, "-m", o.memory, "-smp", String(o.cpus)];
  args.push("-kernel", o.kernel, "-initrd", o.initrd, "-append", o.append);
  args.push("-display", "none", "-nodefaults", "-no-reboot");
  args.push("-qmp", `unix:${join(o.runDir, "qmp.sock")},server=on,wait=off`);
  args.push("-chardev", serial, "-serial", "chardev:ser0");
  if (o.memoryPath !== undefined) {
    args.push("-object", `memory-backend-file,id=ram0,size=${o.memory},mem-path=${o.memoryPath},share=on`);
    args.push("-machine", "memory-backend=ram0");
  } else if (o.memfd) {
    args.push("-object", `memory-backend-memfd,id=ram0,size=${o.memory},share=on`);
    args.push("-machine", "memory-backend=ram0");
  }
  if (o.paused) args.push("-S");
  return [...args, ...o.extraArgs];
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** A test run that crashes must not leave guests eating the CPU: kill what is left on exit. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of running) child.kill("SIGKILL");
  });
}

export async function launchGuest(opts: LaunchOptions): Promise<LaunchedGuest> {
  const memory = opts.memory ?? "512M";
  parseMemorySize(memory);
  const cpus = opts.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) {
    throw new VmsightError("E_USAGE", `cpus=${cpus} is not a whole number from 1 to 64`);
  }
  for (const [what, path] of [
    ["kernel", opts.kernel],
    ["initrd", opts.initrd],
  ] as const) {
    if (!existsSync(path)) throw new VmsightError("E_USAGE", `${what} ${path} does not exist`);
  }
  const choice = detectAccel(opts.accel);
  const id = randomBytes(6).toString("hex");
  const ownRunDir = opts.runDir === undefined;
  const runDir = resolve(opts.runDir ?? join(privateDir(), `run-${id}`));
  checkSocketPath(join(runDir, "serial.sock"));
  if (ownRunDir) ensurePrivateDir(runDir);
  else mkdirSync(runDir, { recursive: true, mode: 0o700 });
  const memoryPath =
    opts.memoryBackend === "shared-file" ? createRamFile(`/dev/shm/vmsight-${id}`) : undefined;
  const args = qemuArgs({
    kernel: opts.kernel,
    initrd: opts.initrd,
    append: opts.append ?? "console=ttyS0",
    memory,
    cpus,
    paused: opts.paused ?? false,
    accel: choice.accel,
    cpu: opts.cpu ?? (choice.accel === "kvm" ? "host" : "qemu64"),
    runDir,
    memoryPath,
    memfd: (opts.memoryBackend ?? "memfd") === "memfd",
    qmpOnly: opts.qmpOnly ?? false,
    extraArgs: opts.extraArgs ?? [],
  });
  const files = {
    qmpSocket: join(runDir, "qmp.sock"),
    serialSocket: opts.qmpOnly ? undefined : join(runDir, "serial.sock"),
    serialLog: join(runDir, "serial.log"),
    qemuLog: join(runDir, "qemu.log"),
  };
  const removeFiles = (): void => {
    if (ownRunDir) rmSync(runDir, { recursive: true, force: true });
    else for (const f of Object.values(files)) if (f) rmSync(f, { force: true });
    if (memoryPath) rmSync(memoryPath, { force: true });
  };

  const qemu = opts.qemu ?? process.env.VMSIGHT_QEMU ?? "qemu-system-x86_64";
  const child = spawnQemu(qemu, args, files.qemuLog, opts.detach ?? false);
  const exited = new Promise<number | null>((done) => {
    child.once("exit", (code) => {
      running.delete(child);
      done(code);
    });
    child.once("error", () => {
      running.delete(child);
      done(-1);
    });
  });
  const spawnError = new Promise<Error>((done) => child.once("error", done));
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await killAndWait(child, exited);
      removeFiles();
    })();
    return stopping;
  };

  try {
    // QEMU creates its sockets before the machine, and so before it sizes the RAM file: wait for all.
    const sockets = [files.qmpSocket, ...(files.serialSocket ? [files.serialSocket] : [])];
    const ready = () =>
      sockets.every((s) => existsSync(s)) && (memoryPath === undefined || statSync(memoryPath).size > 0);
    await waitForSockets(ready, exited, spawnError, files.qemuLog, opts.startTimeoutMs ?? 20_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    pid: child.pid!,
    runDir,
    ...files,
    accel: choice.accel,
    accelReason: choice.reason,
    ...(memoryPath ? { memoryPath } : {}),
    args,
    exited,
    stop,
  };
}

function checkSocketPath(path: string): void {
  // sun_path holds 108 bytes including the NUL; QEMU refuses longer paths with a vaguer message.
  if (Buffer.byteLength(path) > 107) {
    throw new VmsightError("E_USAGE", `run directory too deep for a unix socket path: ${path}`, {
      hint: "pick a shorter runDir (unix socket paths are limited to 107 bytes)",
    });
  }
}

/**
 * /dev/shm is shared by every user: the RAM file is made here, new (O_EXCL, never through a
 * planted symlink), 0600, so QEMU opens our empty file and sizes it rather than one someone
 * else prepared and can read.
 */
function createRamFile(path: string): string {
  const flags = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW;
  try {
    closeSync(openSync(path, flags, 0o600));
  } catch (error) {
    throw new VmsightError(
      "E_UNSAFE_DIR",
      `cannot create the guest RAM file ${path}: ${(error as Error).message}`,
      {
        hint: "something already has that name in /dev/shm; run again for a fresh name, and check who made it",
        cause: error,
      },
    );
  }
  return path;
}

function spawnQemu(qemu: string, args: string[], logPath: string, detach: boolean): ChildProcess {
  const log = openSync(logPath, "w");
  try {
    // Our stdio stays ours: QEMU's stdout is discarded and its stderr goes to qemu.log.
    const child = spawn(qemu, args, { stdio: ["ignore", "ignore", log], detached: detach });
    child.unref();
    if (!detach) {
      running.add(child);
      installExitHook();
    }
    return child;
  } finally {
    closeSync(log);
  }
}

async function waitForSockets(
  ready: () => boolean,
  exited: Promise<number | null>,
  spawnError: Promise<Error>,
  qemuLog: string,
  timeoutMs: number,
): Promise<void> {
  let outcome: { kind: "exit"; code: number | null } | { kind: "error"; error: Error } | undefined;
  exited.then((code) => {
    outcome ??= { kind: "exit", code };
  });
  spawnError.then((error) => {
    outcome = { kind: "error", error };
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (outcome?.kind === "error") {
      throw new VmsightError("E_QEMU_START", `cannot run QEMU: ${outcome.error.message}`, {
        hint: "install Debian's qemu-system-x86 or point VMSIGHT_QEMU at qemu-system-x86_64",
        cause: outcome.error,
      });
    }
    if (outcome?.kind === "exit") {
      throw new VmsightError(
        "E_QEMU_START",
        `QEMU exited (code ${outcome.code}) before it was ready:\n${tail(qemuLog)}`,
      );
    }
    if (ready()) return;
    if (Date.now() > deadline) {
      throw new VmsightError(
        "E_QEMU_START",
        `QEMU's sockets did not appear within ${timeoutMs} ms:\n${tail(qemuLog)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

function tail(path: string, lines = 12): string {
  try {
    const text = readFileSync(path, "utf8").trimEnd();
    return text === "" ? "(qemu.log is empty)" : text.split("\n").slice(-lines).join("\n");
  } catch {
    return "(no qemu.log)";
  }
}

async function killAndWait(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill("SIGTERM");
  // The child is unref'd, so a live timer must hold the event loop open until it is gone.
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((r) => {
      timer = setTimeout(() => r(true), 5000);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    child.kill("SIGKILL");
    const keepAlive = setInterval(() => {}, 1000);
    await exited;
    clearInterval(keepAlive);
  }
}
