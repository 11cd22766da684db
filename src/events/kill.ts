/**
 * Sending a signal to a guest process from outside the guest, three ways.
 *
 *   send    (default) the guest kernel's own `group_send_sig_info(sig, SEND_SIG_PRIV, task,
 *           PIDTYPE_TGID)`, called through an injected call (events/inject.ts). That is the
 *           function kill(2) ends in, minus the permission check: it queues the signal, runs
 *           prepare_signal() (SIGCONT wakes a stopped group, SIGSTOP flushes SIGCONT) and
 *           complete_signal() (a fatal signal marks SIGNAL_GROUP_EXIT, queues SIGKILL to every
 *           thread and wakes each with TASK_WAKEKILL), so blocked and stopped tasks die too.
 *   wake    the blog post's method (4) done by memory writes, plus the one thing it lacks: a
 *           wake-up. We set the signal in signal->shared_pending (where kill(2)'s group
 *           delivery puts it) and TIF_SIGPENDING in every thread's thread_info.flags, then call
 *           `wake_up_state(thread, state)` the way signal_wake_up() would.
 *   memory  method (4) exactly as the post describes: the memory writes only. A task already
 *           running dies at its next return to user mode; a blocked one does not (the post's
 *           stated limitation), until something else wakes it.
 *
 * Why the memory methods write only the pending bit and TIF_SIGPENDING, not the rest of what
 * complete_signal() does for SIGKILL (SIGNAL_GROUP_EXIT, group_exit_code, SIGKILL in every
 * thread's private set): the first thread that runs get_signal() dequeues the shared SIGKILL,
 * finds it fatal and calls do_group_exit(), which sets SIGNAL_GROUP_EXIT and group_exit_code
 * itself and zap_other_threads() queues SIGKILL to, and properly wakes, every other thread. A
 * shared SIGKILL without SIGNAL_GROUP_EXIT is a state the kernel produces itself (when
 * complete_signal() cannot pick a thread), so it handles it; setting SIGNAL_GROUP_EXIT from
 * outside would instead make prepare_signal() drop every later signal, including a real kill,
 * while no thread has yet begun to exit.
 */
import type { KernelInfo } from "../os/linux/kernel.js";
import { type TaskInfo, listAllThreads, listTasks, listThreads, readTask } from "../os/linux/tasks.js";
import { checkKernelPointer, isKernelPointer } from "../os/linux/walk.js";
import type { TrapCore } from "../qemu/traps.js";
import { type VirtAddr, hex, va } from "../util/address.js";
import { GuestDataError, UsageError, VmsightError } from "../util/errors.js";
import { type InjectResult, type KernelCall, injectCalls } from "./inject.js";
import {
  SEND_SIG_PRIV,
  SIGNALS,
  type SignalName,
  TIF_SIGPENDING_X86,
  intReturn,
  sigismember,
  sigsetBit,
  tifBitFromCode,
  wakeStateFor,
  withFlag,
} from "./kill-signals.js";

export const KILL_METHODS = ["send", "wake", "memory"] as const;
export type KillMethod = (typeof KILL_METHODS)[number];

/** Runs on every hardware interrupt and system vector, in hard-IRQ context with no lock held. */
export const DEFAULT_HOOK = "irq_exit_rcu";

export interface KillTarget {
  /** The pid asked for (a thread id names its whole process, as with kill(1)). */
  readonly pid: number;
  readonly leader: TaskInfo;
  /** Every thread, the leader first. */
  readonly threads: readonly TaskInfo[];
}

