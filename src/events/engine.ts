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
 * Sharing Z packets and stepping off breakpoints are done by the trap core (qemu/traps.ts), which
 * alone sends traps and run control to the gdbstub; the engine is one of its clients and tells
 * it which breakpoints a RIP write passes.
 * Under TCG, gdbstub breakpoints and watchpoints live in QEMU, not in guest memory: the guest
 * reading its own text sees the original bytes. Under KVM, QEMU's software breakpoints write
 * int3 (0xcc) into guest memory, which the guest can see; hardware ones (Z1) cannot be seen but
 * there are four debug registers. `breakpointType` picks.
 */
import { skippableLength } from "../arch/x86/skippable.js";
import {
  type RawTrap,
  type StoppedCpu,
  type TrapClient,
  type TrapCore,
  type TrapStop,
  rawKey,
} from "../qemu/traps.js";
import type { BreakpointType } from "../transport/gdb/client.js";
import type { SignalStop, StopReply } from "../transport/gdb/stop-reply.js";
import { hex } from "../util/address.js";
import { ProtocolError, VmsightError } from "../util/errors.js";
import type { GuestOs, ProcessSpace, TaskBrief } from "./types.js";

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
  /** The trap core of the guest's gdbstub; the engine is one of its clients. */
  readonly traps: TrapCore;
  readonly os: GuestOs;
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

const WATCH_TYPE: Record<WatchKind, BreakpointType> = { write: 2, read: 3, access: 4 };
const MAX_INSN = 15;

function cpuOfThread(thread: string | undefined): number {
  // QEMU names vCPU n (from 0) "p01.<n+1>" in multiprocess mode, or just "<n+1>".
  const m = /(?:^|\.)([0-9a-fA-F]+)$/.exec(thread ?? "");
  const n = m ? Number.parseInt(m[1]!, 16) - 1 : 0;
  return n >= 0 ? n : 0;
}

/** Said once when a breakpoint must be stepped over the slow way. */
export function stepOverWarning(addr: bigint): string {
  return `breakpoint at ${hex(addr)} is not on a NOP: stepping over it costs extra stops under TCG`;
}

export class EventEngine {
  readonly stats: EngineStats = { stops: 0, hits: 0, filtered: 0, skips: 0, steps: 0 };
  private readonly entries = new Map<number, Entry>();
  private readonly handle: TrapClient;
  private readonly stopListening: () => void;
  private nextId = 1;
  private stopRequested = false;
  private loop: Promise<void> | undefined;
  private closed = false;
  /** Whether a handler accepted the stop being dispatched. */
  private handled = false;
  private warnedStep = false;

  constructor(private readonly deps: EngineDeps) {
    this.handle = deps.traps.client("events");
    this.handle.onStop((stop, mine) => this.onStop(stop, mine));
    this.stopListening = deps.traps.onRun(() => deps.os.invalidate());
  }

  /** Registers and memory of the stopped vCPU, through the gdbstub. */
  get cpu(): StoppedCpu {
    return this.deps.traps.cpu;
  }

  get os(): GuestOs {
    return this.deps.os;
  }

  private get core(): TrapCore {
    return this.deps.traps;
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
      remove: () => this.removeEntry(id),
    };
    await this.handle.insert(raw, { skip: () => this.firstInstructionSkip(raw.addr) });
    this.entries.set(id, { trap, raw, handler, when, removed: false });
    return trap;
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
    await this.handle.remove(e.raw);
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
    while (!this.stopRequested) {
      const stop = await this.core.resume();
      this.countStepOver(stop.left);
      if (this.stopRequested) break;
      await this.dispatch(stop);
    }
  }

  /** Ends run() at the next stop; interrupts the guest if it is running. */
  stop(): void {
    this.stopRequested = true;
    this.core.interrupt();
  }

  private countStepOver(left: TrapStop["left"]): void {
    if (left?.by === "skip") this.stats.skips++;
    if (left?.by !== "step") return;
    this.stats.steps++;
    if (this.warnedStep) return;
    this.warnedStep = true;
    this.deps.log?.(stepOverWarning(left.addr));
  }

  private async dispatch(stop: TrapStop): Promise<void> {
    if (stop.reply.type !== "signal") {
      throw new ProtocolError("E_GUEST_GONE", `the guest stopped for good (${stop.reply.type})`);
    }
    if (stop.interrupted) return; // our interrupt (or a pause)
    this.stats.stops++;
    this.handled = false;
    await this.core.dispatch(stop);
    if (!this.handled) this.stats.filtered++;
  }

  /** The core's dispatch of a stop at traps of ours: each matching trap's handler, in order. */
  private async onStop(stop: TrapStop, mine: readonly RawTrap[]): Promise<void> {
    const reply = stop.reply as SignalStop;
    const hit = new TrapHit(this, reply, cpuOfThread(reply.thread));
    const keys = new Set(mine.map(rawKey));
    const matches = [...this.entries.values()].filter((e) => keys.has(rawKey(e.raw)));
    for (const e of matches) {
      if (e.removed || !this.accepts(e, hit)) continue;
      this.handled = true;
      this.stats.hits++;
      const decision = await e.handler(hit.forTrap(e.trap));
      if (decision === "remove") await this.removeEntry(e.trap.id);
      else if (decision === "stop") this.stopRequested = true;
    }
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
  stepFrom(hit: TrapHit): Promise<StopReply> {
    this.stats.steps++;
    return this.core.step(hit.stop.thread);
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
    for (const e of this.entries.values()) e.removed = true;
    this.entries.clear();
    this.stopListening();
    // Whatever a failed removal left behind is still in the watchdog's list: it must not say
    // goodbye then, so that the watchdog cleans up when we exit.
    await this.handle.release();
    await this.deps.resumeGuest?.();
    await this.core.goodbye();
  }
}

/** One stop of the guest at a trap, as a handler sees it. Valid until the handler returns. */
export class TrapHit {
  private regs: Map<string, bigint> | undefined;
  private current: TaskBrief | undefined;
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
    this.regs ??= await this.engine.cpu.readRegisters();
    return this.regs;
  }

  async register(name: string): Promise<bigint> {
    const n = name.toLowerCase();
    const cached = this.regs?.get(n);
    if (cached !== undefined) return cached;
    return this.engine.cpu.readRegister(n);
  }

  async setRegister(name: string, value: bigint): Promise<void> {
    const n = name.toLowerCase();
    await this.engine.cpu.writeRegister(n, value);
    this.regs?.set(n, value);
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
