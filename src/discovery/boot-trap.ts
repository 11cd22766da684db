import { formatFromControlRegisters, rootFromRegisters } from "../arch/x86/formats.js";
import { GENERAL_REGISTERS } from "../arch/x86/registers.js";
import { skippableAt } from "../arch/x86/skippable.js";
import { currentTaskOffset } from "../os/linux/current.js";
import type { Target } from "../qemu/session.js";
import type { RawTrap, TrapClient, TrapCore } from "../qemu/traps.js";
import type { BreakpointType } from "../transport/gdb/client.js";
import type { StopReply } from "../transport/gdb/stop-reply.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { MemberStatus } from "./candidates.js";
import { OffsetDiscovery } from "./constraints.js";
import { GuestRun } from "./guest-run.js";
import { guestView } from "./guest-view.js";
import type { KernelImage } from "./kernel-image.js";
import { readRelocatedKernel, waitForRelocatedKallsyms } from "./kernel-in-ram.js";
import type { MemberGroup } from "./members.js";
import { residentRam } from "./resident.js";
import { pollSlide } from "./slide-poll.js";
import type { EventKind, GuestView, KernelFacts } from "./types.js";

/**
 * Steps 2, 4 and 5 of CN109857520 on QEMU: trap kernel events from the first instruction of
 * boot, feed each to the candidate filter, and remove every trap once all offsets are known.
 *
 * Mechanism. The patent patches the entry of do_fork/release_task/do_one_initcall with a
 * trapping instruction. Through QEMU's gdbstub the equivalent is a breakpoint, and under TCG
 * every breakpoint stop throws away all translated code (~100 ms a hit: a boot has ~200
 * forks). So the events are trapped where the kernel *writes* data instead, with write
 * watchpoints (Z2), which cost ~0.2 ms a hit and need no stepping over:
 *   - `total_forks`: incremented by copy_process() (and by nothing else) once the child is
 *     linked into the tasks list and the pid hash, still under tasklist_lock: one stop per
 *     process or thread creation, with the child complete and listed.
 *     The patent also traps release_task() to keep its count of processes right. Here the count
 *     is the kernel's own (`process_counts`, read at each stop) and the whole tasks list is
 *     read at each stop, so releases teach nothing new: not trapping them saves a third of the
 *     stops of a boot (`nr_threads`, written on both, was measured at ~1.2x the boot time of
 *     this plan).
 *   - the `modules` list head: written by add_unformed_module() when a module joins the list
 *     (the patent traps do_one_initcall, which also runs for every built-in initcall and does
 *     not receive the module; the list head fires only for modules, and the module is its
 *     `next`; what needs the loaded module - executable text, LIVE state - is checked at later
 *     events, once its loader has exited).
 * Under KVM breakpoints are cheap but hardware watchpoints are limited to 4 debug registers;
 * this plan needs 2, so the same plan serves both accelerators.
 *
 * KASLR: the watchpoint addresses move with the slide, which is known only once the
 * decompressor has relocated the kernel. Guest RAM is polled meanwhile (slide.ts); the
 * relocation is seen well before the first fork, so no creation is missed - which the report
 * shows by comparing creations seen with the kernel's own `total_forks`.
 */
export interface BootDiscoveryOptions {
  /**
   * The kernel the guest boots, from a file. Without it the kernel is read from guest RAM once
   * the decompressor has relocated it (kernel-in-ram.ts).
   */
  readonly image?: KernelImage;
  /** Progress lines. */
  readonly log?: (line: string) => void;
  /** Give up (remove the traps, report what did not converge) after this long (default 300 s). */
  readonly timeoutMs?: number;
  /**
   * Once the process members (task_struct, mm_struct, cred) are known, end after the guest has
   * gone this long without an event (default 20 s): module loads have stopped, and the module
   * members that have not converged by then will not. Each such lull is also looked at once
   * (a "quiet" observation), which is when a module loaded last shows its executable text.
   */
  readonly quietMs?: number;
  /** How long to wait for the relocated kernel in RAM (default 120 s). */
  readonly slideTimeoutMs?: number;
  /** The slide, when known in advance (e.g. 0 for a guest booted with `nokaslr`). */
  readonly slide?: bigint;
  readonly groups?: readonly MemberGroup[];
}