/** Finds the process `pid` belongs to and refuses what must not be killed without --force. */
export function findKillTarget(k: KernelInfo, pid: number, opts: { force?: boolean } = {}): KillTarget {
  const leaders = listTasks(k);
  let leader = leaders.find((t) => t.pid === pid);
  if (!leader) {
    const thread = listAllThreads(k).find((t) => t.pid === pid);
    leader = thread && leaders.find((t) => t.pid === thread.tgid);
  }
  if (!leader) {
    throw new VmsightError("E_NO_PROCESS", `no process with pid ${pid} in the guest`, {
      hint: "`vmsight ps` lists them",
    });
  }
  const what = `pid ${pid} (${leader.name})`;
  if (leader.tgid === 1 && !opts.force) {
    throw new VmsightError("E_REFUSED", `${what} is init: the guest kernel panics when it dies`, {
      hint: "add --force to do it anyway",
    });
  }
  if (leader.isKernelThread && !opts.force) {
    throw new VmsightError("E_REFUSED", `${what} is a kernel thread, not a process`, {
      hint: "kernel threads ignore most signals and some keep the guest working; add --force to try anyway",
    });
  }
  if (leader.exitState !== 0) {
    throw new VmsightError("E_EXITING", `${what} has already exited (state ${leader.state})`, {
      hint: `its parent (pid ${leader.ppid}) has not reaped it yet`,
    });
  }
  return { pid, leader, threads: listThreads(k, leader) };
}

/** Refuses combinations that cannot work, before anything is attached. */
export function checkMethod(method: KillMethod, signal: SignalName): void {
  if (method !== "send" && signal === "CONT") {
    throw new UsageError(
      "SIGCONT cannot be sent by memory writes",
      "continuing a stopped process is prepare_signal()'s work in the guest kernel: use --method send",
    );
  }
}

interface SignalOffsets {
  readonly flags: number;
  readonly signal: number;
  readonly sighand: number;
  readonly blocked: number;
  readonly sharedPending: number;
  readonly siglock: number;
}

function signalOffsets(k: KernelInfo): SignalOffsets {
  const L = k.layout;
  return {
    flags: L.offsetof("task_struct", "thread_info.flags"),
    signal: L.offsetof("task_struct", "signal"),
    sighand: L.offsetof("task_struct", "sighand"),
    blocked: L.offsetof("task_struct", "blocked"),
    sharedPending: L.offsetof("signal_struct", "shared_pending.signal"),
    siglock: L.offsetof("sighand_struct", "siglock"),
  };
}

function pointerAt(k: KernelInfo, addr: bigint, what: string): VirtAddr {
  return checkKernelPointer(k.kernel.readU64(va(addr)), k.bounds, what);
}

/** One 8-byte guest write, with the value it replaces so it can be checked and reported. */
export interface MemoryWrite {
  readonly what: string;
  readonly addr: bigint;
  readonly before: bigint;
  readonly after: bigint;
}

/** What the memory methods read before writing, so the write plan itself is pure. */
export interface SignalState {
  /** Address and value of signal->shared_pending.signal (x86-64: one unsigned long). */
  readonly shared: { readonly addr: bigint; readonly value: bigint };
  /** thread_info.flags of every thread. */
  readonly threads: readonly { readonly tid: number; readonly addr: bigint; readonly flags: bigint }[];
}

/** The post's two writes, for a whole process: the signal in the shared set, TIF_SIGPENDING everywhere. */
export function planSignalWrites(state: SignalState, sig: number, tifBit: number): MemoryWrite[] {
  const { word, mask } = sigsetBit(sig);
  if (word !== 0) throw new UsageError(`signal ${sig} is not in the first sigset word`);
  const writes: MemoryWrite[] = [];
  const shared = state.shared.value | mask;
  if (shared !== state.shared.value) {
    writes.push({
      what: "signal->shared_pending.signal",
      addr: state.shared.addr,
      before: state.shared.value,
      after: shared,
    });
  }
  for (const t of state.threads) {
    const after = withFlag(t.flags, tifBit);
    if (after !== t.flags) {
      writes.push({ what: `thread ${t.tid} thread_info.flags`, addr: t.addr, before: t.flags, after });
    }
  }
  return writes;
}

