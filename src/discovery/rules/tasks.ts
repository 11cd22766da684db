import { PF_KTHREAD } from "../../os/linux/task-name.js";
import { isKernelPointer } from "../../os/linux/walk.js";
import type { GuestView, Observation } from "../types.js";
import {
  LIST_POISON2,
  MAX_SEEN_TASKS,
  PF_FORKNOEXEC,
  TASK_COMM_LEN,
  TASK_NEW,
  TASK_STATE_LIMIT,
} from "./abi.js";
import type { RuleContext, TaskEvent } from "./context.js";
import { type Obj, isNameString, ringLength, ringNodes } from "./reader.js";

/**
 * task_struct's own members: the tasks list, comm, __state, flags, real_parent, pending, and
 * which task an event created. (pid/tgid: ids-creds.ts; mm/active_mm: mm.ts.)
 */
export class TaskRules {
  /** nr_threads minus processes at the previous creation: threads that are not leaders. */
  private lastNonLeaders = 0;
  /** Addresses on the tasks list at the previous event, once it could be walked. */
  private lastList: Set<bigint> | undefined;
  /** Every task seen at an event (listed, current or just made): where released tasks come from. */
  private readonly seen = new Set<bigint>();

  constructor(private readonly ctx: RuleContext) {}

  /**
   * tasks: init_task.tasks heads a ring with one node per live process. A candidate must be a
   * ring that closes at the head, whose every `next->prev` points back (consistent in both
   * directions), with exactly as many nodes as the kernel counts processes.
   */
  ring(obs: Observation): void {
    const expected = obs.processCount;
    const c = this.ctx.cands;
    if (expected === undefined || c.get("task_struct.tasks").length <= 1) return;
    c.filter("task_struct.tasks", "ring of live processes", (o) => {
      return ringLength(obs.view, this.ctx.facts.initTask + BigInt(o), expected) === expected;
    });
  }

  /** Every process on the tasks list, once `tasks` is known (init_task excluded). */
  list(obs: Observation): Obj[] | undefined {
    const o = this.ctx.cands.one("task_struct.tasks");
    if (o === undefined || obs.processCount === undefined) return undefined;
    const head = this.ctx.facts.initTask + BigInt(o);
    // The ring was checked both ways when `tasks` converged; forwards is enough now.
    const nodes = ringNodes(obs.view, head, obs.processCount + 64, false);
    if (!nodes) return undefined;
    const out: Obj[] = [];
    for (const n of nodes) {
      const t = this.ctx.readTask(obs.view, n - BigInt(o));
      if (t) out.push(t);
    }
    return out;
  }

  /**
   * Which task a creation made. list_add_tail_rcu(&p->tasks, &init_task.tasks) makes a new
   * process the last node; it counts as the child only if that node was not listed at the
   * previous event and copy_process() holds it (register or stack) - so a freed task_struct
   * reused at the tail is never taken for a new one. Whether a thread was made follows from
   * the kernel's counters: nr_threads minus the process count (the non-leader threads) only
   * grows by creating a thread, and every creation is an event, so it grows by one exactly
   * when this event made a thread (releases in between only lower it).
   */
  classify(obs: Observation, tasks: Obj[] | undefined): { child: Obj | undefined; threadCreated: boolean } {
    const none = { child: undefined, threadCreated: false };
    if (obs.kind !== "create" || obs.processCount === undefined) return none;
    const threads = obs.threadCount - obs.processCount;
    const grew = threads - this.lastNonLeaders;
    this.lastNonLeaders = threads;
    if (grew === 1) return { child: undefined, threadCreated: true };
    if (!tasks || !this.lastList) return none;
    const tail = tasks[tasks.length - 1];
    const fresh = tasks.filter((t) => !this.lastList!.has(t.addr));
    if (tail && fresh.length === 1 && fresh[0] === tail && obs.pointers.includes(tail.addr)) {
      return { child: tail, threadCreated: false };
    }
    return none;
  }

  /** Closes an event: what was listed, and every task seen (bounded: a boot has a few hundred). */
  endEvent(current: bigint, tasks: Obj[] | undefined, child: Obj | undefined): void {
    this.lastList = tasks ? new Set(tasks.map((t) => t.addr)) : undefined;
    if (this.seen.size > MAX_SEEN_TASKS) this.seen.clear();
    for (const a of [current, ...(tasks ?? []).map((t) => t.addr), ...(child ? [child.addr] : [])])
      this.seen.add(a);
  }

  /**
   * thread_info.flags is not searched: with THREAD_INFO_IN_TASK (x86 since 4.9) thread_info is
   * the first member of task_struct and flags its first field, so it is at 0. What is checked
   * is that the word there looks like TIF bits (all defined below bit 32), not a pointer.
   */
  threadInfoFlags(cur: Obj): void {
    const v = cur.u64(0);
    if (v >= 0n && v < 1n << 32n) return;
    if (this.ctx.fixedFailures.length === 0)
      this.ctx.fixedFailures.push(
        `task_struct.thread_info.flags: word at offset 0 of a task is ${v}, not TIF bits`,
      );
  }

