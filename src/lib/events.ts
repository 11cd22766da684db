/**
 * vm.events(): the events `vmsight trace` prints, as async iterators. Each stream is a client
 * of the guest's trap core with its own handle and event engine, so streams running at once
 * share identical traps (the core counts holders) and each removes its own when it ends. One
 * pump per guest lets it run and hands every stop to the core, which dispatches it to the
 * streams whose traps it is for.
 */
import {
  type EventBody,
  type EventSink,
  type TraceKind,
  type TraceSelection,
  armTrace,
  eventRecord,
} from "../commands/trace.js";
import { toWire } from "../commands/wire.js";
import { EventEngine, type WatchKind, stepOverWarning } from "../events/engine.js";
import type { Respond } from "../events/hold.js";
import { LinuxGuest } from "../events/linux-guest.js";
import { detectKvm } from "../events/session.js";
import { Watchdog } from "../events/watchdog.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { gdbSocketPath } from "../qemu/qemu-process.js";
import type { Target } from "../qemu/session.js";
import type { TrapCore } from "../qemu/traps.js";
import { parseAddress } from "../util/address.js";
import { ProtocolError, VmsightError } from "../util/errors.js";
import { EventQueue } from "../util/event-queue.js";
import type { Address, VmEvent } from "./types.js";

export interface EventOptions {
  /** Which streams: proc (create/exec/exit), modules (load/unload), syscalls, switch, break, watch. */
  readonly types: readonly TraceKind[];
  /** Only events of this process (tgid; proc also keeps its children's creation). */
  readonly pid?: number;
  /** Only events of tasks with this comm (at most 15 characters). */
  readonly comm?: string;
  /** proc: which of create, exec, exit (default all). */
  readonly proc?: { readonly create: boolean; readonly exec: boolean; readonly exit: boolean };
  /** break: a kernel symbol (do_exit, do_exit+0x10) or address. */
  readonly at?: string;
  /** watch: the address, its size in bytes (1, 2, 4, 8; default 8) and the access (default write). */
  readonly address?: Address;
  readonly length?: number;
  readonly access?: WatchKind;
  /**
   * break: hold the vCPU that hit the breakpoint until the event's `respond` is called (continue,
   * skip, set_registers) or `deadlineMs` pass, then it continues. Every stream waits meanwhile.
   */
  readonly hold?: { readonly deadlineMs: number };
  /** Ends the stream (as breaking out of the loop does). */
  readonly signal?: AbortSignal;
  /** Called once this stream's traps are set (with how many): events from then on are seen. */
  readonly onReady?: (traps: number) => void;
  /** Notes on how tracing goes (a breakpoint that is slow to step over). */
  readonly log?: (line: string) => void;
}

/** An event as a stream yields it: a held breakpoint's carries the `respond` that lets it go. */
export type StreamEvent = VmEvent & { readonly respond?: Respond };

/** A stream of events; also counts the guest's stops at traps while it runs. */
export interface EventStream extends AsyncIterableIterator<StreamEvent> {
  /** Times the guest stopped at a trap (any stream's) while this stream was armed. */
  readonly stops: number;
}

interface Member {
  readonly engine: EventEngine;
  readonly fail: (error: unknown) => void;
  readonly log: ((line: string) => void) | undefined;
  stops: number;
}

interface Driver {
  readonly run: (traps: TrapCore) => Promise<void>;
  readonly fail: (error: unknown) => void;
}

interface Shared {
  readonly traps: TrapCore;
  readonly guest: LinuxGuest;
  readonly breakpointType: "software" | "hardware";
  readonly wasRunning: boolean;
  readonly watchdog: Watchdog;
  readonly offReset: () => void;
}

