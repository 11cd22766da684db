/**
 * Making the guest kernel call one of its own functions, from outside, through QEMU's gdbstub.
 *
 * The call is made at the entry of a "hook": a `void f(void)` kernel function that runs often in
 * a context where the called function is legal (irq_exit_rcu: hard-IRQ context, RCU watching, no
 * lock held — the context a device interrupt sends signals and wakes tasks from). At a breakpoint
 * there we save every register, point rip at the function, put its arguments in rdi, rsi, …, and
 * push the hook's own entry as its return address. When the function returns it lands on the
 * hook entry again, where the breakpoint stops it; we put every register back and let the hook
 * run as if nothing had happened.
 *
 * Why the hook entry and not an arbitrary stop: at the entry of a no-argument void function the
 * caller already expects every caller-saved register (rax, rcx, rdx, rsi, rdi, r8–r11, flags) to
 * be clobbered and the callee-saved ones (rbx, rbp, r12–r15, rsp) are preserved by any function
 * we call. So even if vmsight dies half-way (connection lost, SIGKILL), the injected function
 * returns into the hook and the guest carries on correctly: restoring registers is tidiness, not
 * what keeps the guest alive. The stack below rsp is free to use: x86-64 kernels are built with
 * -mno-red-zone, and at a function entry the caller's `call` just wrote there anyway. They are
 * also built with -mpreferred-stack-boundary=3, so the 8-byte-aligned rsp a pushed return address
 * gives the callee is the alignment it expects.
 */
import { GENERAL_REGISTERS } from "../arch/x86/registers.js";
import { type AddressBounds, isKernelPointer } from "../os/linux/walk.js";
import {
  type RawTrap,
  type StoppedCpu,
  type TrapClient,
  type TrapCore,
  type TrapStop,
  rawKey,
} from "../qemu/traps.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";

export interface KernelCall {
  /** For messages: "group_send_sig_info". */
  readonly name: string;
  readonly fn: bigint;
  /** At most six, in rdi, rsi, rdx, rcx, r8, r9. */
  readonly args: readonly bigint[];
}

/** Saved and put back around a call: every general register, rip and rflags. */
export const SAVED_REGISTERS = [...GENERAL_REGISTERS, "rip", "eflags"] as const;

export const ARG_REGISTERS = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"] as const;

const U64 = 1n << 64n;

export interface CallFrame {
  /** Register writes that start the call, rip last. */
  readonly registers: readonly (readonly [string, bigint])[];
  /** Where the return address goes (the new rsp) and what it is (the hook's entry). */
  readonly returnSlot: bigint;
  readonly returnAddress: bigint;
  /** rsp once the function has returned: the hook's own rsp. */
  readonly rspAfterReturn: bigint;
}

function need(saved: ReadonlyMap<string, bigint>, name: string): bigint {
  const v = saved.get(name);
  if (v === undefined) throw new VmsightError("E_INJECT_REGS", `register ${name} was not saved`);
  return v;
}

/**
 * The register and stack writes that make the vCPU, stopped at `hook`'s entry with `saved`
 * registers, call `call` and come back to `hook`. Pure: refuses anything but a stop at the hook
 * entry on a kernel stack.
 */
export function planCall(
  saved: ReadonlyMap<string, bigint>,
  call: KernelCall,
  hook: bigint,
  bounds: AddressBounds,
): CallFrame {
  const rip = need(saved, "rip");
  const rsp = need(saved, "rsp");
  if (rip !== hook) {
    throw new VmsightError(
      "E_INJECT_PLACE",
      `the vCPU is at ${hex(rip)}, not at the hook entry ${hex(hook)}`,
    );
  }
  if (!isKernelPointer(rsp, bounds) || rsp % 8n !== 0n) {
    throw new VmsightError("E_INJECT_PLACE", `rsp ${hex(rsp)} is not an aligned kernel stack address`);
  }
  if (!isKernelPointer(call.fn, bounds) || call.fn >= U64) {
    throw new VmsightError("E_INJECT_CALL", `${call.name} at ${hex(call.fn)} is not kernel text`);
  }
  if (call.args.length > ARG_REGISTERS.length) {
    throw new VmsightError(
      "E_INJECT_CALL",
      `${call.name}: ${call.args.length} arguments, at most 6 fit registers`,
    );
  }
  const registers: [string, bigint][] = call.args.map((a, i) => {
    if (a < 0n || a >= U64)
      throw new VmsightError("E_INJECT_CALL", `${call.name}: argument ${i} is not 64-bit`);
    return [ARG_REGISTERS[i]!, a];
  });
  const slot = rsp - 8n;
  registers.push(["rsp", slot], ["rip", call.fn]);
  return { registers, returnSlot: slot, returnAddress: hook, rspAfterReturn: rsp };
}

