import { TASK_INTERRUPTIBLE, TASK_WAKEKILL } from "../os/linux/task-state.js";
/**
 * The signal arithmetic a kill from outside needs, with no guest access: signal names and
 * numbers (x86-64 Linux), where a signal sits in a `sigset_t`, which thread-info flag says
 * "signal pending", and what the kernel does on its own for each signal. Pure functions, so
 * they can be checked against the kernel's definitions in unit tests.
 */
import { UsageError } from "../util/errors.js";

/** The signals `vmsight kill` sends (numbers from include/uapi/asm-generic/signal.h, x86). */
export const SIGNALS = { KILL: 9, TERM: 15, CONT: 18, STOP: 19 } as const;
export type SignalName = keyof typeof SIGNALS;

/** `_NSIG` on x86-64: 64 signals in a sigset_t of one unsigned long. */
export const NSIG = 64;
const BITS_PER_WORD = 64;

/** "KILL", "kill", "SIGKILL" or "9" → the name; anything else is a usage error. */
export function parseSignal(text: string | undefined): SignalName {
  if (text === undefined) return "KILL";
  const t = text.trim().toUpperCase().replace(/^SIG/, "");
  for (const [name, number] of Object.entries(SIGNALS)) {
    if (t === name || t === String(number)) return name as SignalName;
  }
  throw new UsageError(
    `unknown signal "${text}"`,
    `use one of ${Object.keys(SIGNALS).join(", ")} (or their numbers ${Object.values(SIGNALS).join(", ")})`,
  );
}

/**
 * The word and bit of `sig` in a sigset_t: the kernel's `sigaddset()`, and the blog post's
 * `set.sig[(sig - 1) / 32] |= 1 << ((sig - 1) % 32)` with 64-bit words instead of 32.
 */
export function sigsetBit(sig: number, wordBits = BITS_PER_WORD): { word: number; mask: bigint } {
  if (!Number.isInteger(sig) || sig < 1 || sig > NSIG) {
    throw new UsageError(`signal ${sig} is not in 1..${NSIG}`);
  }
  return { word: Math.floor((sig - 1) / wordBits), mask: 1n << BigInt((sig - 1) % wordBits) };
}

/** `sigaddset` on the raw bytes of a sigset_t (little-endian unsigned longs); returns a copy. */
export function sigaddset(set: Uint8Array, sig: number): Buffer {
  const { word, mask } = sigsetBit(sig);
  const out = Buffer.from(set);
  if ((word + 1) * 8 > out.length)
    throw new UsageError(`sigset of ${out.length} bytes has no room for ${sig}`);
  out.writeBigUInt64LE(out.readBigUInt64LE(word * 8) | mask, word * 8);
  return out;
}

export function sigismember(set: Uint8Array, sig: number): boolean {
  const { word, mask } = sigsetBit(sig);
  const b = Buffer.from(set.buffer, set.byteOffset, set.byteLength);
  if ((word + 1) * 8 > b.length) return false;
  return (b.readBigUInt64LE(word * 8) & mask) !== 0n;
}

/** x86 TIF_SIGPENDING up to at least 6.12 (arch/x86/include/asm/thread_info.h). */
export const TIF_SIGPENDING_X86 = 2;

/**
 * Which bit of `thread_info.flags` is TIF_SIGPENDING, read from the guest's own code rather
 * than assumed: the bit moved (the generic TIF header of later kernels makes it bit 1).
 * `signal_wake_up_state()` starts with `set_tsk_thread_flag(t, TIF_SIGPENDING)`, which x86
 * compiles to `lock orb $MASK, (%rdi)` — f0 80 0f MASK, or 3e 80 0f MASK once the kernel has
 * patched the lock prefix away on a uniprocessor guest. Undefined when no such instruction is
 * found in `code` (the caller then falls back to TIF_SIGPENDING_X86 and says so).
 */
export function tifBitFromCode(code: Uint8Array): number | undefined {
  for (let i = 0; i + 3 < code.length; i++) {
    if ((code[i] === 0xf0 || code[i] === 0x3e) && code[i + 1] === 0x80 && code[i + 2] === 0x0f) {
      const mask = code[i + 3]!;
      if (mask !== 0 && (mask & (mask - 1)) === 0) return Math.log2(mask);
    }
    if (code[i] === 0xc3) break; // first return: past the flag update
  }
  return undefined;
}

/** `flags | 1 << bit` for an unsigned long flags word. */
export function withFlag(flags: bigint, bit: number): bigint {
  return BigInt.asUintN(64, flags | (1n << BigInt(bit)));
}

/** The default action of the signals we send (kernel/signal.c, SIG_KERNEL_*_MASK). */
export function isFatalByDefault(name: SignalName): boolean {
  return name === "KILL" || name === "TERM";
}

/**
 * The sleep states a signal wakes, as `signal_wake_up(t, fatal)` asks `wake_up_state()`:
 * a fatal signal (SIGKILL) also wakes TASK_WAKEKILL sleepers — stopped and killable tasks —
 * others only interruptible ones.
 */
export function wakeStateFor(name: SignalName): number {
  return name === "KILL" ? TASK_WAKEKILL | TASK_INTERRUPTIBLE : TASK_INTERRUPTIBLE;
}

/**
 * `SEND_SIG_PRIV`: the kernel's "sent by the kernel itself" siginfo, `(struct kernel_siginfo *)1`
 * (include/linux/sched/signal.h). It skips the permission check and makes the signal forced.
 */
export const SEND_SIG_PRIV = 1n;

/** An `int` return value in rax (e.g. -ESRCH) as a signed number. */
export function intReturn(rax: bigint): number {
  return Number(BigInt.asIntN(32, rax));
}
