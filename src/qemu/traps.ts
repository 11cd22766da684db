/**
 * The trap core: the one place vmsight sends Z/z (insert and remove a breakpoint or watchpoint),
 * `s` and `c` to QEMU's gdbstub. The event engine, injected kernel calls and boot-time discovery
 * are its clients, each through a handle from `client(name)`, so that several of them can trap
 * one guest at once and each can be cleaned up on its own:
 *   - identical traps share one Z packet however many handles hold them (reference counts); the
 *     z is sent when the last holder removes it, and a handle's release() removes all of its own;
 *   - a stop is matched once against the inserted traps and dispatched to the handles that hold
 *     the traps it is for;
 *   - `c` on a breakpoint address stops again at once (TCG checks breakpoints before executing),
 *     so the core steps the guest off the breakpoint it sits on before it runs: by moving rip
 *     when the client said the instruction can be skipped, else by lifting the breakpoints there
 *     for one single-step;
 *   - the recorder (the SIGKILL watchdog) hears of every trap before its Z packet and after its z.
 * No Linux here: a client that wants rip moves says how far when it inserts the breakpoint.
 */
import type { BreakpointType } from "../transport/gdb/client.js";
import type { SignalStop, StopReply } from "../transport/gdb/stop-reply.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";

/** The gdbstub as the core and its clients use it (GdbClient has it all; tests use fakes). */
export interface TrapGdb {
  insertBreakpoint(type: BreakpointType, addr: bigint, kind: number): Promise<void>;
  removeBreakpoint(type: BreakpointType, addr: bigint, kind: number): Promise<void>;
  continue(): Promise<StopReply>;
  step(thread?: string): Promise<StopReply>;
  interrupt(): Promise<void>;
  selectThread(op: "g" | "c", id: string): Promise<void>;
  readRegisters(): Promise<Map<string, bigint>>;
  readRegister(name: string): Promise<bigint>;
  writeRegister(name: string, value: bigint): Promise<void>;
  writeMemory(addr: bigint, data: Uint8Array): Promise<void>;
}

/** What clients may do to the stopped vCPU: registers and memory, never traps or run control. */
export type StoppedCpu = Pick<
  TrapGdb,
  "selectThread" | "readRegisters" | "readRegister" | "writeRegister" | "writeMemory"
>;

/** One Z/z packet's worth: gdb type (0 sw, 1 hw breakpoint, 2 write, 3 read, 4 access watch). */
export interface RawTrap {
  readonly type: BreakpointType;
  readonly addr: bigint;
  readonly kind: number;
}

export function rawKey(t: RawTrap): string {
  return `${t.type}:${t.addr.toString(16)}:${t.kind}`;
}

const isBreakpoint = (t: RawTrap) => t.type <= 1;

/** Keeps a record of inserted traps outside this process (the SIGKILL watchdog). */
export interface TrapRecorder {
  add(trap: RawTrap): Promise<void>;
  remove(trap: RawTrap): Promise<void>;
  /** Everything is cleaned up: the recorder must not act when this process ends. */
  goodbye(): Promise<void>;
}

export interface InsertOptions {
  /**
   * A breakpoint's step-over: the length of its instruction when rip may simply be moved past
   * it (a NOP), undefined to single-step it. Asked once, before the Z packet: under KVM a
   * software breakpoint overwrites the instruction.
   */
  readonly skip?: () => number | undefined;
}

/** One stop of the guest, matched against the inserted traps. */
export interface TrapStop {
  readonly reply: StopReply;
  /** Our interrupt (or a pause): no trap. */
  readonly interrupted: boolean;
  /**
   * The interrupt was the core's own, for work queued by whenStopped() (trap changes, reads),
   * which has run by now: whoever drives the guest may simply resume it.
   */
  readonly forWork: boolean;
  /** rip of the stopped vCPU, read when the stop may be at a breakpoint (QEMU makes the
   * stopped vCPU the register thread). */
  readonly rip: bigint | undefined;
  /** The inserted traps this stop is for. */
  readonly hits: readonly RawTrap[];
  /** How the guest left the breakpoint it sat on before it ran to this stop. */
  readonly left: { readonly addr: bigint; readonly by: "skip" | "step" } | undefined;
}