/** Writes that put every saved register back, in SAVED_REGISTERS order. */
export function planRestore(saved: ReadonlyMap<string, bigint>): [string, bigint][] {
  return SAVED_REGISTERS.map((n) => [n, need(saved, n)]);
}

export function le64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}

export interface TrapContext {
  /** gdb thread id of the vCPU at the hook. */
  readonly thread: string;
  readonly registers: ReadonlyMap<string, bigint>;
}

/** What to do at a trap: make these calls, or let this one pass and wait for the next. */
export type TrapDecision = { readonly calls: readonly KernelCall[] } | "skip";

export interface InjectOptions {
  /** Entry of a `void f(void)` kernel function that runs often in a safe context. */
  readonly hook: bigint;
  /** The guest's kernel half (its paging mode): stacks and text must lie there. */
  readonly bounds: AddressBounds;
  /** Called with the VM stopped at the hook: the last moment to check guest state. */
  onTrap(ctx: TrapContext): Promise<TrapDecision> | TrapDecision;
  /** How long to wait for the hook to run (default 5 s). */
  readonly trapTimeoutMs?: number;
  /** How long one call may take (default 2 s; they take microseconds). */
  readonly callTimeoutMs?: number;
  /** Traps onTrap may skip before giving up (default 20). */
  readonly maxSkips?: number;
  /** Aborts the wait for the hook; a call already running is let finish first. */
  readonly signal?: AbortSignal;
}

export interface CallResult {
  readonly name: string;
  readonly rax: bigint;
  readonly ms: number;
}

export interface InjectResult {
  readonly thread: string;
  /** From resuming the guest to the stop at the hook. */
  readonly trapMs: number;
  readonly calls: readonly CallResult[];
  /** Other vCPUs stepped past the hook while a call ran. */
  readonly passedThrough: number;
}

/** Other vCPUs passing the hook during one call; more means something loops on it. */
const MAX_PASS_THROUGH = 64;

/**
 * Makes the calls onTrap asks for at the next stop at `hook`, then puts registers back and
 * removes the breakpoint. Expects the VM stopped (a gdb client connected) and leaves it stopped
 * at the hook entry. On every error path the breakpoint is removed; registers are put back
 * unless a call is still running, in which case it is left to return into the hook by itself.
 */
export async function injectCalls(core: TrapCore, opts: InjectOptions): Promise<InjectResult> {
  if (opts.signal?.aborted) throw aborted();
  const traps = core.client("inject");
  await traps.insert(hookTrap(opts.hook));
  const state: CallState = { inCall: false };
  let failure: unknown;
  try {
    return await run(core, opts, state);
  } catch (error) {
    failure = error;
    throw error;
  } finally {
    await cleanUp(core.cpu, traps, opts.hook, state, failure);
  }
}

interface CallState {
  thread?: string;
  saved?: Map<string, bigint>;
  inCall: boolean;
}

async function run(core: TrapCore, opts: InjectOptions, state: CallState): Promise<InjectResult> {
  const hook = opts.hook;
  const cpu = core.cpu;
  const t0 = performance.now();
  const deadline = t0 + (opts.trapTimeoutMs ?? 5000);
  let calls: readonly KernelCall[] | undefined;
  let thread = "";
  for (let skips = 0; calls === undefined; skips++) {
    if (skips > (opts.maxSkips ?? 20)) {
      throw new VmsightError("E_INJECT_BUSY", `gave up after ${skips - 1} traps the guest was not ready at`);
    }
    if (skips > 0) {
      // Nothing was changed at the skipped trap: forget its registers, step off the breakpoint.
      state.saved = undefined;
      await core.step(thread);
    }
    const w = await nextStop(core, hookTrap(hook), deadline, opts.signal);
    const at = await whereStopped(cpu, w.stop);
    if (at.rip !== hook) {
      if (w.aborted) throw aborted();
      if (w.timedOut) {
        throw new VmsightError("E_INJECT_TIMEOUT", `the guest did not reach ${hex(hook)} in time`, {
          hint: "it runs on every interrupt; a guest that takes none is hung or fully idle",
        });
      }
      throw new VmsightError("E_INJECT_STOP", `the guest stopped at ${hex(at.rip)}, not at the hook`);
    }
    thread = at.thread;
    state.thread = thread;
    state.saved = await cpu.readRegisters();
    const decision = await opts.onTrap({ thread, registers: state.saved });
    if (decision !== "skip") calls = decision.calls;
  }
  const trapMs = performance.now() - t0;
  const saved = state.saved!;
  const results: CallResult[] = [];
  let passedThrough = 0;
  for (const call of calls) {
    const frame = planCall(saved, call, hook, opts.bounds);
    const c0 = performance.now();
    await cpu.selectThread("g", thread);
    await cpu.writeMemory(frame.returnSlot, le64(frame.returnAddress));
    for (const [name, value] of frame.registers) await cpu.writeRegister(name, value);
    state.inCall = true;
    passedThrough += await waitReturn(core, thread, hook, frame.rspAfterReturn, opts.callTimeoutMs ?? 2000);
    state.inCall = false;
    results.push({ name: call.name, rax: await cpu.readRegister("rax"), ms: performance.now() - c0 });
  }
  return { thread, trapMs, calls: results, passedThrough };
}