  /** comm, __state and flags. */
  basics(ev: TaskEvent): void {
    const c = this.ctx.cands;
    const { obs, cur, idle, tasks, child, all } = ev;
    // comm: printable, not empty, NUL-terminated, in every task we can see; and the idle task
    // is named INIT_TASK_COMM, "swapper" ("swapper/<cpu>" once init_idle() ran).
    if (idle)
      c.filter("task_struct.comm", "idle task is swapper", (o) =>
        /^swapper(\/\d+)?$/.test(cur.str(o, TASK_COMM_LEN) ?? ""),
      );
    c.filter("task_struct.comm", "printable NUL-terminated name", (o) =>
      all.every((t) => isNameString(t.slice(o, TASK_COMM_LEN), TASK_COMM_LEN, true)),
    );
    this.ctx.innermostString("task_struct.comm", TASK_COMM_LEN);

    // __state: the running task is TASK_RUNNING (0); a child not yet woken is TASK_NEW;
    // no task has bits beyond the defined states.
    // (A release runs in wait(), after do_wait() set the waiter TASK_INTERRUPTIBLE: only a
    // creator is known to be running.)
    if (obs.kind === "create")
      c.filter("task_struct.__state", "creator is TASK_RUNNING", (o) => cur.u32(o) === 0);
    if (child) c.filter("task_struct.__state", "new child is TASK_NEW", (o) => child.u32(o) === TASK_NEW);
    if (tasks)
      c.filter("task_struct.__state", "defined state bits", (o) =>
        tasks.every((t) => t.u32(o) >= 0 && t.u32(o) < TASK_STATE_LIMIT),
      );

    // flags: the idle task is a kernel thread; copy_process() marks every child PF_FORKNOEXEC;
    // a kernel thread has no mm and a task with an mm is no kernel thread.
    if (idle)
      c.filter("task_struct.flags", "idle task is PF_KTHREAD", (o) => (cur.u32(o) & PF_KTHREAD) !== 0);
    if (child)
      c.filter("task_struct.flags", "child is PF_FORKNOEXEC", (o) => (child.u32(o) & PF_FORKNOEXEC) !== 0);
    const mmOff = c.one("task_struct.mm");
    if (tasks && mmOff !== undefined) {
      c.filter(
        "task_struct.flags",
        "PF_KTHREAD iff no mm",
        (o) =>
          tasks.every((t) => ((t.u32(o) & PF_KTHREAD) !== 0 ? t.u64(mmOff) === 0n : true)) &&
          tasks.every((t) => (t.u64(mmOff) !== 0n ? (t.u32(o) & PF_KTHREAD) === 0 : true)),
      );
    }
  }

  /**
   * real_parent: the idle task is its own parent; a new child's is its creator or, for
   * CLONE_PARENT/CLONE_THREAD, its creator's parent; every process's is a live process or the
   * idle task. `parent` (declared right after it) holds the same value unless a debugger
   * ptrace-attaches, so when exactly those two survive the first is taken, and said so.
   */
  realParent(ev: TaskEvent): void {
    const c = this.ctx.cands;
    const { cur, idle, tasks, child } = ev;
    const initTask = this.ctx.facts.initTask;
    const k = "task_struct.real_parent";
    if (idle) c.filter(k, "idle task is its own parent", (o) => cur.u64(o) === initTask);
    if (child)
      c.filter(
        k,
        "child's parent is its creator",
        (o) => child.u64(o) === cur.addr || child.u64(o) === cur.u64(o),
      );
    if (tasks) {
      const live = new Set<bigint>([initTask, ...tasks.map((t) => t.addr)]);
      c.filter(k, "parent is a live process", (o) =>
        tasks.every((t) => t.u64(o) !== t.addr && live.has(t.u64(o))),
      );
    }
    this.ctx.trackTwins(k, ev.all, 8);
  }

  /**
   * pending (struct sigpending { list_head list; sigset_t signal; }): init_sigpending() gives
   * a child an empty queue (list pointing at itself) and no signal bits; in every task the list
   * is empty or links kernel objects.
   */
  pending(ev: TaskEvent): void {
    const c = this.ctx.cands;
    const { cur, child } = ev;
    const k = "task_struct.pending";
    const sane = (t: Obj, o: number) => {
      const self = t.addr + BigInt(o);
      const next = t.u64(o);
      const prev = t.u64(o + 8);
      if (next === self || prev === self) return next === self && prev === self;
      return isKernelPointer(next, ev.obs.view.bounds) && isKernelPointer(prev, ev.obs.view.bounds);
    };
    if (child) {
      c.filter(k, "child's queue is empty", (o) => {
        const self = child.addr + BigInt(o);
        return child.u64(o) === self && child.u64(o + 8) === self && child.u64(o + 16) === 0n;
      });
    }
    // (Best effort: checked on the creator only, not on every task at every event.)
    c.filter(k, "a list head", (o) => sane(cur, o));
  }

  /**
   * pending, from the kernel's own use of it: release_task() -> __exit_signal() calls
   * flush_sigqueue(&tsk->pending) for every task it releases, so the argument minus the true
   * offset is a task seen alive before, which __unhash_process() has just taken off the tasks
   * list (list_del_rcu leaves LIST_POISON2 in its `prev`; a thread that was not a group leader
   * stays listed and is skipped). flush_sigqueue() also runs on a signal_struct's
   * shared_pending and from flush_signals(); an argument that maps to no such task through any
   * candidate narrows nothing.
   */
  sigqueueFlushed(index: number, queue: bigint, view: GuestView): void {
    const k = "task_struct.pending";
    const c = this.ctx.cands;
    const tasksOff = c.one("task_struct.tasks");
    if (!c.has(k) || c.one(k) !== undefined || tasksOff === undefined) return;
    const releases = (o: number) => {
      const task = queue - BigInt(o);
      return (
        this.seen.has(task) && view.read(task + BigInt(tasksOff) + 8n, 8)?.readBigUInt64LE(0) === LIST_POISON2
      );
    };
    if (!c.get(k).some(releases)) return;
    c.event = index;
    c.filter(k, "flush_sigqueue(&tsk->pending) on a released task", releases);
    c.endEvent();
  }
}