/** Called at a stop with the traps of this handle it is for; the guest stays stopped until it returns. */
export type StopListener = (stop: TrapStop, mine: readonly RawTrap[]) => void | Promise<void>;

interface Insertion {
  readonly raw: RawTrap;
  /** Breakpoints: bytes rip moves to leave it, from the instruction before insertion. */
  readonly skip: number | undefined;
  /** How many times each handle holds it. */
  readonly holders: Map<TrapClient, number>;
}

const INTERRUPT_SIGNAL = 2;
/** How long queued work waits for the guest to stop at a trap before it is interrupted. */
const OPS_GRACE_MS = 10;

/** A client's share of the core: its traps, its stops, and its cleanup. */
export class TrapClient {
  private listener: StopListener | undefined;
  private released = false;

  constructor(
    readonly name: string,
    private readonly core: TrapCore,
  ) {}

  /** Inserts `raw` (or takes one more hold on it), interrupting the guest if it runs. */
  insert(raw: RawTrap, opts: InsertOptions = {}): Promise<void> {
    if (this.released) {
      return Promise.reject(
        new VmsightError("E_TRAPS_RELEASED", `the trap client "${this.name}" was released`),
      );
    }
    return this.core.whenStopped(() => this.core.hold(this, raw, opts));
  }

  /** Drops one hold on `raw`; the z packet goes when no handle holds it. No-op if not held. */
  remove(raw: RawTrap): Promise<void> {
    return this.core.whenStopped(() => this.core.drop(this, raw, 1));
  }

  holds(raw: RawTrap): boolean {
    return this.core.holdsOf(this, raw) > 0;
  }

  /** The traps this handle holds, in insertion order. */
  traps(): RawTrap[] {
    return this.core.trapsOf(this);
  }

  /** Sees the stops at this handle's traps (one listener; a second replaces the first). */
  onStop(listener: StopListener): void {
    this.listener = listener;
  }

  /** @internal The core's dispatch of a stop at traps this handle holds. */
  async deliver(stop: TrapStop, mine: readonly RawTrap[]): Promise<void> {
    await this.listener?.(stop, mine);
  }

  /**
   * Removes every trap this handle holds (each whose last holder it is goes from the stub) and
   * detaches it. Every removal is tried; the first failure is thrown afterwards.
   */
  async release(): Promise<void> {
    this.released = true;
    this.listener = undefined;
    await this.core.whenStopped(() => this.core.dropAll(this));
  }

  /** `await using traps = core.client(…)` releases the handle at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}

export class TrapCore {
  private readonly inserted = new Map<string, Insertion>();
  /** Z packets on their way: a second hold on the same trap waits for the first, not sends another. */
  private readonly inserting = new Map<string, Promise<unknown>>();
  private readonly clients = new Set<TrapClient>();
  private readonly runListeners = new Set<() => void>();
  private readonly ops: (() => Promise<void>)[] = [];
  private recorder: TrapRecorder | undefined;
  /** A z packet failed: the stub may still hold a trap the recorder must clean up. */
  private stranded = false;
  /** Between resume() and its stop. */
  private resuming = false;
  /** While a `c` is outstanding. */
  private running = false;
  private interruptWanted = false;
  private interruptSent = false;
  private interruptTimer: NodeJS.Timeout | undefined;
  /** Set while the guest sits on a breakpoint it must be stepped off before it runs again. */
  private atBreakpoint: { addr: bigint; thread: string | undefined } | undefined;

  /** Registers and memory of the stopped vCPU; a write to rip moves it off its breakpoint. */
  readonly cpu: StoppedCpu;

