import { skippableLength } from "../arch/x86/skippable.js";
/**
 * The event engine: breakpoints and watchpoints on a guest through QEMU's gdbstub, each with an
 * async handler that may read and write registers and memory and say how the guest goes on.
 *
 * Costs decide the design (FIELD-NOTES, TCG): a breakpoint stop costs tens of milliseconds
 * (QEMU re-translates the guest's code afterwards), a watchpoint stop a fraction of one. So:
 *   - stepping over a breakpoint whose instruction is a NOP or ENDBR (nearly every kernel
 *     function entry) is a RIP write, not remove + single-step + re-insert (three more flushes);
 *   - conditions are checked by reading guest RAM directly (no gdbstub round trips), and every
 *     read a handler makes goes the same way unless it asks for registers;
 *   - identical Z packets are inserted once however many traps share them.
 * Under TCG, gdbstub breakpoints and watchpoints live in QEMU, not in guest memory: the guest
 * reading its own text sees the original bytes. Under KVM, QEMU's software breakpoints write
 * int3 (0xcc) into guest memory, which the guest can see; hardware ones (Z1) cannot be seen but
 * there are four debug registers. `breakpointType` picks.
 */
import type { BreakpointType } from "../transport/gdb/client.js";
import type { SignalStop, StopReply } from "../transport/gdb/stop-reply.js";
import { hex } from "../util/address.js";
import { ProtocolError, VmsightError } from "../util/errors.js";
import {
  type GdbLike,
  type GuestOs,
  type ProcessSpace,
  type RawTrap,
  type TaskBrief,
  type TrapRecorder,
  rawKey,
} from "./types.js";

export type WatchKind = "write" | "read" | "access";

/** How the guest goes on after a handler. */
export type Resume = "continue" | "remove" | "stop";

/** Which hits a trap's handler sees; checked by vmsight on the stopped guest. */
export interface TrapFilter {
  /** Process id (tgid). */
  readonly pid?: number;
  /** Thread id. */
  readonly tid?: number;
  /** task->comm, exactly (at most 15 characters). */
  readonly comm?: string;
  readonly test?: (task: TaskBrief) => boolean;
}

export type TrapHandler = (hit: TrapHit) => Resume | undefined | Promise<Resume | undefined>;

export interface BreakpointOptions {
  readonly when?: TrapFilter;
  /** Default: the engine's breakpointType. */
  readonly type?: "software" | "hardware";
}

export interface WatchOptions {
  readonly kind?: WatchKind;
  /** 1, 2, 4 or 8 bytes, aligned to itself (default 8 if aligned, else 1). */
  readonly length?: number;
  /** A user address of this process; hits from other address spaces are ignored. */
  readonly pid?: number;
  readonly when?: TrapFilter;
}

export interface Trap {
  readonly id: number;
  readonly type: "breakpoint" | "watch";
  readonly address: bigint;
  readonly length: number;
  /** What the user asked for, e.g. "do_exit" or "0x7ffd1000 (pid 42)". */
  readonly label: string;
  readonly space: ProcessSpace | undefined;
  remove(): Promise<void>;
}

export interface EngineStats {
  /** Times the guest stopped for a trap (filtered ones included). */
  stops: number;
  /** Handler calls. */
  hits: number;
  /** Stops no handler wanted (filter, other address space). */
  filtered: number;
  /** Breakpoint step-overs done by moving RIP past a NOP/ENDBR. */
  skips: number;
  /** Step-overs done by remove + single-step + re-insert. */
  steps: number;
}

export interface EngineDeps {
  readonly gdb: GdbLike;
  readonly os: GuestOs;
  readonly recorder?: TrapRecorder;
  /** Lets the guest run when the engine closes (QMP cont); omitted: leave it as it is. */
  readonly resumeGuest?: () => Promise<void>;
  readonly breakpointType?: "software" | "hardware";
  /** Called once the first time a breakpoint needs a real single-step (the slow path). */
  readonly log?: (line: string) => void;
}

interface Entry {
  readonly trap: Trap;
  readonly raw: RawTrap;
  readonly handler: TrapHandler;
  readonly when: TrapFilter | undefined;
  removed: boolean;
}