export interface TrapRecord {
  readonly what: string;
  readonly type: BreakpointType;
  readonly address: bigint;
  readonly length: number;
  hits: number;
}

export interface BootDiscoveryResult {
  readonly converged: boolean;
  /**
   * Not every member converged, but the process members did before the guest went quiet: the
   * profile holds them, and `ps --offsets` works with it.
   */
  readonly partial: boolean;
  /** Why discovery ended when it did not converge (quiet guest, timeout, guest ended). */
  readonly stopReason: string | undefined;
  readonly profile: Record<string, number>;
  readonly members: MemberStatus[];
  readonly failures: readonly string[];
  readonly slide: bigint;
  /** Wall time from the first `continue` until the slide was known. */
  readonly slideFoundMs: number;
  readonly events: { total: number; creates: number; releases: number; modules: number; quiet: number };
  /** Wall time from the first `continue` to convergence (or giving up). */
  readonly elapsedMs: number;
  /** Time the guest spent stopped in our event handlers. */
  readonly stoppedMs: number;
  readonly traps: {
    readonly removed: readonly TrapRecord[];
    /** Traps still in our bookkeeping after removal: must be 0. */
    readonly remaining: number;
    /** Removing each trap a second time was refused by the stub: it no longer had them. */
    readonly verified: boolean;
    /** Stops that were no event (e.g. early boot clearing .bss under a watchpoint). */
    readonly spuriousStops: number;
  };
  /** Evidence that no process creation was missed. */
  readonly forks: {
    /** `total_forks` at the first creation event: 0 if we were there from the first fork. */
    readonly firstTotalForks: number | undefined;
    readonly createsSeen: number;
    /** `total_forks` after the last creation event handled. */
    readonly totalForks: number | undefined;
    /** pid of the newest process at convergence. */
    readonly highestPid: number;
  };
}

/** Kernel-stack words scanned for the new child (copy_process may have spilled it). */
const STACK_WORDS = 64;
const CR0_PG = 1n << 31n;
const QUIET_MS = 20_000;

/** Runs discovery on a guest that has not started yet (QEMU -S). */
export async function discoverAtBoot(
  target: Target,
  opts: BootDiscoveryOptions,
): Promise<BootDiscoveryResult> {
  const log = opts.log ?? (() => {});
  const regs0 = await target.registers(0);
  if (((regs0.get("cr0") ?? 0n) & CR0_PG) !== 0n) {
    throw new VmsightError(
      "E_ALREADY_BOOTED",
      "the guest is already running a kernel: discovery must see it boot",
      {
        hint: "start QEMU paused (-S) and run `vmsight --qmp SOCKET discover` before `cont`, or use `vmsight discover --kernel …`",
      },
    );
  }
  const core = await target.traps();
  const t0 = performance.now();
  const waitMs = opts.slideTimeoutMs ?? 120_000;
  let kernel: Kernel;
  let slide: bigint;
  if (opts.image) {
    const pending = core.resume();
    kernel = opts.image;
    slide = opts.slide ?? (await pollSlide(target, opts.image, log, waitMs, pending));
    core.interrupt();
    await pending;
  } else {
    const ram = residentRam(target);
    const run = new GuestRun(core);
    const copy = await waitForRelocatedKallsyms(ram, {
      log,
      timeoutMs: waitMs,
      run,
      ...(opts.slide === undefined ? {} : { slide: opts.slide }),
    });
    // Stopped before anything heavy: the first fork must not run while the tables are decoded.
    await run.stop();
    log(`relocated kallsyms at guest-physical ${hex(copy.tokenTable)}; guest stopped to read them`);
    kernel = readRelocatedKernel(ram, copy, log);
    slide = copy.slide;
  }
  const slideFoundMs = performance.now() - t0;
  log(
    `KASLR slide ${hex(slide)} found ${(slideFoundMs / 1000).toFixed(2)} s after boot started (kernel from ${opts.image ? "the image file" : "guest RAM"})`,
  );
  const loop = new TrapLoop(target, core, { ...opts, image: kernel }, slide, log);
  await loop.arm();
  return loop.run(t0, slideFoundMs);
}

