/**
 * One object per guest, as drgn's Program: `attach()` a live QEMU or `openDump()` an ELF dump,
 * then ask it for the rows the CLI prints. Every listing is a consistent snapshot: a running
 * guest is paused for the few milliseconds it takes and runs on afterwards.
 */
import {
  type KillReport,
  type KillRun,
  killProcess,
  killRecord,
  qmpKillRun,
  runBriefly,
} from "../commands/control.js";
import { type DumpFormat, writeImage } from "../commands/dump-image.js";
import {
  containerRows,
  dmesgRows,
  envRows,
  lsofRows,
  mountRows,
  nsRows,
  socketRows,
} from "../commands/forensics.js";
import { checkRows } from "../commands/integrity.js";
import { type OpenKernelOptions, kernelReport, openKernel, processPageTable } from "../commands/linux.js";
import {
  readGuest,
  registerRows,
  statusReport,
  translateAddress,
  writeGuest,
  writeRegisters,
} from "../commands/machine.js";
import { lsmodRows, mapsRows, pidViewRows, psRows, pstreeLines, threadRows } from "../commands/processes.js";
import { toWire } from "../commands/wire.js";
import { type SignalName, parseSignal } from "../events/kill-signals.js";
import type { KillMethod } from "../events/kill.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { DumpMachine } from "../qemu/dump.js";
import type { Machine } from "../qemu/machine.js";
import { Target } from "../qemu/session.js";
import { parseAddress } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { EventHub, type EventOptions, type EventStream, eventStream } from "./events.js";
import type { Guest } from "./guest.js";
import type {
  Address,
  CheckFindingRow,
  ContainerGroupRow,
  DumpResult,
  EnvVarRow,
  KernelInfoRow,
  KillResult,
  LogLineRow,
  MapRow,
  ModuleRow,
  MountInfoRow,
  NamespaceRow,
  OpenFileRow,
  ProcessRow,
  Registers,
  RunStateRow,
  SocketInfoRow,
  Space,
  StatusRow,
  ThreadInfoRow,
  TranslationRow,
  TreeRow,
} from "./types.js";

/** Where the Linux commands take symbols and types from (as the CLI's --system-map, --offsets, --no-btf). */
export type KernelOptions = OpenKernelOptions;

export interface AttachOptions extends KernelOptions {
  /** The QEMU's QMP unix socket (`-qmp unix:PATH,server=on,wait=off`). */
  readonly qmp: string;
  /** Which path serves guest RAM (default "auto": the fastest one allowed). */
  readonly memory?: "auto" | "process" | "file" | "snapshot";
  /** Progress and fallbacks, one line each (default: silent). */
  readonly log?: (line: string) => void;
}

export interface KillOptions {
  /** How the signal is delivered (default "send": the guest kernel's own group_send_sig_info). */
  readonly method?: KillMethod;
  readonly force?: boolean;
  /** How long to watch for the outcome, ms (default 2000). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  readonly log?: (line: string) => void;
}

export interface VmDumpOptions {
  readonly format?: DumpFormat;
  /** Copy while the guest runs (LiME and raw; QEMU always stops the guest for ELF). */
  readonly live?: boolean;
  /** Called after each chunk: bytes of RAM copied so far and the total. */
  readonly progress?: (done: bigint, total: bigint) => void;
}

export type RegisterValues = Readonly<Record<string, Address>>;

/** A guest address in any form the library takes, as a bigint; E_USAGE for one that is not 64-bit. */
export function address(a: Address, what: string): bigint {
  const v =
    typeof a === "bigint"
      ? a
      : typeof a === "number"
        ? Number.isSafeInteger(a)
          ? BigInt(a)
          : undefined
        : parseAddress(a);
  if (v === undefined || v < 0n || v >= 1n << 64n)
    throw new VmsightError("E_USAGE", `${what} must be a 64-bit address, got ${String(a)}`);
  return v;
}

export class Vm implements Guest {
  private kernelInfo: Promise<KernelInfo> | undefined;
  private kernelFound: KernelInfo | undefined;
  private hub: EventHub | undefined;
  private closed = false;
  /** The snapshot before the next one's turn. */
  private snapshots: Promise<unknown> = Promise.resolve();