export function readSignalState(k: KernelInfo, target: KillTarget): SignalState {
  const o = signalOffsets(k);
  const signal = pointerAt(k, target.leader.addr + BigInt(o.signal), `task ${target.pid} ->signal`);
  const sharedAddr = signal + BigInt(o.sharedPending);
  return {
    shared: { addr: sharedAddr, value: k.kernel.readU64(va(sharedAddr)) },
    threads: target.threads.map((t) => {
      const addr = t.addr + BigInt(o.flags);
      return { tid: t.pid, addr, flags: k.kernel.readU64(va(addr)) };
    }),
  };
}

/** Writes with the VM stopped; each target word is checked to still hold what the plan read. */
export function applyWrites(k: KernelInfo, writes: readonly MemoryWrite[]): void {
  for (const w of writes) {
    const now = k.kernel.readU64(va(w.addr));
    if (now !== w.before) {
      throw new GuestDataError(
        `${w.what} changed from ${hex(w.before)} to ${hex(now)} while the VM was stopped`,
      );
    }
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(w.after);
    k.kernel.write(va(w.addr), b);
  }
}

/**
 * Whether some CPU is inside a sighand->siglock section of this process. Our read-modify-writes
 * of the pending set are only atomic with respect to the kernel's when nobody holds the lock:
 * a CPU stopped half-way through its own update would write its stale copy back.
 */
export function siglockHeld(k: KernelInfo, target: KillTarget): boolean {
  const o = signalOffsets(k);
  const sighand = pointerAt(k, target.leader.addr + BigInt(o.sighand), `task ${target.pid} ->sighand`);
  return k.kernel.readU32(va(sighand + BigInt(o.siglock))) !== 0;
}

/** TIF_SIGPENDING's bit, from the guest's signal_wake_up_state() when it can be read. */
export function tifSigpendingBit(k: KernelInfo): { bit: number; from: string } {
  const fn = k.symbols.findAddress("signal_wake_up_state");
  if (fn !== undefined) {
    try {
      const bit = tifBitFromCode(k.kernel.read(va(fn), 96));
      if (bit !== undefined) return { bit, from: "signal_wake_up_state() code" };
    } catch (error) {
      if (!(error instanceof VmsightError)) throw error;
    }
  }
  return { bit: TIF_SIGPENDING_X86, from: "x86 default" };
}

/** True while the task is still on the task list under the same pid and has not begun to exit. */
export function stillThere(k: KernelInfo, target: KillTarget): boolean {
  const t = listTasks(k).find((x) => x.addr === target.leader.addr);
  return t !== undefined && t.pid === target.leader.pid && t.exitState === 0;
}

export interface Delivery {
  readonly method: KillMethod;
  readonly signal: SignalName;
  /** The kernel function called, if any, and what it returned (an int; 0 is success). */
  readonly called?: { readonly name: string; readonly result: number };
  readonly woke?: { readonly tid: number; readonly result: number };
  readonly writes: readonly MemoryWrite[];
  readonly tifBit?: { readonly bit: number; readonly from: string };
  /** Waiting for the hook, and the calls made there (ms). */
  readonly trapMs?: number;
  readonly callMs?: number;
  /** False when the process vanished before the signal could be sent. */
  readonly delivered: boolean;
}

export interface InjectEnv {
  readonly traps: TrapCore;
  readonly k: KernelInfo;
  readonly abort?: AbortSignal;
  readonly trapTimeoutMs?: number;
}

/** What every injection of this file shares: the kernel half, the abort signal, the trap wait. */
function injectLimits(env: InjectEnv) {
  return {
    bounds: env.k.bounds,
    ...(env.abort ? { signal: env.abort } : {}),
    ...(env.trapTimeoutMs === undefined ? {} : { trapTimeoutMs: env.trapTimeoutMs }),
  };
}

function symbol(k: KernelInfo, ...names: string[]): { name: string; addr: bigint } {
  for (const name of names) {
    const addr = k.symbols.findAddress(name);
    if (addr !== undefined) return { name, addr };
  }
  throw new VmsightError("E_SYMBOL_UNKNOWN", `the guest kernel has none of ${names.join(", ")}`);
}