/** What the traps need of the kernel: its symbols at link-time addresses and its image bytes. */
type Kernel = Pick<KernelImage, "symbols" | "image" | "base">;

interface Addresses {
  readonly nrThreads: bigint;
  readonly totalForks: bigint;
  readonly modules: bigint;
  readonly initTask: bigint;
  readonly initMm: bigint;
  readonly perCpuOffset: bigint;
  readonly nrCpuIds: bigint | undefined;
  /** Per-CPU offsets (not slid). */
  readonly processCounts: bigint | undefined;
  readonly current: bigint;
  readonly taskSize: bigint | undefined;
  readonly pageOffsetBase: bigint | undefined;
  /** Called by __exit_signal() with &tsk->pending: the one trap that can place `pending`. */
  readonly flushSigqueue: bigint | undefined;
  readonly fentry: bigint | undefined;
  readonly initCred: bigint | undefined;
  readonly workerThread: bigint | undefined;
  readonly rescuerThread: bigint | undefined;
}

function addresses(k: Kernel, slide: bigint): Addresses {
  const s = k.symbols;
  const at = (n: string) => {
    const a = s.findAddress(n);
    return a === undefined ? undefined : a + slide;
  };
  const need = (n: string) => {
    const a = at(n);
    if (a === undefined)
      throw new VmsightError(
        "E_SYMBOL_UNKNOWN",
        `boot discovery needs the kernel symbol ${n}, which this image lacks`,
      );
    return a;
  };
  const current = currentTaskOffset(s);
  return {
    nrThreads: need("nr_threads"),
    totalForks: need("total_forks"),
    modules: need("modules"),
    initTask: need("init_task"),
    initMm: need("init_mm"),
    perCpuOffset: need("__per_cpu_offset"),
    nrCpuIds: at("nr_cpu_ids"),
    processCounts: s.findAddress("process_counts"),
    current,
    taskSize: at("arch_task_struct_size"),
    pageOffsetBase: at("page_offset_base"),
    flushSigqueue: at("flush_sigqueue"),
    fentry: at("__fentry__"),
    initCred: at("init_cred"),
    workerThread: at("worker_thread"),
    rescuerThread: at("rescuer_thread"),
  };
}

const raw = (t: TrapRecord): RawTrap => ({ type: t.type, addr: t.address, kind: t.length });

class TrapLoop {
  private readonly traps: TrapRecord[] = [];
  /** Our share of the trap core. */
  private readonly held: TrapClient;
  private readonly a: Addresses;
  private disc: OffsetDiscovery | undefined;
  private firstTotalForks: number | undefined;
  private lastTotalForks: number | undefined;
  private stoppedMs = 0;
  private lastForks = 0n;
  /** Stops that were not events (a trapped variable written without a creation). */
  private spurious = 0;
  private events = 0;
  private lastProgress = 0;
  /** Our own interrupts in flight: which timer sent one. */
  private timedOut = false;
  private quietFired = false;
  private quietStops = 0;
  private processReported = false;
  /** Where RAM is linearly mapped, once page_offset_base has been read. */
  private directMap: { base: bigint; size: bigint } | undefined;
  /** The flush_sigqueue breakpoint while it is armed. */
  private releaseTrap: { address: bigint } | undefined;
  /** Where that breakpoint goes, until it is armed. */
  private releasePlan: { address: bigint; type: BreakpointType } | undefined;
  /** Traps taken out before convergence (their job done). */
  private readonly removedEarly: TrapRecord[] = [];

  constructor(
    private readonly target: Target,
    private readonly core: TrapCore,
    private readonly opts: Omit<BootDiscoveryOptions, "image"> & { readonly image: Kernel },
    private readonly slide: bigint,
    private readonly log: (line: string) => void,
  ) {
    this.a = addresses(opts.image, slide);
    this.held = core.client("discovery");
  }

