import { type SignalName, isFatalByDefault } from "../events/kill-signals.js";
import {
  type Delivery,
  type KillMethod,
  type KillTarget,
  checkMethod,
  findKillTarget,
  sendByCall,
  siglockHeld,
  writeAndWake,
  writeSignal,
} from "../events/kill.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { listTasks, listThreads } from "../os/linux/tasks.js";
import type { RunState, Target } from "../qemu/session.js";
import type { TrapCore } from "../qemu/traps.js";
import { VmsightError } from "../util/errors.js";
/**
 * `vmsight kill`: signal a guest process from outside and watch what becomes of it.
 *
 * The guest is stopped while it is examined and while memory is changed (the gdb connection
 * stops it), runs for the injected call, and then runs on while we look, every few ms with the
 * VM briefly paused so each look is a consistent snapshot, until the process is gone (reaped),
 * stopped or continued, or the timeout passes. The guest's run state is put back at the end: a
 * guest that was paused runs only for the kill and is paused again. While event streams trace
 * the guest, their pump runs it instead and the kill takes turns with it (KillRun), so that
 * they go on seeing events, the killed process's exit among them.
 */
import { openKernel } from "./linux.js";

export interface KillOptions {
  readonly pid: number;
  readonly signal: SignalName;
  readonly method: KillMethod;
  readonly force?: boolean;
  /** How long to watch for the outcome after delivery (default 2000 ms). */
  readonly timeoutMs?: number;
  /** How long to wait for the guest to reach the call site (default 5000 ms). */
  readonly trapTimeoutMs?: number;
  readonly abort?: AbortSignal;
  readonly log?: (line: string) => void;
}

export type Outcome = "gone" | "zombie" | "stopped" | "continued" | "alive" | "not-delivered";

export interface KillReport {
  readonly pid: number;
  readonly name: string;
  readonly threads: number;
  readonly delivery: Delivery;
  /** What we saw last, and whether it is what the signal should do. */
  readonly outcome: Outcome;
  readonly expected: boolean;
  /** ms after the guest resumed with the signal sent: first seen exiting, gone from the list. */
  readonly exitedAfterMs?: number;
  readonly goneAfterMs?: number;
  readonly stoppedAfterMs?: number;
  readonly continuedAfterMs?: number;
  readonly parent: number;
  readonly timeoutMs: number;
  /** Ctrl-C or SIGTERM ended the watch early (the signal itself had been sent). */
  readonly interrupted?: boolean;
}

const POLL_MS = 10;
/** Pause–look–resume rounds while waiting for the siglock to be free. */
const MAX_LOCK_WAITS = 200;
const PF_EXITING = 0x4;

/**
 * How a kill stops the guest and lets it run. Alone it uses QMP (qmpKillRun); while event
 * streams run, their pump drives the guest and the kill takes turns with it, so the streams go
 * on seeing events (the killed process's exit among them).
 */
export interface KillRun {
  /** The guest kernel, read with the guest stopped. */
  kernel(): Promise<KernelInfo>;
  /** Runs `fn` with the guest stopped and the trap core to itself; the guest runs on afterwards. */
  deliver<T>(fn: (traps: TrapCore) => Promise<T>): Promise<T>;
  /** Lets the guest, stopped in deliver(), run for about a millisecond. */
  runBriefly(traps: TrapCore): Promise<void>;
  /** Runs `fn` on a consistent guest: stopped for the few ms it takes, running on afterwards. */
  look<T>(fn: () => T): Promise<T>;
  /** Puts the run state back once the kill is over. */
  finish(): Promise<void>;
}

/**
 * The kill with the guest to itself: stopped through QMP while it is examined, run for the call,
 * paused for each look, and left in the run state it had.
 */
export function qmpKillRun(target: Target): KillRun {
  let before: RunState | undefined;
  return {
    kernel: () => openKernel(target),
    async deliver(fn) {
      before = await target.runState();
      // Connecting the gdb client stops the VM; one connected earlier (a library user's Vm that
      // listed processes and let the guest run on) is answered only by a stopped VM.
      if (before.running) await target.qmp.execute("stop");
      // Target.gdb() has already sent `?`, which drops any breakpoint an earlier, killed vmsight left.
      const result = await fn(await target.traps());
      await target.qmp.execute("cont");
      return result;
    },
    async runBriefly() {
      await target.qmp.execute("cont");
      await sleep(1);
      await target.qmp.execute("stop");
    },
    async look(fn) {
      await target.qmp.execute("stop");
      try {
        return fn();
      } finally {
        await target.qmp.execute("cont");
      }
    },
    async finish() {
      if (before) await (before.running ? target.resume() : target.pause());
    },
  };
}