interface Insertion {
  readonly raw: RawTrap;
  count: number;
  /** Breakpoints: length of a skippable first instruction, from the bytes before insertion. */
  readonly skip: number | undefined;
}

const WATCH_TYPE: Record<WatchKind, BreakpointType> = { write: 2, read: 3, access: 4 };
const INTERRUPT_SIGNAL = 2;
const MAX_INSN = 15;

function cpuOfThread(thread: string | undefined): number {
  // QEMU names vCPU n (from 0) "p01.<n+1>" in multiprocess mode, or just "<n+1>".
  const m = /(?:^|\.)([0-9a-fA-F]+)$/.exec(thread ?? "");
  const n = m ? Number.parseInt(m[1]!, 16) - 1 : 0;
  return n >= 0 ? n : 0;
}

export class EventEngine {
  readonly stats: EngineStats = { stops: 0, hits: 0, filtered: 0, skips: 0, steps: 0 };
  private readonly entries = new Map<number, Entry>();
  private readonly inserted = new Map<string, Insertion>();
  private nextId = 1;
  private running = false;
  private interruptSent = false;
  private stopRequested = false;
  private loop: Promise<void> | undefined;
  private closed = false;
  private readonly ops: (() => Promise<void>)[] = [];
  /** Set while the guest sits on a breakpoint we must step over before it runs again. */
  private atBreakpoint: { addr: bigint; thread: string | undefined } | undefined;
  private warnedStep = false;

  constructor(private readonly deps: EngineDeps) {}

  get gdb(): GdbLike {
    return this.deps.gdb;
  }

  get os(): GuestOs {
    return this.deps.os;
  }

  /** Traps currently set. */
  traps(): Trap[] {
    return [...this.entries.values()].map((e) => e.trap);
  }

  // ---- setting traps ------------------------------------------------------------------------

  /** A breakpoint on a kernel symbol (`do_exit`, `do_exit+0x10`) or an address. */
  async breakpoint(at: string | bigint, handler: TrapHandler, opts: BreakpointOptions = {}): Promise<Trap> {
    const addr = typeof at === "bigint" ? at : this.os.resolveSymbol(at);
    const hw = (opts.type ?? this.deps.breakpointType ?? "software") === "hardware";
    const raw: RawTrap = { type: hw ? 1 : 0, addr, kind: 1 };
    const label = typeof at === "string" ? at : (this.os.symbolize(addr) ?? hex(addr));
    return this.add("breakpoint", raw, 1, label, undefined, handler, opts.when);
  }

  /** A watchpoint on a kernel address, or on a user address of process `opts.pid`. */
  async watch(address: bigint, handler: TrapHandler, opts: WatchOptions = {}): Promise<Trap> {
    const length = opts.length ?? (address % 8n === 0n ? 8 : 1);
    if (![1, 2, 4, 8].includes(length) || address % BigInt(length) !== 0n) {
      throw new VmsightError("E_WATCH_LENGTH", `cannot watch ${length} bytes at ${hex(address)}`, {
        hint: "watch 1, 2, 4 or 8 bytes at an address aligned to that size",
      });
    }
    const kind = opts.kind ?? "write";
    let space: ProcessSpace | undefined;
    let label = this.os.symbolize(address) ?? hex(address);
    if (opts.pid !== undefined) {
      space = this.os.processSpace(opts.pid, address, length);
      label = `${hex(address)} (pid ${opts.pid})`;
    } else {
      this.os.readKernel(address, length); // an unmapped kernel address fails here, before any Z packet
    }
    const raw: RawTrap = { type: WATCH_TYPE[kind], addr: address, kind: length };
    return this.add("watch", raw, length, label, space, handler, opts.when);
  }