  async arm(): Promise<void> {
    // The plan is chosen for TCG (watchpoints: no translated-code flush per stop) and also fits
    // KVM (2 of the 4 hardware debug registers); say which one this guest runs on.
    const kvm = await this.target.qmp.execute<{ enabled: boolean }>("query-kvm").catch(() => undefined);
    this.log(
      kvm?.enabled
        ? "KVM: 2 write watchpoints in hardware debug registers (of 4)"
        : "TCG: write watchpoints (a breakpoint stop would flush all translated code)",
    );
    await this.insert("total_forks (process and thread creation)", this.a.totalForks, 8);
    await this.insert("modules list head (module load)", this.a.modules, 8);
    this.planRelease(kvm?.enabled === true);
    this.log(
      `traps: ${this.traps.map((t) => `${t.type >= 2 ? "watch" : "break"} ${t.what} at ${hex(t.address)}`).join("; ")}`,
    );
  }

  private async insert(
    what: string,
    address: bigint,
    length: number,
    type: BreakpointType = 2,
  ): Promise<void> {
    await this.held.insert({ type, addr: address, kind: length });
    this.traps.push({ what, type, address, length, hits: 0 });
  }

  /**
   * A breakpoint on flush_sigqueue(), stepped over by moving RIP past its first instruction (a
   * NOP, ENDBR or `call __fentry__`: no single-step, no removal). It is the only breakpoint:
   * under TCG each stop at one re-translates the guest's code, so it is removed as soon as
   * `pending` is placed (the first released process does it). Under KVM it takes a third
   * debug register (Z1). Skipped, and `pending` left unplaced, when the symbol is missing or
   * its first instruction cannot be stepped over that way.
   */
  private planRelease(kvm: boolean): void {
    const at = this.a.flushSigqueue;
    if (at === undefined) return;
    const k = this.opts.image;
    const from = Number(at - this.slide - k.base);
    const text = from >= 0 ? k.image.subarray(from, from + 16) : new Uint8Array();
    if (skippableAt(text, at, this.onlyReturn()) === undefined) {
      this.log("flush_sigqueue does not start with a NOP: task_struct.pending will not be placed");
      return;
    }
    this.releasePlan = { address: at, type: kvm ? 1 : 0 };
  }

  /**
   * Arms the flush_sigqueue breakpoint once `tasks` is placed: a release before that could not
   * be checked (kernel threads exit early in boot), and every stop at a breakpoint costs.
   */
  private async armReleaseWhenUseful(disc: OffsetDiscovery): Promise<void> {
    const plan = this.releasePlan;
    if (!plan || disc.cands.one("task_struct.tasks") === undefined) return;
    this.releasePlan = undefined;
    await this.insert("flush_sigqueue (task release: &tsk->pending)", plan.address, 1, plan.type);
    this.releaseTrap = { address: plan.address };
    this.log(`break flush_sigqueue at ${hex(plan.address)} (task release: &tsk->pending)`);
  }

  /** `call __fentry__` is passed over like a NOP (see skippableAt). */
  private onlyReturn(): bigint[] {
    return this.a.fentry === undefined ? [] : [this.a.fentry];
  }

  /** A stop at the flush_sigqueue breakpoint: feed its argument to the filter and step past it. */
  private async onRelease(stop: StopReply & { type: "signal" }): Promise<boolean> {
    const trap = this.releaseTrap;
    if (!trap || stop.watch) return false;
    const regs = await this.registersAt(stop);
    if (regs.get("rip") !== trap.address) return false;
    const h0 = performance.now();
    const seen = this.viewOf(regs);
    const disc = this.disc;
    if (seen && disc) {
      disc.sigqueueFlushed(this.events, regs.get("rdi") ?? 0n, seen.view);
      this.events++;
    }
    // The text as it is now: ftrace may have turned `call __fentry__` into a NOP, or (tracing
    // this function) into a call we cannot pass over, and then the breakpoint has to go.
    const bytes = seen?.view.read(trap.address, 16);
    const skip = bytes ? skippableAt(bytes, trap.address, this.onlyReturn()) : undefined;
    if (skip !== undefined) await this.core.cpu.writeRegister("rip", trap.address + BigInt(skip));
    const record = this.traps.find((t) => t.address === trap.address && t.type <= 1);
    if (record) record.hits++;
    if (record && (skip === undefined || disc?.cands.one("task_struct.pending") !== undefined)) {
      await this.held.remove(raw(record));
      this.traps.splice(this.traps.indexOf(record), 1);
      this.removedEarly.push(record);
      this.releaseTrap = undefined;
      this.log(
        skip === undefined
          ? "flush_sigqueue no longer starts with a NOP (traced?): its breakpoint is removed, task_struct.pending left unplaced"
          : `task_struct.pending placed at a release; flush_sigqueue breakpoint removed after ${record.hits} hit(s)`,
      );
    }
    this.stoppedMs += performance.now() - h0;
    return true;
  }