/**
 * Lets the guest, stopped at the trap core, run for about a millisecond; stops at other clients'
 * traps meanwhile are handed to them.
 */
export async function runBriefly(traps: TrapCore): Promise<void> {
  const stopped = traps.resume();
  const timer = setTimeout(() => traps.interrupt(), 1);
  try {
    const stop = await stopped;
    if (stop.hits.length > 0) await traps.dispatch(stop);
  } finally {
    clearTimeout(timer);
  }
}

export async function killProcess(
  target: Target,
  opts: KillOptions,
  run: KillRun = qmpKillRun(target),
): Promise<KillReport> {
  checkMethod(opts.method, opts.signal);
  try {
    const { k, kt, delivery } = await run.deliver((traps) => deliver(run, traps, opts));
    opts.log?.(
      `pid ${kt.pid}: SIG${opts.signal} sent (${opts.method}); watching for up to ${opts.timeoutMs ?? 2000} ms`,
    );
    return await watch(run, k, kt, delivery, opts);
  } finally {
    await run.finish();
  }
}

/** Finds the process and sends the signal, the guest stopped. */
async function deliver(run: KillRun, traps: TrapCore, opts: KillOptions) {
  const k = await run.kernel();
  const kt = findKillTarget(k, opts.pid, opts.force === undefined ? {} : { force: opts.force });
  const env = {
    traps,
    k,
    ...(opts.abort ? { abort: opts.abort } : {}),
    ...(opts.trapTimeoutMs === undefined ? {} : { trapTimeoutMs: opts.trapTimeoutMs }),
  };
  let delivery: Delivery;
  if (opts.method === "send") delivery = await sendByCall(env, kt, opts.signal);
  else if (opts.method === "wake") delivery = await writeAndWake(env, kt, opts.signal);
  else {
    await untilSiglockFree(run, traps, k, kt);
    delivery = writeSignal(k, kt, opts.signal);
  }
  return { k, kt, delivery };
}

async function untilSiglockFree(run: KillRun, traps: TrapCore, k: KernelInfo, kt: KillTarget): Promise<void> {
  for (let i = 0; i < MAX_LOCK_WAITS; i++) {
    if (!siglockHeld(k, kt)) return;
    await run.runBriefly(traps);
  }
  throw new VmsightError("E_BUSY", `the signal lock of pid ${kt.pid} stayed held`, {
    hint: "the process is busy with signals; try again or use --method send",
  });
}

interface Look {
  readonly present: boolean;
  readonly exiting: boolean;
  readonly stopped: boolean;
  readonly anyStopped: boolean;
}

/** One look at the process, on a guest stopped for it. */
function look(k: KernelInfo, kt: KillTarget): Look {
  const leader = listTasks(k).find((t) => t.addr === kt.leader.addr && t.pid === kt.leader.pid);
  if (!leader) return { present: false, exiting: true, stopped: false, anyStopped: false };
  const threads = listThreads(k, leader);
  return {
    present: true,
    exiting: leader.exitState !== 0 || (leader.flags & PF_EXITING) !== 0,
    stopped: threads.every((t) => t.state === "T"),
    anyStopped: threads.some((t) => t.state === "T"),
  };
}

async function watch(
  run: KillRun,
  k: KernelInfo,
  kt: KillTarget,
  delivery: Delivery,
  opts: KillOptions,
): Promise<KillReport> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const base = {
    pid: kt.pid,
    name: kt.leader.name,
    threads: kt.threads.length,
    delivery,
    parent: kt.leader.ppid,
    timeoutMs,
  };
  if (!delivery.delivered) return { ...base, outcome: "not-delivered", expected: false };
  const t0 = performance.now();
  const times: { exited?: number; gone?: number; stopped?: number; continued?: number } = {};
  let last: Look | undefined;
  while (performance.now() - t0 <= timeoutMs) {
    if (opts.abort?.aborted) break;
    last = await run.look(() => look(k, kt));
    const at = Math.round(performance.now() - t0);
    if (last.exiting) times.exited ??= at;
    if (!last.present) times.gone ??= at;
    if (last.stopped) times.stopped ??= at;
    if (!last.anyStopped) times.continued ??= at;
    if (done(opts.signal, last)) break;
    await sleep(POLL_MS);
  }
  const outcome = outcomeOf(opts.signal, last);
  return {
    ...base,
    ...(opts.abort?.aborted ? { interrupted: true } : {}),
    outcome,
    expected: expectedOutcome(opts.signal).includes(outcome),
    ...(times.exited === undefined ? {} : { exitedAfterMs: times.exited }),
    ...(times.gone === undefined ? {} : { goneAfterMs: times.gone }),
    ...(times.stopped === undefined || opts.signal !== "STOP" ? {} : { stoppedAfterMs: times.stopped }),
    ...(times.continued === undefined || opts.signal !== "CONT" ? {} : { continuedAfterMs: times.continued }),
  };
}

