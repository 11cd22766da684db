/**
 * Contracts of the event engine: what it needs from the gdbstub and from the guest OS, so the
 * engine's resume logic can be driven by fakes in unit tests and by QEMU in real use.
 */
import type { BreakpointType } from "../transport/gdb/client.js";
import type { StopReply } from "../transport/gdb/stop-reply.js";

/** The part of GdbClient the engine uses. */
export interface GdbLike {
  insertBreakpoint(type: BreakpointType, addr: bigint, kind: number): Promise<void>;
  removeBreakpoint(type: BreakpointType, addr: bigint, kind: number): Promise<void>;
  continue(): Promise<StopReply>;
  step(thread?: string): Promise<StopReply>;
  interrupt(): Promise<void>;
  readRegisters(): Promise<Map<string, bigint>>;
  readRegister(name: string): Promise<bigint>;
  writeRegister(name: string, value: bigint): Promise<void>;
}

/** One Z/z packet's worth: gdb type (0 sw, 1 hw breakpoint, 2 write, 3 read, 4 access watch). */
export interface RawTrap {
  readonly type: BreakpointType;
  readonly addr: bigint;
  readonly kind: number;
}

export function rawKey(t: RawTrap): string {
  return `${t.type}:${t.addr.toString(16)}:${t.kind}`;
}

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

/** Keeps a record of inserted traps outside this process (the SIGKILL watchdog). */
export interface TrapRecorder {
  add(trap: RawTrap): Promise<void>;
  remove(trap: RawTrap): Promise<void>;
  /** Everything is cleaned up: the recorder must not act when this process ends. */
  goodbye(): Promise<void>;
}