  /** The registers of the vCPU that stopped (selected first when there are several). */
  private async registersAt(stop: StopReply & { type: "signal" }): Promise<Map<string, bigint>> {
    if (stop.thread && this.target.vcpuCount() > 1) await this.core.cpu.selectThread("g", stop.thread);
    return this.core.cpu.readRegisters();
  }

  /** The kernel as the stopped CPU sees it (and its page-table root), or undefined before paging. */
  private viewOf(regs: Map<string, bigint>): { view: GuestView; root: bigint } | undefined {
    const get = (n: string) => regs.get(n) ?? 0n;
    const format = formatFromControlRegisters({ cr0: get("cr0"), cr4: get("cr4"), efer: get("efer") });
    // A stop outside 64-bit paging (none is expected: the traps are on kernel data) shows nothing.
    if (!format || format.vaBits < 48) return undefined;
    const root = rootFromRegisters({ cr3: get("cr3"), cr4: get("cr4") }, format, true);
    return { view: guestView(this.target.memory, format, root, this.directMap), root };
  }

  async run(t0: number, slideFoundMs: number): Promise<BootDiscoveryResult> {
    const timeout = setTimeout(() => {
      this.timedOut = true;
      this.core.interrupt();
    }, this.opts.timeoutMs ?? 300_000);
    const quietMs = this.opts.quietMs ?? QUIET_MS;
    let quiet: ReturnType<typeof setTimeout> | undefined;
    let why = "";
    let partial = false;
    let failure: unknown;
    try {
      for (;;) {
        quiet = setTimeout(() => {
          this.quietFired = true;
          this.core.interrupt();
        }, quietMs);
        const { reply: stop } = await this.core.resume();
        clearTimeout(quiet);
        if (stop.type === "signal" && (await this.onRelease(stop))) {
          if (this.disc?.converged()) break;
          continue;
        }
        if (stop.type !== "signal") {
          why = `guest ended (${stop.type})`;
          break;
        }
        if (!stop.watch) {
          if (this.timedOut) {
            why = "timed out before every member converged";
            break;
          }
          // A late interrupt can find the guest stopped for an event already: it is no lull.
          if (!this.quietFired) continue;
          this.quietFired = false;
          const h0 = performance.now();
          await this.onQuiet(stop);
          this.stoppedMs += performance.now() - h0;
          if (this.disc?.converged()) break;
          if (this.disc?.processConverged()) {
            why = `no event for ${quietMs / 1000} s once the process members were known (module loads have stopped)`;
            partial = true;
            break;
          }
          continue;
        }
        this.quietFired = false;
        const h0 = performance.now();
        await this.onEvent(stop);
        this.stoppedMs += performance.now() - h0;
        if (this.disc?.converged()) break;
      }
    } catch (error) {
      failure = error;
    } finally {
      clearTimeout(timeout);
      clearTimeout(quiet);
    }
    if (failure !== undefined) {
      // Whatever went wrong, the guest must not be left trapped.
      await this.removeAll().catch(() => {});
      await this.target.resume().catch(() => {});
      throw failure;
    }
    const elapsedMs = performance.now() - t0;
    const removed = [...this.removedEarly, ...(await this.removeAll())];
    const verified = await this.verifyRemoved(removed);
    // Resume with QMP: the stub stays enabled but holds no trap of ours.
    await this.target.resume();
    const disc = this.disc;
    const converged = disc?.converged() === true;
    if (!converged) this.log(`stopped: ${why || "not converged"}`);
    return {
      converged,
      partial: !converged && partial,
      stopReason: converged ? undefined : why || "not converged",
      profile: disc?.profile() ?? {},
      members: disc?.status() ?? [],
      failures: [...(disc?.fixedFailures ?? []), ...(why ? [why] : [])],
      slide: this.slide,
      slideFoundMs,
      events: {
        total: this.events,
        creates: disc?.creates ?? 0,
        releases: disc?.releases ?? 0,
        modules: disc?.moduleEvents ?? 0,
        quiet: this.quietStops,
      },
      elapsedMs,
      stoppedMs: this.stoppedMs,
      traps: { removed, remaining: this.traps.length, verified, spuriousStops: this.spurious },
      forks: {
        firstTotalForks: this.firstTotalForks,
        createsSeen: disc?.creates ?? 0,
        totalForks: this.lastTotalForks,
        highestPid: disc?.highestPid ?? 0,
      },
    };
  }