/** What the streams of one guest share: the trap core, the kernel, the watchdog and the pump. */
export class EventHub {
  private shared: Promise<Shared> | undefined;
  /** `shared` once it has opened. */
  private opened: Shared | undefined;
  private readonly members = new Set<Member>();
  private joining = 0;
  private pump: Promise<void> | undefined;
  private warnedStep = false;
  /** Reads under way with the guest stopped: the pump does not let it run until they end. */
  private readonly holds = new Set<Promise<unknown>>();
  /** The machine reset under the streams: their traps mean nothing to the kernel that boots next. */
  private rebooted = false;
  /** Work that drives the guest itself (a kill's injected call), waiting for the pump to step aside. */
  private readonly drivers: Driver[] = [];

  constructor(
    private readonly target: Target,
    private readonly kernel: () => Promise<KernelInfo>,
    /**
     * Runs its function in turn with the Vm's snapshots: the run state the streams find (and
     * restore, and the watchdog restores) is the guest's own, not a snapshot's pause.
     */
    private readonly inTurn: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn(),
  ) {}

  /** Whether any stream is running or starting. */
  get active(): boolean {
    return this.members.size > 0 || this.joining > 0;
  }

  /**
   * Whether the streams hold the guest (opened, until the last one out has stopped the pump and
   * let the guest go): reads then stop it through the trap core, not QMP. A QMP stop and cont
   * while the pump's `c` is out would leave the guest running with the gdbstub unaware, and it
   * drops the next packet. A read in turn before the opening still uses QMP.
   */
  get driving(): boolean {
    return this.opened !== undefined;
  }

  /** Whether drive() may be called: streams run, start, or have not yet let the guest go. */
  get engaged(): boolean {
    return this.shared !== undefined;
  }

  private async open(): Promise<Shared> {
    const target = this.target;
    const before = await target.runState();
    const traps = await target.traps();
    // A gdb client connected earlier leaves the guest as the Vm's reads left it: stop it to arm.
    if ((await target.runState()).running) await target.qmp.execute("stop");
    const guest = new LinuxGuest(await this.kernel());
    const kvm = await detectKvm(target);
    const watchdog = await Watchdog.start({
      gdbPath: gdbSocketPath(target.pid),
      qmpPath: target.qmp.path,
      resume: before.running,
    });
    await traps.record(watchdog);
    const offReset = target.onReset(() => this.reset(traps));
    return {
      traps,
      guest,
      breakpointType: kvm ? "hardware" : "software",
      wasRunning: before.running,
      watchdog,
      offReset,
    };
  }

  /** A new stream's engine, its traps armed, taking part in the pump. */
  async join(opts: EventOptions, out: EventSink, fail: (e: unknown) => void): Promise<Member> {
    this.joining++;
    let member: Member | undefined;
    try {
      this.shared ??= this.inTurn(() => this.open());
      const shared = await this.shared;
      this.opened = shared;
      const engine = new EventEngine({
        traps: shared.traps,
        os: shared.guest,
        breakpointType: shared.breakpointType,
      });
      try {
        for (const kind of new Set(opts.types))
          await armTrace(engine, shared.guest, selection(opts, kind), out);
      } catch (error) {
        await engine.close().catch(() => {});
        throw error;
      }
      member = { engine, fail, log: opts.log, stops: 0 };
      this.members.add(member);
      this.pump ??= this.run(shared);
      return member;
    } finally {
      this.joining--;
      if (!member) await this.settle();
    }
  }

  /**
   * Runs `fn` with the guest stopped while streams run: the trap core interrupts the pump's
   * resume for it (or it runs now, between two), and the pump waits for it before the next.
   */
  async whenStopped<T>(fn: () => Promise<T>): Promise<T> {
    const shared = this.opened;
    if (!shared) return fn();
    const done = shared.traps.whenStopped(fn);
    this.holds.add(done);
    try {
      return await done;
    } finally {
      this.holds.delete(done);
    }
  }