  constructor(
    private readonly gdb: TrapGdb,
    opts: { readonly recorder?: TrapRecorder } = {},
  ) {
    this.recorder = opts.recorder;
    this.cpu = {
      selectThread: (op, id) => gdb.selectThread(op, id),
      readRegisters: () => gdb.readRegisters(),
      readRegister: (name) => gdb.readRegister(name),
      writeRegister: async (name, value) => {
        await gdb.writeRegister(name, value);
        const n = name.toLowerCase();
        if (n === "rip" || n === "pc") this.atBreakpoint = undefined;
      },
      writeMemory: (addr, data) => gdb.writeMemory(addr, data),
    };
  }

  /** A new handle; its name is for messages. */
  client(name: string): TrapClient {
    const c = new TrapClient(name, this);
    this.clients.add(c);
    return c;
  }

  /** Starts recording with `recorder` (the traps already inserted first). */
  async record(recorder: TrapRecorder): Promise<void> {
    this.recorder = recorder;
    for (const i of this.inserted.values()) await recorder.add(i.raw);
  }

  /**
   * Tells the recorder all is clean, so it does nothing when this process ends; not while any
   * trap is inserted or a removal failed (then the recorder must clean up after us).
   */
  async goodbye(): Promise<void> {
    if (this.inserted.size > 0 || this.stranded) return;
    await this.recorder?.goodbye();
    this.recorder = undefined;
  }

  /** Traps inserted at the stub, in insertion order. */
  traps(): RawTrap[] {
    return [...this.inserted.values()].map((i) => i.raw);
  }

  /** Called whenever the guest has run (after every `c` and `s`): caches of guest state are stale. */
  onRun(listener: () => void): () => void {
    this.runListeners.add(listener);
    return () => this.runListeners.delete(listener);
  }

  // ---- holding traps ------------------------------------------------------------------------