  private async removeAll(): Promise<TrapRecord[]> {
    const removed: TrapRecord[] = [];
    while (this.traps.length > 0) {
      const t = this.traps[this.traps.length - 1]!;
      await this.held.remove(raw(t));
      removed.push(this.traps.pop()!);
    }
    this.log(`removed ${removed.length} trap(s)`);
    return removed;
  }

  /** QEMU refuses to remove a watchpoint it does not have: a second removal must fail. */
  private async verifyRemoved(removed: readonly TrapRecord[]): Promise<boolean> {
    for (const t of removed) {
      try {
        await this.core.removeStray(raw(t));
        return false;
      } catch (error) {
        if (!(error instanceof VmsightError)) throw error;
      }
    }
    return true;
  }

  private async onEvent(stop: StopReply & { type: "signal" }): Promise<void> {
    const trap = this.traps.find((t) => t.address === stop.watch?.address);
    if (trap) trap.hits++;
    const regs = await this.registersAt(stop);
    const get = (n: string) => regs.get(n) ?? 0n;
    const seen = this.viewOf(regs);
    if (!seen) return;
    const { view, root } = seen;
    const u64 = (addr: bigint) => view.read(addr, 8)?.readBigUInt64LE(0);
    const nr = view.read(this.a.nrThreads, 4)?.readInt32LE(0) ?? 0;
    const kind: EventKind = stop.watch?.address === this.a.modules ? "module" : "create";
    // Not every write is a fork: early boot clears .bss (total_forks with it). A creation is a
    // write that makes the counter grow.
    const forks = u64(this.a.totalForks);
    if (kind === "create") {
      if (forks === undefined || forks <= this.lastForks) {
        this.spurious++;
        return;
      }
      this.lastForks = forks;
    }
    const current = this.currentTask(view, regs);
    if (current === undefined) return;
    const disc = this.disc ?? this.start(view);
    this.directMap ??= this.findDirectMap(view);
    if (kind === "create") this.checkForks(u64, disc.creates);
    const rsp = get("rsp");
    const stack = view.read(rsp, STACK_WORDS * 8);
    const pointers = GENERAL_REGISTERS.map(get);
    if (stack) for (let i = 0; i < STACK_WORDS; i++) pointers.push(stack.readBigUInt64LE(i * 8));
    disc.observe({
      index: this.events,
      kind,
      current,
      cr3Root: root,
      processCount: this.processCount(view),
      threadCount: nr,
      pointers,
      view,
    });
    this.events++;
    await this.armReleaseWhenUseful(disc);
    this.progress(disc, kind);
  }

  /** The per-CPU `current` of the stopped vCPU. */
  private currentTask(view: GuestView, regs: Map<string, bigint>): bigint | undefined {
    const get = (n: string) => regs.get(n) ?? 0n;
    const perCpu = get("gs_base") !== 0n ? get("gs_base") : get("k_gs_base");
    return view.read(perCpu + this.a.current, 8)?.readBigUInt64LE(0);
  }

  /** Our own stop in a lull: the guest's lasting state, looked at once (see quietMs). */
  private async onQuiet(stop: StopReply & { type: "signal" }): Promise<void> {
    const disc = this.disc;
    if (!disc) return;
    const regs = await this.registersAt(stop);
    const seen = this.viewOf(regs);
    const current = seen && this.currentTask(seen.view, regs);
    if (!seen || current === undefined) return;
    this.quietStops++;
    disc.observe({
      index: this.events,
      kind: "quiet",
      current,
      cr3Root: seen.root,
      processCount: this.processCount(seen.view),
      threadCount: seen.view.read(this.a.nrThreads, 4)?.readInt32LE(0) ?? 0,
      pointers: [],
      view: seen.view,
    });
    this.events++;
    this.progress(disc, "quiet");
  }