  private constructor(
    /** @internal The guest to read: a live Target or a dump. */
    readonly machine: Machine,
    /** @internal The live guest (undefined for a dump). */
    readonly target: Target | undefined,
    private readonly kernelOptions: KernelOptions,
  ) {}

  /** @internal */
  static async attach(opts: AttachOptions): Promise<Vm> {
    const { qmp, memory, log, ...kernel } = opts;
    const target = await Target.attach(qmp, { ...(memory ? { memory } : {}), ...(log ? { log } : {}) });
    return new Vm(target, target, kernel);
  }

  /** @internal */
  static openDump(path: string, opts: KernelOptions = {}): Vm {
    return new Vm(DumpMachine.open(path), undefined, opts);
  }

  /** "live" for a QEMU reached through QMP, "dump" for an ELF memory dump. */
  get kind(): "live" | "dump" {
    return this.target ? "live" : "dump";
  }

  // ---- Linux ---------------------------------------------------------------------------------

  /** @internal The guest kernel, discovered once per Vm (its caches follow the guest's runs). */
  linux(): Promise<KernelInfo> {
    this.open();
    if (!this.kernelInfo) {
      this.kernelInfo = openKernel(this.machine, this.kernelOptions);
      this.kernelInfo.then(
        (k) => {
          this.kernelFound = k;
        },
        () => {
          this.kernelInfo = undefined; // a later call tries again (the guest may have booted by then)
        },
      );
    }
    return this.kernelInfo;
  }

  private listing<R>(rows: (k: KernelInfo) => R): Promise<R> {
    return this.snapshot(async () => rows(await this.linux()));
  }

  /** Version, KASLR slide, randomised bases, paging mode, symbol and type counts. */
  async kernel(): Promise<KernelInfoRow> {
    return toWire(await this.listing(kernelReport));
  }

  ps(): Promise<ProcessRow[]> {
    return this.listing((k) => toWire(psRows(k)));
  }

  /** ps through the PID namespace: finds processes unlinked from the task list. */
  pids(): Promise<ProcessRow[]> {
    return this.listing((k) => toWire(pidViewRows(k)));
  }

  threads(): Promise<ThreadInfoRow[]> {
    return this.listing((k) => toWire(threadRows(k)));
  }

  pstree(): Promise<TreeRow[]> {
    return this.listing((k) => toWire(pstreeLines(k)));
  }

  lsmod(): Promise<ModuleRow[]> {
    return this.listing((k) => toWire(lsmodRows(k)));
  }

  /**
   * Kernel integrity: syscall-table entries outside kernel text, modules and processes hidden
   * from their lists. Findings only: an empty array on a clean guest.
   */
  check(): Promise<CheckFindingRow[]> {
    return this.listing((k) => toWire(checkRows(k)));
  }

  /**
   * Writes a memory image of the guest to `out`: QEMU's ELF (default), LiME or raw (the last two
   * with a `OUT.vmsight.json` sidecar of RAM ranges and registers). The guest is paused while
   * RAM is copied unless `live` (then the image is not one instant). Live guests only.
   */
  dump(out: string, opts: VmDumpOptions = {}): Promise<DumpResult> {
    const target = this.live("dump");
    const copy = async () => toWire(await writeImage(target, opts.format ?? "elf", out, opts));
    return opts.live && opts.format !== "elf" ? copy() : this.snapshot(copy);
  }

  /** A process's memory maps, as its /proc/PID/maps. */
  maps(pid: number): Promise<MapRow[]> {
    return this.listing((k) => toWire(mapsRows(k, pid)));
  }

  /** Open files of one process or all, as /proc/PID/fd and /proc/PID/fdinfo. */
  lsof(pid?: number): Promise<OpenFileRow[]> {
    return this.listing((k) => toWire(lsofRows(k, pid)));
  }

  /** The kernel log from its ring buffer, one row a line, as the guest's dmesg. */
  dmesg(): Promise<LogLineRow[]> {
    return this.listing((k) => toWire(dmesgRows(k)));
  }