  /**
   * Runs `fn` with the guest stopped and the trap core to itself, between two of the pump's
   * stops: `fn` may resume the guest, and hands the stops at the streams' traps to them (as
   * injectCalls does), so the streams see what happens meanwhile. Only while engaged.
   */
  drive<T>(fn: (traps: TrapCore) => Promise<T>): Promise<T> {
    if (!this.shared) return Promise.reject(new VmsightError("E_CLOSED", "no event stream runs on this vm"));
    return new Promise<T>((resolve, reject) => {
      this.drivers.push({ run: (traps) => fn(traps).then(resolve, reject), fail: reject });
      // Queued work makes the core stop the running guest (after the grace that keeps watchpoint
      // hits); the pump then finds the driver before it resumes.
      void this.opened?.traps.whenStopped(async () => {});
    });
  }

  /** What the pump must let finish, with the guest stopped, before it resumes. */
  private waitingWork(traps: TrapCore): Promise<unknown> | undefined {
    if (this.drivers.length > 0) return this.runDrivers(traps);
    if (this.holds.size > 0) return Promise.allSettled([...this.holds]);
    return undefined;
  }

  private async runDrivers(traps: TrapCore): Promise<void> {
    for (let d = this.drivers.shift(); d; d = this.drivers.shift()) await d.run(traps);
  }

  /**
   * After a reset the old kernel's traps sit at addresses that mean nothing (or something else)
   * to the kernel that boots next: every stream ends with that said, and the pump stops so the
   * streams take their traps out with the guest held.
   */
  private reset(traps: TrapCore): void {
    this.rebooted = true;
    for (const m of this.members) {
      m.fail(
        new VmsightError(
          "E_GUEST_REBOOTED",
          "the guest rebooted during the trace; its traps are removed and the new kernel is not traced",
          { hint: "run trace again once the guest has booted" },
        ),
      );
    }
    traps.interrupt();
  }

  /** Lets the guest run and dispatches its stops while any stream takes part. */
  private async run(shared: Shared): Promise<void> {
    try {
      while (this.members.size > 0 && !this.rebooted) {
        // Checked and resumed in one synchronous step: work queued later interrupts the resume.
        const work = this.waitingWork(shared.traps);
        if (work) {
          await work;
          continue;
        }
        const stop = await shared.traps.resume();
        if (stop.left?.by === "step") this.warnStep(stop.left.addr);
        if (stop.reply.type !== "signal")
          throw new ProtocolError("E_GUEST_GONE", `the guest stopped for good (${stop.reply.type})`);
        if (stop.interrupted || this.rebooted) continue; // ours, to change traps, or a pause
        for (const m of this.members) m.stops++;
        await shared.traps.dispatch(stop);
      }
    } catch (error) {
      for (const m of this.members) m.fail(error);
    } finally {
      this.pump = undefined;
    }
  }

  private warnStep(addr: bigint): void {
    if (this.warnedStep) return;
    this.warnedStep = true;
    for (const m of this.members) m.log?.(stepOverWarning(addr));
  }

  /** Removes a stream's traps; the last one out lets the guest run on as it did before. */
  async leave(member: Member): Promise<void> {
    if (!this.members.delete(member)) return;
    try {
      await member.engine.close();
    } finally {
      await this.settle();
    }
  }

  /** With no stream left: the pump has stopped; the guest runs again if it ran before. */
  private async settle(): Promise<void> {
    if (this.active || !this.shared) return;
    await this.pump;
    const shared = await this.shared.catch((error: unknown) => {
      for (const d of this.drivers.splice(0)) d.fail(error);
      return undefined;
    });
    // A driver that came as the last stream left still finds the guest stopped and the core open.
    if (shared) await this.runDrivers(shared.traps);
    this.shared = undefined;
    this.opened = undefined;
    this.rebooted = false;
    if (!shared) return;
    shared.offReset();
    if (shared.traps.traps().length > 0) shared.watchdog.abandon(); // it removes what we could not
    await this.inTurn(async () => {
      if (shared.wasRunning && !(await this.target.runState()).running) await this.target.qmp.execute("cont");
    });
  }