  private async add(
    type: Trap["type"],
    raw: RawTrap,
    length: number,
    label: string,
    space: ProcessSpace | undefined,
    handler: TrapHandler,
    when: TrapFilter | undefined,
  ): Promise<Trap> {
    if (this.closed) throw new VmsightError("E_ENGINE_CLOSED", "the event engine is closed");
    const id = this.nextId++;
    const trap: Trap = {
      id,
      type,
      address: raw.addr,
      length,
      label,
      space,
      remove: () => this.whenStopped(() => this.removeEntry(id)),
    };
    await this.whenStopped(() => this.insert(raw));
    this.entries.set(id, { trap, raw, handler, when, removed: false });
    return trap;
  }

  private async insert(raw: RawTrap): Promise<void> {
    const key = rawKey(raw);
    const have = this.inserted.get(key);
    if (have) {
      have.count++;
      return;
    }
    // Read the instruction before inserting: under KVM a software breakpoint replaces it.
    const skip = raw.type <= 1 ? this.firstInstructionSkip(raw.addr) : undefined;
    await this.deps.recorder?.add(raw);
    try {
      await this.gdb.insertBreakpoint(raw.type, raw.addr, raw.kind);
    } catch (error) {
      await this.deps.recorder?.remove(raw);
      throw refused(raw, error);
    }
    this.inserted.set(key, { raw, count: 1, skip });
  }

  private firstInstructionSkip(addr: bigint): number | undefined {
    try {
      return skippableLength(this.os.readKernel(addr, MAX_INSN));
    } catch {
      return undefined;
    }
  }

  private async removeEntry(id: number): Promise<void> {
    const e = this.entries.get(id);
    if (!e || e.removed) return;
    e.removed = true;
    this.entries.delete(id);
    const key = rawKey(e.raw);
    const ins = this.inserted.get(key);
    if (!ins || --ins.count > 0) return;
    this.inserted.delete(key);
    await this.gdb.removeBreakpoint(e.raw.type, e.raw.addr, e.raw.kind);
    await this.deps.recorder?.remove(e.raw);
  }

  // ---- running ------------------------------------------------------------------------------

  /**
   * Lets the guest run, dispatching hits, until stop() is called, a handler returns "stop" or
   * `signal` aborts. The guest is left stopped; close() lets it go.
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.loop) throw new VmsightError("E_ENGINE_BUSY", "the event engine is already running");
    if (this.closed) throw new VmsightError("E_ENGINE_CLOSED", "the event engine is closed");
    const onAbort = () => this.stop();
    signal?.addEventListener("abort", onAbort);
    if (signal?.aborted) this.stopRequested = true;
    this.loop = this.runLoop();
    try {
      await this.loop;
    } finally {
      this.loop = undefined;
      this.stopRequested = false;
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async runLoop(): Promise<void> {
    try {
      while (!this.stopRequested) {
        const stop = await this.resume();
        this.os.invalidate();
        await this.drainOps();
        if (this.stopRequested) break;
        await this.dispatch(stop);
      }
    } finally {
      await this.drainOps();
    }
  }

  /** Ends run() at the next stop; interrupts the guest if it is running. */
  stop(): void {
    this.stopRequested = true;
    this.interruptOnce();
  }

  private interruptOnce(): void {
    if (!this.running || this.interruptSent) return;
    this.interruptSent = true;
    this.gdb.interrupt().catch(() => {});
  }

