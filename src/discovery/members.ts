import { NAME_MEMBERS } from "./rules/kernel-threads.js";

/** The members discovery looks for, by group, and which of them it waits for. */

export const TASK_MEMBERS = [
  "task_struct.tasks",
  "task_struct.pid",
  "task_struct.tgid",
  "task_struct.comm",
  "task_struct.__state",
  "task_struct.flags",
  "task_struct.mm",
  "task_struct.active_mm",
  "task_struct.real_parent",
  "task_struct.pending",
] as const;
/** Placed from init_cred when the kernel's symbols name it (see rules/ids-creds.ts). */
export const CRED_MEMBERS = ["task_struct.real_cred", "cred.uid"] as const;
export const MM_MEMBERS = [
  "mm_struct.pgd",
  "mm_struct.start_code",
  "mm_struct.end_code",
  "mm_struct.arg_start",
  "mm_struct.arg_end",
  "mm_struct.env_start",
  "mm_struct.env_end",
] as const;
/** Offsets relative to the module's `list` node, as the patent takes them (step b4). */
export const MODULE_MEMBERS = [
  "module.state",
  "module.name",
  "module.core_base",
  "module.core_text_size",
] as const;

export type MemberGroup = "task" | "mm" | "module";

/**
 * Members reported but not waited for. task_struct.pending looks like the other list heads that
 * stay empty in every task; only the kernel's own use of it tells them apart (sigqueueFlushed,
 * from a trap on flush_sigqueue), and a guest that releases no task before the rest converges
 * never shows that. The cred members are placed at the first event from init_cred or not at all
 * (`ps` then shows no uid); the kthread-name members (rules/kernel-threads.ts) wait for kworkers
 * to show them (`ps` then shows comm for kernel threads). None of them keeps the other members
 * from being used.
 */
export const BEST_EFFORT: ReadonlySet<string> = new Set([
  "task_struct.pending",
  ...CRED_MEMBERS,
  ...NAME_MEMBERS,
]);
