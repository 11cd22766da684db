import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { openElfCore } from "../memory/elf-core.js";
import type { FdPhysicalMemory } from "../memory/fd-memory.js";
import { CachedPhysicalMemory } from "../memory/page-cache.js";
import { type RamLayout, discoverRamLayout, flatMemoryMap, openGuestMemory } from "../memory/qemu/layout.js";
import type { PhysicalMemory } from "../memory/types.js";
import { GdbClient } from "../transport/gdb/client.js";
import { QmpClient } from "../transport/qmp/client.js";
import { VmsightError } from "../util/errors.js";
import { privateDir } from "../util/private-dir.js";
import { type ControlRegisters, controlRegistersOf, parseControlRegisters } from "./hmp-registers.js";
import type { Machine } from "./machine.js";
import { findQemuPid, gdbSocketPath } from "./qemu-process.js";
import { TrapCore } from "./traps.js";

export interface AttachOptions {
  /**
   * Which path serves guest RAM: the shared backing file, the QEMU process, the best of the two
   * ("auto"), or a read-only snapshot QEMU dumps to a file ("snapshot"). "auto" falls back to a
   * snapshot when the QEMU process's memory may not be opened (no ptrace rights).
   */
  readonly memory?: "auto" | "process" | "file" | "snapshot";
  readonly timeoutMs?: number;
  readonly log?: (line: string) => void;
}

/**
 * How a live target's RAM is read, for status: memory copies from the mapped shared RAM file,
 * pread of the QEMU process's memory (or of an unmapped shared file), or a snapshot QEMU dumped.
 */
export type MemoryAccess = "mapped" | "process memory" | "file" | "snapshot";

function accessOf(memory: FdPhysicalMemory): MemoryAccess {
  if (memory.mapped) return "mapped";
  return memory.ranges().some((r) => "pid" in r && r.pid !== undefined) ? "process memory" : "file";
}

/** Guest RAM through the fastest path allowed, else a snapshot QEMU writes for us. */
async function openMemory(
  qmp: QmpClient,
  layout: RamLayout,
  prefer: NonNullable<AttachOptions["memory"]>,
  log: (line: string) => void,
): Promise<{ memory: PhysicalMemory; access: MemoryAccess }> {
  const snapshot = async () => ({
    memory: await snapshotMemory(qmp, layout.pid),
    access: "snapshot" as const,
  });
  if (prefer === "snapshot") return snapshot();
  try {
    const memory = openGuestMemory(layout, prefer);
    return { memory, access: accessOf(memory) };
  } catch (error) {
    if (prefer !== "auto" || !(error instanceof VmsightError) || error.code !== "E_MEMORY_ACCESS")
      throw error;
    log(`${error.message}: reading a snapshot of guest RAM instead (read-only, frozen at attach)`);
    return snapshot();
  }
}

/**
 * The slow universal path: QEMU dumps guest RAM to an ELF file (about 1.4 s per 512 MiB) that
 * we read, then unlink while keeping it open. Reads are of the moment of the dump; writes fail.
 * QEMU opens the name it is given and follows symlinks: the file goes in our private directory.
 */
async function snapshotMemory(qmp: QmpClient, pid: number): Promise<PhysicalMemory> {
  const path = join(privateDir(), `snapshot-${pid}-${Date.now()}.elf`);
  await qmp.execute("dump-guest-memory", { paging: false, protocol: `file:${path}` }, { timeoutMs: 600_000 });
  try {
    return openElfCore(path).memory;
  } finally {
    rmSync(path, { force: true });
  }
}

const PF_EXITING = 0x4;

export type RunState = { readonly status: string; readonly running: boolean };

/**
 * A live QEMU guest reached through its QMP socket: guest RAM (read directly from the QEMU
 * process or its RAM file), run control, and — on first use — the gdbstub for registers and
 * traps. Connecting a gdb client stops the VM; `close()` puts the run state back as it was
 * unless a caller changed it on purpose with pause()/resume().
 */
export class Target implements Machine {
  private gdbClient: GdbClient | undefined;
  private gdbConnecting: Promise<GdbClient> | undefined;
  private trapCore: TrapCore | undefined;
  private stateBeforeGdb: RunState | undefined;
  private runStateChosen = false;
  private closing = false;
  private readonly runListeners = new Set<() => void>();

  private constructor(
    readonly qmp: QmpClient,
    readonly pid: number,
    readonly vcpuThreads: readonly number[],
    readonly layout: RamLayout,
    readonly memory: CachedPhysicalMemory,
    readonly memoryAccess: MemoryAccess,
    private readonly log: (line: string) => void,
  ) {
    this.onRun(() => memory.invalidate());
    qmp.onEvent((e) => {
      if (e.event === "RESUME") this.ran();
    });
  }

