/**
 * Kernel ABI facts the rules rest on (x86-64, Linux 6.x), and the bounds on the work a rule may
 * do per event. Facts about one struct's layout stay with the rules of that struct.
 */

/** Set by copy_process() on every child; cleared by exec (include/linux/sched.h). */
export const PF_FORKNOEXEC = 0x40;
/** sched_fork() puts a new child in TASK_NEW until wake_up_new_task(). */
export const TASK_NEW = 0x800;
/** Every task state bit of 6.x lies below this (TASK_STATE_MAX). */
export const TASK_STATE_LIMIT = 0x10000;
/** include/linux/threads.h: no pid is larger on 64-bit. */
export const PID_MAX_LIMIT = 4 * 1024 * 1024;
export const TASK_COMM_LEN = 16;
/** MODULE_NAME_LEN = 64 - sizeof(unsigned long). */
export const MODULE_NAME_LEN = 56;
export const MODULE_STATE_LIVE = 0;
export const MODULE_STATE_UNFORMED = 3;
/** Auxiliary vector key whose value (bprm->exec) equals env_end: see the env_end rule. */
export const AT_EXECFN = 31n;
export const PAGE = 4096n;
/** Module mappings: MODULES_VADDR..MODULES_END on x86-64, whatever the image size. */
export const MODULES_START = 0xffffffffa0000000n;
export const MODULES_END = 0xffffffffff000000n;
/** What list_del() leaves in `prev` on x86-64 (POISON_POINTER_DELTA 0xdead000000000000 + 0x122). */
export const LIST_POISON2 = 0xdead000000000122n;

/** mm_struct is about 1-1.4 KiB in 6.x builds, plus a CPU bitmap: stay inside its slab object. */
export const MM_EXTENT = 2048;
/** Relative to `module.list`: struct module is about 0.9-1.3 KiB in 6.x builds. */
export const MODULE_FROM = -512;
export const MODULE_TO = 1536;

/** Bounds on work per check: page walks over a code range, bytes of command line read. */
export const MAX_CODE_PAGES = 16384;
export const MAX_ARGS = 128 * 1024;
/** A joint rule is skipped (not applied) rather than made slow when sets are still large. */
export const MAX_JOINT = 200_000;
/** The same for joint rules whose every pair walks page tables. */
export const MAX_JOINT_WALKS = 4096;
export const MAX_MODULES = 4096;
export const MAX_SEEN_TASKS = 1 << 16;

export const roundUp = (v: bigint): bigint => ((v + PAGE - 1n) / PAGE) * PAGE;