/** Runs the guest until our call comes back; other vCPUs reaching the hook are stepped past it. */
async function waitReturn(
  core: TrapCore,
  thread: string,
  hook: bigint,
  rsp: bigint,
  timeoutMs: number,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (let passed = 0; passed <= MAX_PASS_THROUGH; passed++) {
    const w = await nextStop(core, hookTrap(hook), deadline, undefined);
    const at = await whereStopped(core.cpu, w.stop);
    if (at.thread === thread && at.rip === hook && (await core.cpu.readRegister("rsp")) === rsp)
      return passed;
    if (at.rip === hook && !w.timedOut) {
      await core.step(at.thread);
      continue;
    }
    throw new VmsightError(
      w.timedOut ? "E_INJECT_TIMEOUT" : "E_INJECT_STOP",
      `the injected call did not come back (vCPU stopped at ${hex(at.rip)})`,
      { hint: "it was left to return into the hook by itself, which is harmless" },
    );
  }
  throw new VmsightError(
    "E_INJECT_STOP",
    `other vCPUs passed the hook ${MAX_PASS_THROUGH} times during one call`,
  );
}

async function cleanUp(
  cpu: StoppedCpu,
  traps: TrapClient,
  hook: bigint,
  state: CallState,
  failure: unknown,
): Promise<void> {
  const problems: string[] = [];
  if (state.saved && state.thread !== undefined && !state.inCall) {
    try {
      await cpu.selectThread("g", state.thread);
      for (const [name, value] of planRestore(state.saved)) await cpu.writeRegister(name, value);
    } catch (e) {
      problems.push(`registers not restored: ${(e as Error).message}`);
    }
  }
  try {
    await traps.release();
  } catch (e) {
    problems.push(`breakpoint at ${hex(hook)} not removed: ${(e as Error).message}`);
  }
  if (problems.length > 0 && failure === undefined) {
    throw new VmsightError("E_INJECT_CLEANUP", problems.join("; "), {
      hint: "detaching the gdb client (closing vmsight) makes QEMU drop its breakpoints",
    });
  }
}

function aborted(): VmsightError {
  return new VmsightError("E_INTERRUPTED", "interrupted before anything was sent; the guest is as it was");
}

function hookTrap(addr: bigint): RawTrap {
  return { type: 0, addr, kind: 1 };
}

/**
 * The next stop that is the call's business. Other clients of the trap core (event streams)
 * keep their traps while a call is made: a stop at theirs is handed to them, and an interrupt
 * the core made for their queued work (reads, trap changes) has already served it. Neither ends
 * the wait; without other clients neither happens.
 */
async function nextStop(
  core: TrapCore,
  hook: RawTrap,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<Waited> {
  const key = rawKey(hook);
  for (;;) {
    const w = await waitStop(core, deadline - performance.now(), signal);
    if (w.timedOut || w.aborted) return w;
    if (w.stop.hits.length > 0) await core.dispatch(w.stop);
    if (w.stop.hits.some((h) => rawKey(h) === key)) return w;
    if (w.stop.hits.length === 0 && !w.stop.forWork) return w;
  }
}

interface Waited {
  readonly stop: TrapStop;
  readonly timedOut: boolean;
  readonly aborted: boolean;
}

/** Resumes the guest until it stops by itself, or interrupts it at the deadline or on abort. */
async function waitStop(core: TrapCore, timeoutMs: number, signal: AbortSignal | undefined): Promise<Waited> {
  let timedOut = false;
  let wasAborted = false;
  const stop = core.resume();
  const timer = setTimeout(
    () => {
      timedOut = true;
      core.interrupt();
    },
    Math.max(0, timeoutMs),
  );
  const onAbort = () => {
    wasAborted = true;
    core.interrupt();
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return { stop: await stop, timedOut, aborted: wasAborted };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

async function whereStopped(cpu: StoppedCpu, stop: TrapStop): Promise<{ thread: string; rip: bigint }> {
  const reply = stop.reply;
  if (reply.type !== "signal") {
    throw new VmsightError("E_INJECT_STOP", `the guest ended (${reply.type}) while a call was being made`);
  }
  const thread = reply.thread ?? "";
  if (thread !== "") await cpu.selectThread("g", thread);
  return { thread, rip: stop.rip ?? (await cpu.readRegister("rip")) };
}