  /** Runs `fn` with the guest stopped: now if it is, else at the next stop (interrupting it). */
  private whenStopped<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.running) return fn();
    return new Promise<T>((resolve, reject) => {
      this.ops.push(() => fn().then(resolve, reject));
      this.interruptOnce();
    });
  }

  private async drainOps(): Promise<void> {
    while (this.ops.length > 0) await this.ops.shift()!();
  }

  /** Steps off a breakpoint if the guest sits on one, then continues; resolves at the next stop. */
  private async resume(): Promise<StopReply> {
    const stepStop = await this.leaveBreakpoint();
    if (stepStop) return stepStop;
    this.running = true;
    this.interruptSent = false;
    // An op queued between two turns of the loop must not wait for a trap that may never come.
    if (this.ops.length > 0 || this.stopRequested) this.interruptOnce();
    try {
      return await this.gdb.continue();
    } finally {
      this.running = false;
    }
  }

  /**
   * `c` on a breakpoint address stops again at once (TCG checks breakpoints before executing).
   * A NOP/ENDBR there is passed by setting RIP; anything else is single-stepped with the
   * breakpoint lifted. Returns the step's stop when that stop is itself an event to dispatch.
   */
  private async leaveBreakpoint(): Promise<StopReply | undefined> {
    const at = this.atBreakpoint;
    this.atBreakpoint = undefined;
    if (!at) return undefined;
    const here = [...this.inserted.values()].filter((i) => i.raw.type <= 1 && i.raw.addr === at.addr);
    if (here.length === 0) return undefined;
    const skip = here[0]!.skip;
    if (skip !== undefined) {
      this.stats.skips++;
      await this.gdb.writeRegister("rip", at.addr + BigInt(skip));
      return undefined;
    }
    this.stats.steps++;
    if (!this.warnedStep) {
      this.warnedStep = true;
      this.deps.log?.(
        `breakpoint at ${hex(at.addr)} is not on a NOP: stepping over it costs extra stops under TCG`,
      );
    }
    for (const i of here) await this.gdb.removeBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
    let stop: StopReply;
    try {
      stop = await this.gdb.step(at.thread);
    } finally {
      for (const i of here) await this.gdb.insertBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
    }
    return stop.type === "signal" && stop.watch ? stop : undefined;
  }

  private async dispatch(stop: StopReply): Promise<void> {
    if (stop.type !== "signal") {
      throw new ProtocolError("E_GUEST_GONE", `the guest stopped for good (${stop.type})`);
    }
    if (stop.signal === INTERRUPT_SIGNAL && !stop.watch) return; // our interrupt (or a pause)
    this.stats.stops++;
    const cpu = cpuOfThread(stop.thread);
    const hit = new TrapHit(this, stop, cpu);
    let matches: Entry[];
    if (stop.watch) {
      const a = stop.watch.address;
      matches = this.matching(
        (e) => e.raw.type >= 2 && a >= e.raw.addr && a < e.raw.addr + BigInt(e.raw.kind),
      );
    } else {
      const rip = await hit.register("rip");
      matches = this.matching((e) => e.raw.type <= 1 && e.raw.addr === rip);
      if (matches.length > 0 || this.hasBreakpointAt(rip))
        this.atBreakpoint = { addr: rip, thread: stop.thread };
    }
    let handled = false;
    for (const e of matches) {
      if (e.removed || !this.accepts(e, hit)) continue;
      handled = true;
      this.stats.hits++;
      const decision = await e.handler(hit.forTrap(e.trap));
      if (decision === "remove") await this.removeEntry(e.trap.id);
      else if (decision === "stop") this.stopRequested = true;
    }
    if (!handled) this.stats.filtered++;
    if (hit.ripMoved && this.atBreakpoint) this.atBreakpoint = undefined;
  }

  private matching(pred: (e: Entry) => boolean): Entry[] {
    return [...this.entries.values()].filter(pred);
  }

  private hasBreakpointAt(addr: bigint): boolean {
    for (const i of this.inserted.values()) if (i.raw.type <= 1 && i.raw.addr === addr) return true;
    return false;
  }

  private accepts(e: Entry, hit: TrapHit): boolean {
    const w = e.when;
    const space = e.trap.space;
    if (!w && !space) return true;
    const task = hit.task();
    if (space && task.mm !== space.mm) return false;
    if (!w) return true;
    if (w.pid !== undefined && task.tgid !== w.pid) return false;
    if (w.tid !== undefined && task.pid !== w.tid) return false;
    if (w.comm !== undefined && task.comm !== w.comm) return false;
    return w.test ? w.test(task) : true;
  }

  /** Single-steps the stopped CPU (off a breakpoint if it sits on one). */
  async stepFrom(hit: TrapHit): Promise<StopReply> {
    const at = this.atBreakpoint;
    const here = at
      ? [...this.inserted.values()].filter((i) => i.raw.type <= 1 && i.raw.addr === at.addr)
      : [];
    this.atBreakpoint = undefined;
    for (const i of here) await this.gdb.removeBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
    try {
      this.stats.steps++;
      return await this.gdb.step(hit.stop.thread);
    } finally {
      for (const i of here) await this.gdb.insertBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
      this.os.invalidate();
    }
  }

  // ---- cleanup ------------------------------------------------------------------------------

  /**
   * Removes every trap, then lets the guest run (if the engine was given resumeGuest), then tells
   * the watchdog all is clean. Safe to call twice, and while run() is looping.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const loop = this.loop;
    if (loop) {
      this.stop();
      await loop.catch(() => {}); // run()'s caller sees that failure
    }
    let failure: unknown;
    for (const id of [...this.entries.keys()]) {
      try {
        await this.removeEntry(id);
      } catch (error) {
        failure ??= error;
      }
    }
    // Whatever a failed removal left behind is still in the watchdog's list: it must not say
    // goodbye then, so that the watchdog cleans up when we exit.
    if (failure === undefined) {
      await this.deps.resumeGuest?.();
      await this.deps.recorder?.goodbye();
    }
    if (failure !== undefined) throw failure;
  }
}

function refused(raw: RawTrap, error: unknown): VmsightError {
  const what = raw.type <= 1 ? "breakpoint" : "watchpoint";
  return new VmsightError("E_TRAP_REFUSED", `QEMU refused a ${what} at ${hex(raw.addr)}`, {
    hint:
      error instanceof VmsightError
        ? error.message
        : "under KVM only 4 hardware breakpoints/watchpoints exist at a time",
    cause: error,
  });
}

/** One stop of the guest at a trap, as a handler sees it. Valid until the handler returns. */
export class TrapHit {
  private regs: Map<string, bigint> | undefined;
  private current: TaskBrief | undefined;
  ripMoved = false;
  trap: Trap | undefined;