  /** Runs `fn` with the guest stopped: now if it is, else at the next stop (interrupting it). */
  whenStopped<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.resuming) return fn();
    return new Promise<T>((resolve, reject) => {
      this.ops.push(() => fn().then(resolve, reject));
      this.interruptSoon();
    });
  }

  /**
   * Interrupts the running guest for queued work unless a trap stops it first (within
   * OPS_GRACE_MS). Under TCG an interrupt that meets a watchpoint hit can swallow the hit (QEMU
   * reports one stop, the interrupt's): events were lost while clients read a guest whose
   * watchpoints fire often. A guest that traps often stops on its own within the grace.
   */
  private interruptSoon(): void {
    if (!this.running || this.interruptSent || this.interruptTimer) return;
    this.interruptTimer = setTimeout(() => {
      this.interruptTimer = undefined;
      this.sendInterrupt();
    }, OPS_GRACE_MS);
  }

  /** @internal TrapClient.insert, with the guest stopped. */
  async hold(client: TrapClient, raw: RawTrap, opts: InsertOptions): Promise<void> {
    const key = rawKey(raw);
    for (;;) {
      const have = this.inserted.get(key);
      if (have) {
        have.holders.set(client, (have.holders.get(client) ?? 0) + 1);
        return;
      }
      const pending = this.inserting.get(key);
      if (!pending) break;
      await pending.catch(() => {}); // if it was refused, this hold tries for itself
    }
    const sending = this.insert(raw, opts);
    this.inserting.set(key, sending);
    try {
      const entry = await sending;
      entry.holders.set(client, 1);
      this.inserted.set(key, entry);
    } finally {
      this.inserting.delete(key);
    }
  }

  private async insert(raw: RawTrap, opts: InsertOptions): Promise<Insertion> {
    const skip = isBreakpoint(raw) ? opts.skip?.() : undefined;
    await this.recorder?.add(raw);
    try {
      await this.gdb.insertBreakpoint(raw.type, raw.addr, raw.kind);
    } catch (error) {
      await this.recorder?.remove(raw);
      throw refused(raw, error);
    }
    return { raw, skip, holders: new Map() };
  }

  /** @internal Drops `count` holds of `client` on `raw`; sends the z when none is left. */
  async drop(client: TrapClient, raw: RawTrap, count: number): Promise<void> {
    const key = rawKey(raw);
    const ins = this.inserted.get(key);
    const held = ins?.holders.get(client) ?? 0;
    if (!ins || held === 0) return;
    if (held > count) ins.holders.set(client, held - count);
    else ins.holders.delete(client);
    if (ins.holders.size > 0) return;
    this.inserted.delete(key);
    try {
      await this.gdb.removeBreakpoint(raw.type, raw.addr, raw.kind);
    } catch (error) {
      this.stranded = true; // the recorder keeps it: whoever cleans up after us tries again
      throw error;
    }
    await this.recorder?.remove(raw);
  }

  /** @internal TrapClient.release. */
  async dropAll(client: TrapClient): Promise<void> {
    this.clients.delete(client);
    let failure: unknown;
    for (const ins of [...this.inserted.values()]) {
      const held = ins.holders.get(client);
      if (held === undefined) continue;
      try {
        await this.drop(client, ins.raw, held);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /** @internal */
  holdsOf(client: TrapClient, raw: RawTrap): number {
    return this.inserted.get(rawKey(raw))?.holders.get(client) ?? 0;
  }

  /** @internal */
  trapsOf(client: TrapClient): RawTrap[] {
    return [...this.inserted.values()].filter((i) => i.holders.has(client)).map((i) => i.raw);
  }

  /**
   * Removes a trap no handle holds: one a killed vmsight left at the stub, or one already
   * removed, to check that the stub no longer has it (it then refuses, and this throws).
   */
  async removeStray(raw: RawTrap): Promise<void> {
    if (this.inserted.has(rawKey(raw))) {
      throw new VmsightError("E_TRAP_HELD", `the ${what(raw)} at ${hex(raw.addr)} is held by a client`);
    }
    await this.gdb.removeBreakpoint(raw.type, raw.addr, raw.kind);
  }

  // ---- running ------------------------------------------------------------------------------

  /**
   * Lets the guest run until its next stop (stepping it off a breakpoint first) and says which
   * inserted traps that stop is for. Traps inserted or removed meanwhile are handled at the stop,
   * before this returns. One resume at a time.
   */
  async resume(): Promise<TrapStop> {
    if (this.resuming) throw new VmsightError("E_TRAPS_BUSY", "the guest is already being resumed");
    this.resuming = true;
    this.interruptWanted = false;
    let left: Left | undefined;
    let reply: StopReply;
    let worked = false;
    try {
      left = await this.leaveBreakpoint();
      reply = left?.stop ?? (await this.continueGuest());
    } finally {
      this.resuming = false;
      this.ran();
      worked = await this.drainOps();
    }
    const stop = await this.match(reply, left && { addr: left.addr, by: left.by });
    return { ...stop, forWork: stop.interrupted && worked && !this.interruptWanted };
  }

  /**
   * Stops the guest if a resume() is under way (once however often it is asked); when resume()
   * has not sent its `c` yet, right after it does. Does nothing to a stopped guest.
   */
  interrupt(): void {
    if (!this.resuming) return;
    this.interruptWanted = true;
    this.sendInterrupt();
  }

  /** Single-steps the stopped vCPU, off the breakpoint it sits on if it does. */
  async step(thread?: string): Promise<StopReply> {
    const at = this.atBreakpoint;
    this.atBreakpoint = undefined;
    try {
      return await this.lifted(at ? this.breakpointsAt(at.addr) : [], thread);
    } finally {
      this.ran();
    }
  }

  /** Calls the listener of each handle that holds a trap of `stop`, in the order handles were made. */
  async dispatch(stop: TrapStop): Promise<void> {
    const holders = stop.hits.map((raw) => ({ raw, by: this.inserted.get(rawKey(raw))?.holders }));
    for (const client of [...this.clients]) {
      const mine = holders.filter((h) => h.by?.has(client)).map((h) => h.raw);
      if (mine.length > 0) await client.deliver(stop, mine);
    }
  }

  private sendInterrupt(): void {
    if (!this.running || this.interruptSent) return;
    this.interruptSent = true;
    this.gdb.interrupt().catch(() => {});
  }

  private async continueGuest(): Promise<StopReply> {
    this.running = true;
    this.interruptSent = false;
    try {
      const stopped = this.gdb.continue();
      // Work queued before the `c` went out must not wait for a trap that may never come; the
      // interrupt follows the `c` (one that comes first is lost on a stopped guest).
      if (this.interruptWanted) this.sendInterrupt();
      else if (this.ops.length > 0) this.interruptSoon();
      return await stopped;
    } finally {
      this.running = false;
      clearTimeout(this.interruptTimer);
      this.interruptTimer = undefined;
    }
  }

  private ran(): void {
    for (const l of this.runListeners) l();
  }

  /** Runs the queued work; says whether there was any. */
  private async drainOps(): Promise<boolean> {
    const any = this.ops.length > 0;
    while (this.ops.length > 0) await this.ops.shift()!();
    return any;
  }

  private breakpointsAt(addr: bigint): Insertion[] {
    return [...this.inserted.values()].filter((i) => isBreakpoint(i.raw) && i.raw.addr === addr);
  }

  /**
   * Moves the guest off the breakpoint it stopped at: a rip write past a skippable instruction,
   * else one single-step with the breakpoint lifted. Returns the step's stop when it is itself
   * an event (a watchpoint hit).
   */
  private async leaveBreakpoint(): Promise<Left | undefined> {
    const at = this.atBreakpoint;
    this.atBreakpoint = undefined;
    if (!at) return undefined;
    const here = this.breakpointsAt(at.addr);
    if (here.length === 0) return undefined;
    const skip = here[0]!.skip;
    if (skip !== undefined) {
      await this.gdb.writeRegister("rip", at.addr + BigInt(skip));
      return { addr: at.addr, by: "skip", stop: undefined };
    }
    const s = await this.lifted(here, at.thread);
    return { addr: at.addr, by: "step", stop: s.type === "signal" && s.watch ? s : undefined };
  }

  /**
   * One single-step with `here` (the breakpoints at rip) out of the stub meanwhile. The recorder
   * is not told: they are out for one step, and a cleanup that finds one gone only counts it.
   */
  private async lifted(here: readonly Insertion[], thread: string | undefined): Promise<StopReply> {
    for (const i of here) await this.gdb.removeBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
    try {
      return await this.gdb.step(thread);
    } finally {
      for (const i of here) await this.gdb.insertBreakpoint(i.raw.type, i.raw.addr, i.raw.kind);
    }
  }

  /** Which inserted traps `reply` is for; remembers a breakpoint the guest now sits on. */
  private async match(reply: StopReply, left: TrapStop["left"]): Promise<TrapStop> {
    const stop = { reply, interrupted: false, forWork: false, rip: undefined, hits: [], left };
    if (reply.type !== "signal") return stop;
    if (reply.watch) return { ...stop, hits: this.watchesAt(reply.watch.address) };
    if (reply.signal === INTERRUPT_SIGNAL) return { ...stop, interrupted: true };
    if (!this.traps().some(isBreakpoint)) return stop;
    const rip = await this.gdb.readRegister("rip");
    const hits = this.breakpointsAt(rip).map((i) => i.raw);
    if (hits.length > 0) this.atBreakpoint = { addr: rip, thread: reply.thread };
    return { ...stop, rip, hits };
  }

  private watchesAt(a: bigint): RawTrap[] {
    return this.traps().filter((t) => !isBreakpoint(t) && a >= t.addr && a < t.addr + BigInt(t.kind));
  }
}

interface Left {
  readonly addr: bigint;
  readonly by: "skip" | "step";
  readonly stop: SignalStop | undefined;
}

function what(raw: RawTrap): string {
  return isBreakpoint(raw) ? "breakpoint" : "watchpoint";
}

function refused(raw: RawTrap, error: unknown): VmsightError {
  return new VmsightError("E_TRAP_REFUSED", `QEMU refused a ${what(raw)} at ${hex(raw.addr)}`, {
    hint:
      error instanceof VmsightError
        ? error.message
        : "under KVM only 4 hardware breakpoints/watchpoints exist at a time",
    cause: error,
  });
}