  /** The mounts a process (default 1) sees, as its /proc/PID/mountinfo. */
  mounts(pid?: number): Promise<MountInfoRow[]> {
    return this.listing((k) => toWire(mountRows(k, pid)));
  }

  /** The sockets the processes hold open, as /proc/net/{tcp,tcp6,udp,udp6,unix,netlink,packet}. */
  sockets(): Promise<SocketInfoRow[]> {
    return this.listing((k) => toWire(socketRows(k)));
  }

  /** Each process's namespace ids, as its /proc/PID/ns/*, and its cgroup path. */
  ns(): Promise<NamespaceRow[]> {
    return this.listing((k) => toWire(nsRows(k)));
  }

  /** Processes grouped by namespace set and cgroup path, the host's group first. */
  containers(): Promise<ContainerGroupRow[]> {
    return this.listing((k) => toWire(containerRows(k)));
  }

  /** A process's environment, as its /proc/PID/environ. */
  env(pid: number): Promise<EnvVarRow[]> {
    return this.listing((k) => toWire(envRows(k, pid)));
  }

  // ---- memory and registers ------------------------------------------------------------------

  /** The physical-or-virtual request the machine commands take for `space`. */
  private async access(space: Space) {
    if (space === "physical") return { space: "phys" as const };
    if (space === "kernel") return { space: "virt" as const, cpu: 0 };
    if ("pid" in space) {
      return { space: "virt" as const, cpu: 0, cr3: processPageTable(await this.linux(), space.pid) };
    }
    const cpu = space.cpu ?? 0;
    return "cr3" in space
      ? { space: "virt" as const, cpu, cr3: address(space.cr3, "cr3") }
      : { space: "virt" as const, cpu };
  }

  /** `length` bytes at `addr` in `space` (default: kernel virtual). */
  read(addr: Address, length: number, space: Space = "kernel"): Promise<Buffer> {
    return this.snapshot(async () =>
      readGuest(this.machine, { ...(await this.access(space)), addr: address(addr, "addr"), length }),
    );
  }

  /** Writes `bytes` at `addr` in `space` (default: kernel virtual). Live guests only. */
  write(addr: Address, bytes: Uint8Array, space: Space = "kernel"): Promise<void> {
    this.live("write");
    return this.snapshot(async () =>
      writeGuest(this.machine, { ...(await this.access(space)), addr: address(addr, "addr"), data: bytes }),
    );
  }

  /** The page walk of `vaddr`: physical address, page size and rights (as `vmsight translate`). */
  translate(vaddr: Address, space: Exclude<Space, "physical"> = "kernel"): Promise<TranslationRow> {
    return this.snapshot(async () => {
      const { space: _, ...opts } = await this.access(space);
      return toWire(await translateAddress(this.machine, address(vaddr, "vaddr"), opts));
    });
  }

  /** All registers of one vCPU (default 0), as `vmsight regs --json`. */
  regs(cpu = 0): Promise<Registers> {
    return this.snapshot(async () => {
      const rows = await registerRows(this.machine, cpu);
      return toWire(Object.fromEntries(rows.map((r) => [r.name, r.value]))) as Registers;
    });
  }

  /** Sets some registers of one vCPU (names as regs() returns them). Live guests only. */
  setRegs(cpu: number, values: RegisterValues): Promise<void> {
    const target = this.live("setRegs");
    const map = new Map(Object.entries(values).map(([n, v]) => [n, address(v, n)]));
    return this.snapshot(() => writeRegisters(target, cpu, map));
  }

  // ---- run control ---------------------------------------------------------------------------

  async pause(): Promise<RunStateRow> {
    const target = this.live("pause");
    await target.pause();
    return target.runState();
  }

  async resume(): Promise<RunStateRow> {
    const target = this.live("resume");
    await target.resume();
    return target.runState();
  }

  /** Run state, QEMU pid, RAM layout and the path that serves reads. */
  async status(): Promise<StatusRow> {
    return toWire(await statusReport(this.live("status")));
  }

  // ---- control and events --------------------------------------------------------------------

  /** Signals a guest process from outside and reports what became of it (as `vmsight kill --json`). */
  async kill(pid: number, signal: SignalName | string = "KILL", opts: KillOptions = {}): Promise<KillResult> {
    return toWire(killRecord(await this.killReport(pid, signal, opts)));
  }