  constructor(
    private readonly engine: EventEngine,
    readonly stop: SignalStop,
    readonly cpu: number,
  ) {}

  forTrap(trap: Trap): this {
    this.trap = trap;
    return this;
  }

  /** For a watchpoint: the access kind and the watched address QEMU reported. */
  get access(): SignalStop["watch"] {
    return this.stop.watch;
  }

  /** The task the stopped CPU runs (read from guest memory, once per stop). */
  task(): TaskBrief {
    this.current ??= this.engine.os.currentTask(this.cpu);
    return this.current;
  }

  /** All registers (one `g` packet, cached for this stop). */
  async registers(): Promise<Map<string, bigint>> {
    this.regs ??= await this.engine.gdb.readRegisters();
    return this.regs;
  }

  async register(name: string): Promise<bigint> {
    const n = name.toLowerCase();
    const cached = this.regs?.get(n);
    if (cached !== undefined) return cached;
    return this.engine.gdb.readRegister(n);
  }

  async setRegister(name: string, value: bigint): Promise<void> {
    const n = name.toLowerCase();
    await this.engine.gdb.writeRegister(n, value);
    this.regs?.set(n, value);
    if (n === "rip" || n === "pc") this.ripMoved = true;
  }

  /** Memory as the current task sees it (kernel addresses through the kernel's tables). */
  read(addr: bigint, length: number): Buffer {
    return this.engine.os.read(this.task(), addr, length);
  }

  write(addr: bigint, data: Uint8Array): void {
    this.engine.os.write(this.task(), addr, data);
  }

  readU64(addr: bigint): bigint {
    return this.read(addr, 8).readBigUInt64LE(0);
  }

  /** Executes one instruction and stays stopped; registers are read afresh afterwards. */
  async step(): Promise<StopReply> {
    const r = await this.engine.stepFrom(this);
    this.regs = undefined;
    this.ripMoved = true;
    return r;
  }

  /**
   * At a function's first instruction: return to the caller at once with `value` in RAX, as if
   * the function had run (the KVMi "set registers" answer). The function body does not run.
   */
  async returnFromFunction(value: bigint): Promise<void> {
    const rsp = await this.register("rsp");
    const ret = this.readU64(rsp);
    await this.setRegister("rax", BigInt.asUintN(64, value));
    await this.setRegister("rsp", rsp + 8n);
    await this.setRegister("rip", ret);
  }
}
