/**
 * The one-letter task state that /proc/<pid>/stat prints, computed the way the kernel's
 * `__task_state_index()` (include/linux/sched.h) and `task_state_array` (fs/proc/array.c) do.
 *
 * Bit values are the same in 6.1 and 6.12 (include/linux/sched.h). The exit bits live in
 * `task->exit_state`, the others in `task->__state` (`state` before 5.14).
 */
export const TASK_RUNNING = 0x0000;
export const TASK_INTERRUPTIBLE = 0x0001;
export const TASK_UNINTERRUPTIBLE = 0x0002;
export const TASK_STOPPED_BIT = 0x0004; // __TASK_STOPPED
export const TASK_TRACED_BIT = 0x0008; // __TASK_TRACED
export const EXIT_DEAD = 0x0010;
export const EXIT_ZOMBIE = 0x0020;
export const TASK_PARKED = 0x0040;
export const TASK_DEAD = 0x0080;
export const TASK_WAKEKILL = 0x0100;
export const TASK_WAKING = 0x0200;
export const TASK_NOLOAD = 0x0400;
export const TASK_NEW = 0x0800;
export const TASK_RTLOCK_WAIT = 0x1000;
export const TASK_FREEZABLE = 0x2000;
export const TASK_FREEZABLE_UNSAFE = 0x4000;
export const TASK_FROZEN = 0x8000;

export const TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
/** The bits /proc reports; everything else is internal to the scheduler. */
export const TASK_REPORT =
  TASK_RUNNING |
  TASK_INTERRUPTIBLE |
  TASK_UNINTERRUPTIBLE |
  TASK_STOPPED_BIT |
  TASK_TRACED_BIT |
  EXIT_DEAD |
  EXIT_ZOMBIE |
  TASK_PARKED;
export const TASK_REPORT_IDLE = TASK_REPORT + 1;

/** `task_state_array`, indexed by `fls()` of the reported bits. */
export const TASK_STATE_LETTERS = "RSDTtXZPI";

/**
 * How `__task_state_index()` treats combined bits. It changed after 6.1.0: the stable trees
 * (6.1.123+, 6.12.8+, so both Debian kernels here: 6.1.176 and 6.12.111) carry
 * "sched/core: Report correct state for TASK_IDLE | TASK_FREEZABLE" (mask tests instead of
 * equality) and "freezer, sched: Report frozen tasks as 'D' instead of 'R'".
 */
export interface StateRules {
  /** `(state & TASK_IDLE) == TASK_IDLE` rather than `state == TASK_IDLE`. */
  readonly maskedIdle: boolean;
  /** `state & TASK_RTLOCK_WAIT` rather than `state == TASK_RTLOCK_WAIT`. */
  readonly maskedRtlock: boolean;
  /** TASK_FROZEN reads as 'D'. */
  readonly frozenIsUninterruptible: boolean;
}

export const CURRENT_STATE_RULES: StateRules = {
  maskedIdle: true,
  maskedRtlock: true,
  frozenIsUninterruptible: true,
};

/** 5.14 (when TASK_RTLOCK_WAIT appeared) up to 6.1.0 and 6.6 mainline before the fixes. */
export const ORIGINAL_STATE_RULES: StateRules = {
  maskedIdle: false,
  maskedRtlock: false,
  frozenIsUninterruptible: false,
};

/** fls(): 1-based index of the highest set bit, 0 for 0. */
function fls(x: number): number {
  return 32 - Math.clz32(x);
}

/** Index into TASK_STATE_LETTERS. Only the low 32 bits of either value matter (they are `unsigned int`). */
export function taskStateIndex(
  state: number,
  exitState: number,
  rules: StateRules = CURRENT_STATE_RULES,
): number {
  const s = state >>> 0;
  let reported = (s | (exitState >>> 0)) & TASK_REPORT;
  const idle = rules.maskedIdle ? (s & TASK_IDLE) === TASK_IDLE : s === TASK_IDLE;
  if (idle) reported = TASK_REPORT_IDLE;
  // -rt kernels: a sleeping spinlock waiter is shown as if blocked on an rt_mutex.
  const rtlock = rules.maskedRtlock ? (s & TASK_RTLOCK_WAIT) !== 0 : s === TASK_RTLOCK_WAIT;
  const frozen = rules.frozenIsUninterruptible && (s & TASK_FROZEN) !== 0;
  if (rtlock || frozen) reported = TASK_UNINTERRUPTIBLE;
  return fls(reported);
}

export function taskStateLetter(
  state: number,
  exitState: number,
  rules: StateRules = CURRENT_STATE_RULES,
): string {
  return TASK_STATE_LETTERS[taskStateIndex(state, exitState, rules)]!;
}