function injected(r: InjectResult): { trapMs: number; callMs: number } {
  return { trapMs: r.trapMs, callMs: r.calls.reduce((s, c) => s + c.ms, 0) };
}

/** Method "send": the guest kernel sends the signal itself, exactly as kill(2) would. */
export async function sendByCall(env: InjectEnv, target: KillTarget, signal: SignalName): Promise<Delivery> {
  const { k } = env;
  const hook = symbol(k, DEFAULT_HOOK).addr;
  const fn = symbol(k, "group_send_sig_info", "do_send_sig_info");
  const tgid = k.layout.findEnumValue("PIDTYPE_TGID") ?? 1n;
  const call: KernelCall = {
    name: fn.name,
    fn: fn.addr,
    args: [BigInt(SIGNALS[signal]), SEND_SIG_PRIV, target.leader.addr, tgid],
  };
  let vanished = false;
  const r = await injectCalls(env.traps, {
    hook,
    ...injectLimits(env),
    // The task_struct pointer is only safe to pass while the task is still listed: it is freed
    // an RCU grace period after it leaves the list, and none can end while this CPU is in the
    // hard-IRQ context the hook runs in.
    onTrap: () => {
      vanished = !stillThere(k, target);
      return { calls: vanished ? [] : [call] };
    },
  });
  const result = r.calls[0];
  return {
    method: "send",
    signal,
    writes: [],
    ...(result ? { called: { name: fn.name, result: intReturn(result.rax) } } : {}),
    ...injected(r),
    delivered: !vanished && result !== undefined && intReturn(result.rax) === 0,
  };
}

/** The thread to wake: one that sleeps in a state the signal wakes and does not block it. */
function threadToWake(k: KernelInfo, target: KillTarget, signal: SignalName): TaskInfo | undefined {
  const o = signalOffsets(k);
  const state = wakeStateFor(signal);
  for (const t of target.threads) {
    const now = readTask(k, t.addr);
    if ((now.stateValue & state) === 0 || now.exitState !== 0) continue;
    const blocked = k.kernel.read(va(t.addr + BigInt(o.blocked)), 8);
    if (signal === "KILL" || !sigismember(blocked, SIGNALS[signal])) return now;
  }
  return undefined;
}

/** Methods "memory" (wake=false) and "wake". The VM must be stopped and the siglock free. */
export function writeSignal(k: KernelInfo, target: KillTarget, signal: SignalName): Delivery {
  const tif = tifSigpendingBit(k);
  const writes = planSignalWrites(readSignalState(k, target), SIGNALS[signal], tif.bit);
  applyWrites(k, writes);
  return { method: "memory", signal, writes, tifBit: tif, delivered: true };
}

/** Method "wake": the memory writes at a trap, then one wake_up_state() as signal_wake_up() does. */
export async function writeAndWake(
  env: InjectEnv,
  target: KillTarget,
  signal: SignalName,
): Promise<Delivery> {
  const { k } = env;
  const hook = symbol(k, DEFAULT_HOOK).addr;
  const wake = symbol(k, "wake_up_state");
  let written: Delivery | undefined;
  let woken: TaskInfo | undefined;
  const r = await injectCalls(env.traps, {
    hook,
    ...injectLimits(env),
    onTrap: () => {
      if (!stillThere(k, target)) return { calls: [] };
      if (siglockHeld(k, target)) return "skip";
      written = writeSignal(k, target, signal);
      // One wake-up is enough: the woken thread's get_signal() does the group's work (see top).
      woken = threadToWake(k, target, signal);
      return {
        calls: woken
          ? [{ name: wake.name, fn: wake.addr, args: [woken.addr, BigInt(wakeStateFor(signal))] }]
          : [],
      };
    },
  });
  const call = r.calls[0];
  return {
    method: "wake",
    signal,
    writes: written?.writes ?? [],
    ...(written?.tifBit ? { tifBit: written.tifBit } : {}),
    ...(woken && call ? { woke: { tid: woken.pid, result: intReturn(call.rax) } } : {}),
    ...injected(r),
    delivered: written !== undefined,
  };
}