  /** At a creation stop total_forks has just been incremented: it counts this fork too. */
  private checkForks(u64: (a: bigint) => bigint | undefined, createsBefore: number): void {
    const v = u64(this.a.totalForks);
    if (v === undefined) return;
    this.firstTotalForks ??= Number(v) - 1 - createsBefore;
    this.lastTotalForks = Number(v);
  }

  private start(view: GuestView): OffsetDiscovery {
    const size = this.a.taskSize === undefined ? undefined : view.read(this.a.taskSize, 4)?.readUInt32LE(0);
    if (size === undefined || size < 1024 || size > 64 * 1024) {
      throw new VmsightError("E_GUEST_DATA", `arch_task_struct_size is unreadable or implausible (${size})`);
    }
    this.log(`task_struct: ${size} bytes allocated per task (arch_task_struct_size)`);
    const facts: KernelFacts = {
      initTask: this.a.initTask,
      initMm: this.a.initMm,
      modulesHead: this.a.modules,
      taskSize: size,
      ...(this.a.initCred === undefined ? {} : { initCred: this.a.initCred }),
      ...(this.a.workerThread === undefined ? {} : { workerThread: this.a.workerThread }),
      ...(this.a.rescuerThread === undefined ? {} : { rescuerThread: this.a.rescuerThread }),
    };
    this.disc = new OffsetDiscovery(facts, this.opts.groups ? { groups: this.opts.groups } : {});
    return this.disc;
  }

  /**
   * page_offset_base as the kernel set it (kernel_randomize_memory(), early in setup_arch(),
   * long before the first fork), checked against a page walk before it is trusted.
   */
  private findDirectMap(view: GuestView): { base: bigint; size: bigint } | undefined {
    if (this.a.pageOffsetBase === undefined) return undefined;
    const base = view.read(this.a.pageOffsetBase, 8)?.readBigUInt64LE(0);
    if (base === undefined || view.translate(base + 0x100000n) !== 0x100000n) return undefined;
    const end = this.target.memory
      .ranges()
      .reduce((m, r) => (r.start + r.size > m ? r.start + r.size : m), 0n);
    return { base, size: end };
  }

  /** Live processes: the per-CPU `process_counts`, summed. */
  private processCount(view: GuestView): number | undefined {
    if (this.a.processCounts === undefined) return undefined;
    const n = this.a.nrCpuIds === undefined ? 1 : (view.read(this.a.nrCpuIds, 4)?.readUInt32LE(0) ?? 1);
    let sum = 0n;
    for (let cpu = 0; cpu < Math.min(n, 8192); cpu++) {
      const base = view.read(this.a.perCpuOffset + BigInt(cpu * 8), 8)?.readBigUInt64LE(0);
      if (base === undefined) return undefined;
      const v = view.read(base + this.a.processCounts, 8)?.readBigUInt64LE(0);
      if (v === undefined) return undefined;
      sum += v;
    }
    return Number(sum);
  }

  private progress(disc: OffsetDiscovery, kind: EventKind): void {
    if (!this.processReported && disc.processConverged()) {
      this.processReported = true;
      const open = disc.open();
      const still = open.length ? `; still open: ${open.join(", ")}` : "";
      this.log(`process members (task_struct, mm_struct, cred) converged at event ${this.events}${still}`);
    }
    const now = performance.now();
    if (now - this.lastProgress < 500 && !disc.converged()) return;
    this.lastProgress = now;
    const left = disc
      .status()
      .filter((m) => m.candidates.length !== 1)
      .map((m) => `${m.key.replace(/^task_struct\./, "")} ${m.candidates.length}`);
    const done = disc.status().length - left.length;
    this.log(
      `event ${this.events} (${kind}; ${disc.creates} created, ${disc.releases} released, ${disc.moduleEvents} modules): ` +
        `${done}/${disc.status().length} converged${left.length ? `; left: ${left.join(", ")}` : ""}`,
    );
  }
}