  static async attach(qmpPath: string, opts: AttachOptions = {}): Promise<Target> {
    const log = opts.log ?? (() => {});
    const qmp = await QmpClient.connect(
      qmpPath,
      opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs },
    );
    try {
      // Asked together: each round trip waits for QEMU's main loop, a few ms under TCG.
      const [{ pid, vcpuThreads }, flatText] = await Promise.all([findQemuPid(qmp), flatMemoryMap(qmp)]);
      const layout = await discoverRamLayout(qmp, pid, flatText);
      const opened = await openMemory(qmp, layout, opts.memory ?? "auto", log);
      const memory = new CachedPhysicalMemory(opened.memory);
      log(`QEMU pid ${pid}, ${vcpuThreads.length} vCPU(s), guest RAM via ${memory.description}`);
      return new Target(qmp, pid, vcpuThreads, layout, memory, opened.access, log);
    } catch (error) {
      qmp.close();
      throw error;
    }
  }

  /** Called whenever the guest starts running again: caches of guest state are stale from then on. */
  onRun(listener: () => void): () => void {
    this.runListeners.add(listener);
    return () => this.runListeners.delete(listener);
  }

  /** Called when the machine resets (the guest rebooted, or someone sent `system_reset`). */
  onReset(listener: () => void): () => void {
    return this.qmp.onEvent((e) => {
      if (e.event === "RESET") listener();
    });
  }

  /** Tells every cache of guest state that the guest may have run. */
  private ran(): void {
    for (const l of this.runListeners) l();
  }

  async runState(): Promise<RunState> {
    const s = await this.qmp.execute<{ status: string; running: boolean }>("query-status");
    return { status: s.status, running: s.running };
  }

  async pause(): Promise<void> {
    this.runStateChosen = true;
    if ((await this.runState()).running) await this.qmp.execute("stop");
    this.ran();
  }

  async resume(): Promise<void> {
    this.runStateChosen = true;
    const state = await this.runState();
    if (!state.running) await this.qmp.execute("cont");
    this.ran();
  }

  /** The gdbstub client, started (or reused from an earlier vmsight run) on first use. */
  gdb(): Promise<GdbClient> {
    if (this.gdbClient) return Promise.resolve(this.gdbClient);
    // QEMU takes one gdb client: callers that come while it connects share the connection.
    this.gdbConnecting ??= this.connectGdb().finally(() => {
      this.gdbConnecting = undefined;
    });
    return this.gdbConnecting;
  }

  private async connectGdb(): Promise<GdbClient> {
    this.stateBeforeGdb = await this.runState();
    const path = gdbSocketPath(this.pid);
    if (!existsSync(path)) {
      const reply = await this.qmp.hmp(`gdbserver unix:${path},server=on,wait=off`);
      if (!existsSync(path)) {
        throw new VmsightError("E_GDBSTUB", `QEMU could not start its gdbstub: ${reply.trim()}`);
      }
      this.log(`started QEMU's gdbstub on ${path}`);
    }
    const client = await GdbClient.connect({ path });
    client.onRun(() => this.ran());
    // QEMU's gdbstub answers `?` by removing every breakpoint and watchpoint ("gdb is doing an
    // initial connect"): traps a vmsight that died left behind are gone before we start.
    await client.stopReason();
    this.gdbClient = client;
    return client;
  }

  /** The trap core on this guest's gdbstub: every breakpoint, watchpoint, step and continue. */
  async traps(): Promise<TrapCore> {
    const gdb = await this.gdb();
    this.trapCore ??= new TrapCore(gdb);
    return this.trapCore;
  }

  /** Breakpoints and watchpoints inserted at the stub now (0 before the gdbstub is used). */
  armedTraps(): number {
    return this.trapCore?.traps().length ?? 0;
  }

  vcpuCount(): number {
    return this.vcpuThreads.length;
  }

  /**
   * CR0, CR3, CR4 and EFER of one vCPU, through QMP (HMP `info registers`) when its text has
   * them, else through the gdbstub.
   */
  async controlRegisters(cpu = 0): Promise<ControlRegisters> {
    if (cpu >= 0 && cpu < this.vcpuThreads.length) {
      const found = parseControlRegisters(await this.qmp.hmp("info registers", { cpuIndex: cpu }));
      if (found) return found;
    }
    return controlRegistersOf(await this.registers(cpu));
  }

  /** All registers of one vCPU, keyed by the target description's lower-case names. */
  async registers(cpu = 0): Promise<Map<string, bigint>> {
    const gdb = await this.gdb();
    const threads = await gdb.threads();
    const thread = threads[cpu];
    if (thread === undefined) {
      throw new VmsightError("E_CPU", `no vCPU ${cpu}: the guest has ${threads.length}`, {
        hint: `use --cpu 0..${threads.length - 1}`,
      });
    }
    await gdb.selectThread("g", thread);
    return gdb.readRegisters();
  }

  /**
   * Whether QEMU went away under us: its QMP connection ended without our close(), or (before
   * the socket's close has been seen) its process is gone or a zombie.
   */
  qemuExited(): boolean {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, "latin1");
      const [state, , , , , , flags] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // A killed process frees its memory before it closes its sockets: PF_EXITING tells first.
      if (state === "Z" || state === "X" || (Number(flags) & PF_EXITING) !== 0) return true;
    } catch {
      return true;
    }
    return this.qmp.closed && !this.closing;
  }

  /** `error` as the user should see it: whatever broke because QEMU exited says that instead. */
  explain(error: unknown): unknown {
    if (!this.qemuExited()) return error;
    return new VmsightError("E_QEMU_EXITED", `QEMU (pid ${this.pid}) exited while vmsight was using it`, {
      hint: "the guest is gone (QEMU was killed, crashed or quit); start it again",
      cause: error,
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    const before = this.stateBeforeGdb;
    if (this.gdbClient) {
      this.gdbClient.close();
      this.gdbClient = undefined;
      this.trapCore = undefined;
    }
    try {
      if (this.qmp.closed) return; // QEMU is gone: there is no run state to put back
      if (before?.running && !this.runStateChosen && !(await this.runState()).running) {
        await this.qmp.execute("cont");
      }
    } finally {
      this.memory.close();
      this.qmp.close();
    }
  }
}