function done(signal: SignalName, l: Look): boolean {
  if (isFatalByDefault(signal)) return !l.present;
  return signal === "STOP" ? l.stopped || !l.present : !l.anyStopped || !l.present;
}

function outcomeOf(signal: SignalName, l: Look | undefined): Outcome {
  if (!l) return "alive";
  if (!l.present) return "gone";
  if (l.exiting) return "zombie";
  if (signal === "STOP" && l.stopped) return "stopped";
  if (signal === "CONT" && !l.anyStopped) return "continued";
  return "alive";
}

export function expectedOutcome(signal: SignalName): readonly Outcome[] {
  if (isFatalByDefault(signal)) return ["gone", "zombie"];
  return signal === "STOP" ? ["stopped"] : ["continued"];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The report as `kill --json` prints it and vm.kill() returns it (after toWire). */
export function killRecord(r: KillReport): KillReport {
  const { delivery: d, ...rest } = r;
  return { ...rest, delivery: { ...d, writes: d.writes.map((w) => ({ ...w })) } };
}

/** What describeKill reads: a KillReport, or the same as vm.kill() returns it (no bigints used). */
type KillSummary = Omit<KillReport, "delivery"> & {
  readonly delivery: Omit<Delivery, "writes"> & { readonly writes: readonly unknown[] };
};

const HOW: Record<KillMethod, string> = {
  send: "the guest kernel's own",
  wake: "memory writes (pending set + TIF_SIGPENDING) and",
  memory: "memory writes only (pending set + TIF_SIGPENDING)",
};

/** The human-readable report: one line for what was done, one for what came of it. */
export function describeKill(r: KillSummary): string[] {
  const d = r.delivery;
  const sig = `SIG${d.signal}`;
  const who = `pid ${r.pid} (${r.name}${r.threads > 1 ? `, ${r.threads} threads` : ""})`;
  const trap = d.trapMs === undefined ? "" : `; call site reached after ${Math.round(d.trapMs)} ms`;
  const lines: string[] = [];
  if (d.method === "send") {
    const res = d.called ? ` = ${d.called.result}` : " not made: the process went away first";
    lines.push(`${sig} -> ${who}: ${HOW.send} ${d.called?.name ?? "group_send_sig_info"}()${res}${trap}`);
  } else {
    const woke = d.woke ? `, wake_up_state(thread ${d.woke.tid}) = ${d.woke.result}` : "";
    const how = d.method === "wake" ? `${HOW.wake} a wake-up${woke}` : HOW.memory;
    lines.push(`${sig} -> ${who}: ${how}, ${d.writes.length} word(s) written${trap}`);
  }
  lines.push(outcomeLine(r));
  return lines;
}

function outcomeLine(r: KillSummary): string {
  const after = (ms: number | undefined) => (ms === undefined ? "" : ` after ${ms} ms`);
  switch (r.outcome) {
    case "gone":
      return `gone${after(r.goneAfterMs)}: exited and reaped, no longer in the task list`;
    case "zombie":
      return `exited${after(r.exitedAfterMs)}; a zombie until its parent (pid ${r.parent}) reaps it`;
    case "stopped":
      return `stopped${after(r.stoppedAfterMs)}`;
    case "continued":
      return `running again${after(r.continuedAfterMs)}`;
    case "not-delivered":
      return "not delivered";
    default:
      if (r.interrupted)
        return "interrupted while watching: the signal was sent, the outcome is not known yet";
      return r.delivery.method === "memory"
        ? `still alive after ${r.timeoutMs} ms: the signal stays pending until the process runs (a blocked one is never woken by memory writes alone; --method wake or send wakes it)`
        : `still alive after ${r.timeoutMs} ms (it may handle, block or ignore SIG${r.delivery.signal})`;
  }
}
