/**
 * Contracts of the event engine: what it needs from the guest OS, so the engine can be driven
 * by fakes in unit tests and by a Linux guest in real use (its gdbstub side is the trap core's,
 * qemu/traps.ts).
 */
/** What a condition or a handler needs to know about the task a CPU is running. */
export interface TaskBrief {
  /** The task_struct. */
  readonly addr: bigint;
  /** Thread id (task->pid). */
  readonly pid: number;
  /** Process id (task->tgid), what ps calls PID. */
  readonly tgid: number;
  readonly comm: string;
  /** task->mm, 0 for kernel threads. */
  readonly mm: bigint;
}

/** An address space a user-address watch is confined to. */
export interface ProcessSpace {
  readonly pid: number;
  readonly mm: bigint;
}

/** The guest-OS services the engine needs; the Linux implementation is in linux-guest.ts. */
export interface GuestOs {
  /** `name`, `name+0x10` or a number; throws VmsightError E_SYMBOL_UNKNOWN. */
  resolveSymbol(spec: string): bigint;
  /** `name+0xoff`, or undefined outside known symbols. */
  symbolize(addr: bigint): string | undefined;
  /** Kernel-virtual read (through the kernel page tables, not the gdbstub). */
  readKernel(addr: bigint, length: number): Buffer;
  currentTask(cpu: number): TaskBrief;
  /** The address space of process `pid`; throws when there is none or `addr` is not mapped in it. */
  processSpace(pid: number, addr: bigint, length: number): ProcessSpace;
  /** Reads/writes `addr` as `task` sees it: kernel half through the kernel tables, else its mm. */
  read(task: TaskBrief, addr: bigint, length: number): Buffer;
  write(task: TaskBrief, addr: bigint, data: Uint8Array): void;
  /** Forgets cached translations; called every time the guest has run. */
  invalidate(): void;
}