  /** @internal kill() before its encoding. */
  killReport(pid: number, signal: SignalName | string, opts: KillOptions): Promise<KillReport> {
    const target = this.live("kill");
    return killProcess(
      target,
      {
        pid,
        signal: parseSignal(signal),
        method: opts.method ?? "send",
        ...(opts.force === undefined ? {} : { force: opts.force }),
        ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
        ...(opts.signal ? { abort: opts.signal } : {}),
        ...(opts.log ? { log: opts.log } : {}),
      },
      this.killRun(target),
    );
  }

  /**
   * While event streams run, their pump drives the guest: a kill takes turns with it (the
   * injected call between two of its stops, each look as a snapshot), so the streams go on.
   */
  private killRun(target: Target): KillRun {
    const hub = this.hub;
    if (!hub?.engaged) return qmpKillRun(target);
    return {
      kernel: () => this.linux(),
      deliver: (fn) => hub.drive(fn),
      runBriefly: (traps) => runBriefly(traps),
      look: (fn) => this.snapshot(async () => fn()),
      finish: async () => {},
    };
  }

  /**
   * The events `vmsight trace` prints, as they happen. Breaking out of the loop (or the signal
   * aborting) removes this stream's traps; streams running at once share identical traps.
   */
  events(opts: EventOptions): EventStream {
    const target = this.live("events");
    this.hub ??= new EventHub(
      target,
      () => this.linux(),
      (fn) => this.inTurn(fn),
    );
    return eventStream(this.hub, opts);
  }

  // ---- lifetime ------------------------------------------------------------------------------

  /** Ends every event stream, puts the guest's run state back, and lets go of it. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.hub?.close();
    } finally {
      await this.machine.close();
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  private open(): void {
    if (this.closed) throw new VmsightError("E_CLOSED", "this vm is closed");
  }

  private live(what: string): Target {
    this.open();
    if (!this.target) {
      throw new VmsightError("E_NOT_LIVE", `${what} needs a live guest, not a dump`, {
        hint: "attach() to the QEMU's QMP socket instead of openDump()",
      });
    }
    return this.target;
  }

  /**
   * Runs `fn` with a live guest paused (and running again afterwards if it ran before). One at a
   * time: two callers at once (a server's clients) would each stop and cont, and one would read
   * a guest the other had let run.
   */
  private snapshot<T>(fn: () => Promise<T>): Promise<T> {
    this.open();
    return this.inTurn(() => this.paused(fn));
  }

  /** Runs `fn` after the snapshots (and event streams' starts and ends) before it. */
  private inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const turn = this.snapshots.then(fn);
    this.snapshots = turn.catch(() => {});
    return turn;
  }

  private async paused<T>(fn: () => Promise<T>): Promise<T> {
    const target = this.target;
    if (!target) return fn();
    // While event streams run, their pump drives the guest: the trap core stops it for us.
    if (this.hub?.driving) return this.hub.whenStopped(fn);
    const before = await target.runState();
    if (before.running) {
      await target.qmp.execute("stop");
      markStep("pause");
      // The guest ran since the last look: cached pages and translations may be stale (QEMU's
      // RESUME event says so too, but it need not have arrived yet).
      target.memory.invalidate();
      this.kernelFound?.kernel.invalidate();
    }
    try {
      return await fn();
    } finally {
      if (before.running) await target.qmp.execute("cont");
    }
  }
}

/**
 * Attaches to a running QEMU through its QMP socket (a path, or options with `qmp`). Nothing
 * else is needed: symbols and types are found in guest memory.
 */
export async function attach(
  qmp: string | AttachOptions,
  opts: Omit<AttachOptions, "qmp"> = {},
): Promise<Vm> {
  return Vm.attach(typeof qmp === "string" ? { ...opts, qmp } : qmp);
}

/** Opens a QEMU ELF memory dump (`dump-guest-memory`) for the reading methods. */
export async function openDump(path: string, opts: KernelOptions = {}): Promise<Vm> {
  return Vm.openDump(path, opts);
}
