import type { AddressBounds } from "../os/linux/walk.js";

/**
 * What the candidate filter sees of a guest at one trapped event. Everything here is read
 * through interfaces, so the filter runs the same on a live guest and on crafted memory.
 */

export interface PageRights {
  readonly user: boolean;
  readonly writable: boolean;
  readonly executable: boolean;
}

export interface PageRun extends PageRights {
  readonly start: bigint;
  /** Exclusive. */
  readonly end: bigint;
}

export interface GuestView {
  /** Where the kernel half starts in this guest's paging mode. */
  readonly bounds: AddressBounds;
  /** Kernel-virtual read; undefined when any byte of it is not mapped. Never throws. */
  read(addr: bigint, length: number): Buffer | undefined;
  /** Guest-physical address of a kernel-virtual one, or undefined. */
  translate(addr: bigint): bigint | undefined;
  /** Rights of the kernel page holding `addr`, or undefined when unmapped. */
  kernelPage(addr: bigint): PageRights | undefined;
  /** Rights of the page holding user address `addr` in the address space whose top table is at
   * kernel-virtual `pgd`, or undefined when unmapped. */
  userPage(pgd: bigint, addr: bigint): PageRights | undefined;
  /** The present pages of [start, end) in that address space, as runs with their rights. */
  userRuns(pgd: bigint, start: bigint, end: bigint): readonly PageRun[] | undefined;
  /** A user-space read in that address space; undefined when unmapped. */
  readUser(pgd: bigint, addr: bigint, length: number): Buffer | undefined;
}

/**
 * "quiet": a stop of discovery's own after the guest went a while without an event. Nothing is
 * happening at that moment, so only rules about lasting state apply (a loaded module's text).
 */
export type EventKind = "create" | "release" | "module" | "quiet";

export interface Observation {
  /** 0-based count of events handled so far. */
  readonly index: number;
  readonly kind: EventKind;
  /** The task running on the trapping CPU (per-CPU `current`). */
  readonly current: bigint;
  /** Physical address of the top-level page table in CR3 (PCID and KPTI bits cleared). */
  readonly cr3Root: bigint;
  /** Live thread-group leaders: the length the tasks list must have (sum of `process_counts`). */
  readonly processCount: number | undefined;
  /** Live tasks, threads included (`nr_threads`). */
  readonly threadCount: number;
  /** Register values and kernel-stack words at the stop: the new child is among them. */
  readonly pointers: readonly bigint[];
  readonly view: GuestView;
}

/** Addresses and sizes known from the symbol table and kernel variables. */
export interface KernelFacts {
  /** The idle task of CPU 0: head of the tasks list, pid 0. */
  readonly initTask: bigint;
  /** `init_mm`: the idle task's active_mm. */
  readonly initMm: bigint;
  /** The `modules` list head. */
  readonly modulesHead: bigint;
  /** Bytes the kernel really allocates per task (`arch_task_struct_size`), not BTF's sizeof. */
  readonly taskSize: number;
  /** `init_cred`: the idle task's credentials (root, every capability). Without it no cred members. */
  readonly initCred?: bigint;
  /** worker_thread() and rescuer_thread(): the thread functions of kworkers (kthread names). */
  readonly workerThread?: bigint;
  readonly rescuerThread?: bigint;
}
