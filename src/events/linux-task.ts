import { currentTask, currentTaskSlot } from "../os/linux/current.js";
/**
 * The few task_struct members the event streams read at every stop, with offsets looked up
 * once. At a few hundred stops a second, TaskInfo's full read (creds, parent, names) would cost
 * more than the stop needs.
 */
import type { KernelInfo } from "../os/linux/kernel.js";
import { isKernelPointer, readFixedString } from "../os/linux/walk.js";
import { va } from "../util/address.js";
import { GuestDataError, VmsightError } from "../util/errors.js";
import type { TaskBrief } from "./types.js";

export const PF_EXITING = 0x4;
/** exit_state values (include/linux/sched.h). */
export const EXIT_DEAD = 0x10;
export const EXIT_ZOMBIE = 0x20;

export interface TaskDetail extends TaskBrief {
  readonly flags: number;
  readonly exitCode: number;
  readonly exitState: number;
  readonly realParent: bigint;
}

export class TaskReader {
  private readonly o: Record<string, number>;
  private readonly commSize: number;

  constructor(readonly k: KernelInfo) {
    const L = k.layout;
    const T = "task_struct";
    const off = (m: string) => L.offsetof(T, m);
    this.o = {
      pid: off("pid"),
      tgid: off("tgid"),
      comm: off("comm"),
      mm: off("mm"),
      activeMm: off("active_mm"),
      flags: off("flags"),
      exitCode: off("exit_code"),
      exitState: off("exit_state"),
      realParent: off("real_parent"),
      tasks: off("tasks"),
      children: off("children"),
      sibling: off("sibling"),
      signal: off("signal"),
      threadNode: L.findOffset(T, "thread_node") ?? -1,
      selfExecId: off("self_exec_id"),
      stack: off("stack"),
    };
    this.commSize = L.memberSize(T, "comm") ?? 16;
  }

  offset(member: string): number {
    const o = this.o[member];
    if (o === undefined) throw new VmsightError("E_INTERNAL", `no cached offset for ${member}`);
    return o;
  }

  /** Per-CPU address of `current` on `cpu` (a watchpoint there fires at every task switch). */
  currentSlot(cpu: number): bigint {
    return currentTaskSlot(this.k, cpu);
  }

  current(cpu: number): bigint {
    return currentTask(this.k, cpu);
  }

  u64(addr: bigint): bigint {
    return this.k.kernel.readU64(va(addr));
  }

  i32(addr: bigint): number {
    return this.k.kernel.read(va(addr), 4).readInt32LE(0);
  }

  brief(addr: bigint): TaskDetail {
    if (!isKernelPointer(addr, this.k.bounds))
      throw new GuestDataError(`task pointer ${addr.toString(16)} is not a kernel pointer`);
    const o = this.o;
    const kernel = this.k.kernel;
    const mm = kernel.readU64(va(addr + BigInt(o.mm!)));
    return {
      addr,
      pid: this.i32(addr + BigInt(o.pid!)),
      tgid: this.i32(addr + BigInt(o.tgid!)),
      comm: readFixedString(kernel.read(va(addr + BigInt(o.comm!)), this.commSize), 0, this.commSize),
      mm,
      flags: kernel.readU32(va(addr + BigInt(o.flags!))),
      exitCode: this.i32(addr + BigInt(o.exitCode!)),
      exitState: this.i32(addr + BigInt(o.exitState!)),
      realParent: kernel.readU64(va(addr + BigInt(o.realParent!))),
    };
  }

  /** The mm whose page tables the task runs on: its own, or the borrowed one of a kernel thread. */
  activeMm(addr: bigint): bigint {
    return this.u64(addr + BigInt(this.o.activeMm!));
  }

  selfExecId(addr: bigint): number {
    return this.k.kernel.readU32(va(addr + BigInt(this.o.selfExecId!)));
  }

  /**
   * The task copy_process() has just made, seen from its parent (`current`) once the child is
   * on the task lists (at `nr_threads++`/`total_forks++`): the last process on init_task.tasks,
   * or for CLONE_THREAD the last thread of the parent's group, whichever holds the pid the
   * init pid namespace handed out last (`idr_next - 1`). Undefined rather than a guess.
   */
  newTask(current: bigint): { task: TaskDetail; thread: boolean } | undefined {
    const k = this.k;
    this.newTaskOffsets ??= {
      idrNext:
        k.symbols.getAddress("init_pid_ns") + BigInt(k.layout.offsetof("pid_namespace", "idr.idr_next")),
      initTasks: k.symbols.getAddress("init_task") + BigInt(this.offset("tasks")),
      threadHead: BigInt(k.layout.offsetof("signal_struct", "thread_head")),
    };
    const o = this.newTaskOffsets;
    const newPid = k.kernel.readU32(va(o.idrNext)) - 1;
    const leader = this.lastEntry(o.initTasks, "tasks");
    const child = leader === undefined ? undefined : this.brief(leader);
    if (child?.pid === newPid) return { task: child, thread: false };
    const signal = this.u64(current + BigInt(this.offset("signal")));
    if (!isKernelPointer(signal, this.k.bounds)) return undefined;
    const last = this.lastEntry(signal + o.threadHead, "threadNode");
    const t = last === undefined ? undefined : this.brief(last);
    return t?.pid === newPid ? { task: t, thread: true } : undefined;
  }

  private newTaskOffsets: { idrNext: bigint; initTasks: bigint; threadHead: bigint } | undefined;

  /** tgid of the task's real parent (0 when unreadable). */
  parentTgid(t: TaskDetail): number {
    return isKernelPointer(t.realParent, this.k.bounds)
      ? this.i32(t.realParent + BigInt(this.offset("tgid")))
      : 0;
  }

  /** Last entry of a list_head at `head`, as the containing task (list member at `member`). */
  lastEntry(head: bigint, member: string): bigint | undefined {
    const prev = this.u64(head + 8n);
    if (prev === head || !isKernelPointer(prev, this.k.bounds)) return undefined;
    return prev - BigInt(this.offset(member));
  }
}