  /** Ends every stream (vm.close()). */
  async close(): Promise<void> {
    for (const m of [...this.members]) m.fail(new VmsightError("E_CLOSED", "the vm was closed"));
    let failure: unknown;
    for (const m of [...this.members]) {
      try {
        await this.leave(m);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure !== undefined) throw failure;
  }
}

function selection(opts: EventOptions, kind: TraceKind): TraceSelection {
  const address =
    opts.address === undefined
      ? undefined
      : typeof opts.address === "string"
        ? parseAddress(opts.address)
        : BigInt(opts.address);
  if (kind === "break" && opts.at === undefined)
    throw new VmsightError("E_USAGE", "break events need `at`: a symbol or address");
  if (kind === "watch" && address === undefined)
    throw new VmsightError("E_USAGE", "watch events need `address`");
  return {
    kind,
    ...(opts.pid === undefined ? {} : { pid: opts.pid }),
    ...(opts.comm === undefined ? {} : { comm: opts.comm }),
    ...(opts.proc === undefined ? {} : { events: opts.proc }),
    ...(opts.at === undefined ? {} : { at: opts.at }),
    ...(address === undefined ? {} : { address }),
    ...(opts.length === undefined ? {} : { length: opts.length }),
    ...(opts.access === undefined ? {} : { access: opts.access }),
    ...(opts.hold === undefined ? {} : { hold: opts.hold }),
  };
}

/** One stream: its traps are set on the first next(), removed by return() or the signal. */
export function eventStream(hub: EventHub, opts: EventOptions): EventStream {
  const queue = new EventQueue<StreamEvent>();
  /** Held vCPUs not answered yet: they continue when the stream ends. */
  const held = new Set<Respond>();
  let ended = false;
  let member: Promise<Member> | undefined;
  let joined: Member | undefined;
  let started = 0;

  const deliver = (e: EventBody, hold?: Respond) => {
    if (ended) {
      hold?.({ action: "continue" }).catch(() => {});
      return;
    }
    const record = toWire(eventRecord({ ...e, time: Math.round(performance.now() - started) / 1000 }));
    let value: StreamEvent = record;
    if (hold) {
      const respond: Respond = (action) => {
        held.delete(respond);
        return hold(action);
      };
      held.add(respond);
      value = { ...record, respond };
    }
    queue.push(value);
  };
  // The reader gets it after what was queued, once this stream's traps are gone.
  const fail = (error: unknown) => queue.fail(error);
  const finish = async (): Promise<IteratorResult<StreamEvent>> => {
    if (!ended) {
      ended = true;
      // A held vCPU keeps the pump in its dispatch: let it go before leaving the hub.
      for (const respond of [...held]) respond({ action: "continue" }).catch(() => {});
      opts.signal?.removeEventListener("abort", onAbort);
      try {
        const m = await member?.catch(() => undefined);
        if (m) await hub.leave(m);
      } finally {
        queue.end(); // a waiting loop ends once the traps are gone
      }
    }
    return { value: undefined, done: true };
  };
  const onAbort = () => void finish().catch(fail);
  opts.signal?.addEventListener("abort", onAbort);

  const iterator: EventStream = {
    get stops() {
      return joined?.stops ?? 0;
    },
    async next() {
      if (!member && !ended && !opts.signal?.aborted) {
        started = performance.now();
        member = hub.join(opts, deliver, fail);
        try {
          joined = await member;
        } catch (error) {
          await finish();
          throw error;
        }
        opts.onReady?.(joined.engine.traps().length);
      }
      if (opts.signal?.aborted) return finish();
      const value = await queue.take().catch(async (error: unknown) => {
        await finish();
        throw error;
      });
      return value === undefined ? { value: undefined, done: true } : { value, done: false };
    },
    return: finish,
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
