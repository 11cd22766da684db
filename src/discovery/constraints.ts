import { PF_KTHREAD } from "../os/linux/task-name.js";
import { isKernelPointer, readFixedString } from "../os/linux/walk.js";
import { Candidates, type MemberStatus, offsetRange } from "./candidates.js";
import { KthreadNames, NAME_MEMBERS } from "./kthread-names.js";
import type { GuestView, KernelFacts, Observation } from "./types.js";

/**
 * Step 3 of CN109857520, adapted to x86-64 kernels of today: at each trapped event, every
 * candidate offset of every member is checked against a property the member has in every
 * kernel build, and candidates that violate it are dropped. Pure: all guest access goes
 * through the Observation's GuestView, so crafted memory drives it in unit tests.
 *
 * Some properties relate members to each other (a list length needs `tasks` to know which
 * tasks exist; `mm->pgd` needs `active_mm`). Such rules wait until the members they lean on
 * have converged, or judge candidates jointly ("keep x if some candidate of y agrees").
 */

// ---- kernel ABI facts the rules rest on ----------------------------------------------------
/** include/linux/sched.h: set for kernel threads. */
/** Set by copy_process() on every child; cleared by exec. */
const PF_FORKNOEXEC = 0x40;
/** sched_fork() puts a new child in TASK_NEW until wake_up_new_task(). */
const TASK_NEW = 0x800;
/** Every task state bit of 6.x lies below this (TASK_STATE_MAX). */
const TASK_STATE_LIMIT = 0x10000;
/** include/linux/threads.h: no pid is larger on 64-bit. */
const PID_MAX_LIMIT = 4 * 1024 * 1024;
const TASK_COMM_LEN = 16;
/** MODULE_NAME_LEN = 64 - sizeof(unsigned long). */
const MODULE_NAME_LEN = 56;
const MODULE_STATE_LIVE = 0;
const MODULE_STATE_UNFORMED = 3;
/** Auxiliary vector key whose value (bprm->exec) equals env_end: see the env_end rule. */
const AT_EXECFN = 31n;
const PAGE = 4096n;
/** Above this nothing is user space, with 4- or 5-level paging. */
const USER_END = 0x0100000000000000n;
/** Module mappings: MODULES_VADDR..MODULES_END on x86-64, whatever the image size. */
const MODULES_START = 0xffffffffa0000000n;
const MODULES_END = 0xffffffffff000000n;
/** mm_struct is about 1-1.4 KiB in 6.x builds, plus a CPU bitmap: stay inside its slab object. */
export const MM_EXTENT = 2048;
/** Relative to `module.list`: struct module is about 0.9-1.3 KiB in 6.x builds. */
export const MODULE_FROM = -512;
export const MODULE_TO = 1536;
/** Bounds on work per check: page walks over a code range, bytes of command line read. */
const MAX_CODE_PAGES = 16384;
const MAX_ARGS = 128 * 1024;
/** A joint rule is skipped (not applied) rather than made slow when sets are still large. */
const MAX_JOINT = 200_000;
const MAX_MODULES = 4096;
const MAX_SEEN_TASKS = 1 << 16;
/** Where cred.uid can start: after an atomic_t or atomic_long_t usage, or the debug fields. */
const CRED_ID_STARTS = [4, 8, 20];
const CRED_MAGIC = 0x43736564;
const INIT_CRED_SPAN = 128;

/** A full capability set: every bit below some n >= 32 set, nothing above. */
function fullCaps(v: bigint): boolean {
  return v >= 0xffffffffn && (v & (v + 1n)) === 0n;
}

function credLayoutFits(b: Buffer, uid: number): boolean {
  if (uid === 20 && b.readUInt32LE(16) !== CRED_MAGIC) return false;
  for (let i = 0; i < 9; i++) if (b.readUInt32LE(uid + 4 * i) !== 0) return false; // ids, securebits
  return [4, 8].some((align) => {
    const inheritable = Math.ceil((uid + 36) / align) * align;
    const caps = [0, 1, 2, 3].map((i) => b.readBigUInt64LE(inheritable + 8 * i));
    return caps[0] === 0n && caps.slice(1).every((v) => v === caps[1] && fullCaps(v));
  });
}
/** What list_del() leaves in `prev` on x86-64 (POISON_POINTER_DELTA 0xdead000000000000 + 0x122). */
const LIST_POISON2 = 0xdead000000000122n;

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
/** Placed from init_cred when the kernel's symbols name it (see credRules). */
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
 * (`ps` then shows no uid); the kthread-name members (kthread-names.ts) wait for kworkers to
 * show them (`ps` then shows comm for kernel threads). None of them keeps the other members from
 * being used.
 */
export const BEST_EFFORT: ReadonlySet<string> = new Set([
  "task_struct.pending",
  ...CRED_MEMBERS,
  ...NAME_MEMBERS,
]);

export interface DiscoveryOptions {
  /** Which groups to discover (default all three). */
  readonly groups?: readonly MemberGroup[];
}

/** Bytes read per fetch of a lazily read object. */
const CHUNK = 512;

/**
 * A guest object as read at one event: eagerly (one buffer), or lazily in chunks, so that rules
 * left with a few candidates read a few words of each of ~60 tasks instead of all of them.
 * Bytes outside [from, to) or unreadable read as -1.
 */
class Obj {
  private readonly chunks = new Map<number, Buffer | null>();
  private constructor(
    readonly addr: bigint,
    private readonly from: number,
    private readonly to: number,
    private readonly whole: Buffer | undefined,
    private readonly view: GuestView | undefined,
  ) {}

  static of(addr: bigint, bytes: Buffer, base = 0): Obj {
    return new Obj(addr, base, base + bytes.length, bytes, undefined);
  }

  static lazy(view: GuestView, addr: bigint, from: number, to: number): Obj {
    return new Obj(addr, from, to, undefined, view);
  }

  slice(off: number, n: number): Buffer | undefined {
    if (off < this.from || off + n > this.to) return undefined;
    if (this.whole) return this.whole.subarray(off - this.from, off - this.from + n);
    const c = Math.floor(off / CHUNK);
    if (Math.floor((off + n - 1) / CHUNK) !== c) return this.view!.read(this.addr + BigInt(off), n);
    let chunk = this.chunks.get(c);
    if (chunk === undefined) {
      const start = Math.max(this.from, c * CHUNK);
      chunk = this.view!.read(this.addr + BigInt(start), Math.min(this.to, (c + 1) * CHUNK) - start) ?? null;
      this.chunks.set(c, chunk);
    }
    if (chunk === null) return undefined;
    const at = off - Math.max(this.from, c * CHUNK);
    return chunk.subarray(at, at + n);
  }

  u32(off: number): number {
    return this.slice(off, 4)?.readUInt32LE(0) ?? -1;
  }

  u64(off: number): bigint {
    return this.slice(off, 8)?.readBigUInt64LE(0) ?? -1n;
  }

  /** A char[len] member up to its NUL, or undefined where unreadable. */
  str(off: number, len: number): string | undefined {
    const b = this.slice(off, len);
    return b && readFixedString(b, 0, len);
  }
}

interface ModuleSeen {
  /** Task that was current when the module was added to the list: the loader. */
  readonly loader: bigint;
  readonly loaderPid: number | undefined;
  readonly addedAt: number;
}

const isUser = (v: bigint) => v > 0n && v < USER_END;
const roundUp = (v: bigint) => ((v + PAGE - 1n) / PAGE) * PAGE;

/**
 * comm / module name: printable, not empty, NUL-terminated inside its array. `highBytes` lets
 * bytes from 0x80 up pass, for comm: a process may name itself in UTF-8 (or cut a character).
 */
export function isNameString(b: Buffer | undefined, len: number, highBytes = false): boolean {
  if (!b || b.length < len) return false;
  if (b[0] === 0) return false;
  for (let i = 0; i < len; i++) {
    const c = b[i]!;
    if (c === 0) return true;
    if (c < 0x20 || c === 0x7f || (c > 0x7f && !highBytes)) return false;
  }
  return false;
}

export interface EventSummary {
  readonly index: number;
  readonly kind: Observation["kind"];
  /** Tasks on the list when it could be walked. */
  readonly tasks: number | undefined;
  /** The new task's address, when this event created a process. */
  readonly child: bigint | undefined;
  readonly threadCreated: boolean;
}

/**
 * The filter. Feed it one Observation per trapped event; ask `converged()` after each, and
 * `profile()` once it is.
 */
export class OffsetDiscovery {
  readonly cands = new Candidates();
  private readonly facts: KernelFacts;
  private readonly groups: ReadonlySet<MemberGroup>;
  /** nr_threads minus processes at the previous creation: threads that are not leaders. */
  private lastNonLeaders = 0;
  /** Addresses on the tasks list at the previous event, once it could be walked. */
  private lastList: Set<bigint> | undefined;
  /** Per pid/tgid candidate: its value in the newest child seen (creation order). */
  private readonly lastChild = new Map<string, Map<number, number>>();
  private readonly modules = new Map<bigint, ModuleSeen>();
  /** Members whose surviving candidates have held different values at some event. */
  private readonly differed = new Set<string>();
  /** Members placed by a structural fact (not filtered) whose check failed, with why. */
  readonly fixedFailures: string[] = [];
  /** A module has been seen loaded and live (its text rules applied). */
  private settledSeen = false;
  private span: [number, number] | null | undefined;
  creates = 0;
  releases = 0;
  moduleEvents = 0;
  /** pid of the newest child, once pid has converged. */
  highestPid = 0;
  /** Every task seen at an event (listed, current or just made): where released tasks come from. */
  private readonly seen = new Set<bigint>();
  private readonly names: KthreadNames | undefined;

  constructor(facts: KernelFacts, opts: DiscoveryOptions = {}) {
    this.facts = facts;
    this.groups = new Set(opts.groups ?? ["task", "mm", "module"]);
    const t = facts.taskSize;
    const c = this.cands;
    if (this.groups.has("task")) {
      c.define("task_struct.tasks", offsetRange(0, t - 16, 8));
      c.define("task_struct.pid", offsetRange(0, t - 4, 4));
      c.define("task_struct.tgid", offsetRange(0, t - 4, 4));
      c.define("task_struct.comm", offsetRange(0, t - TASK_COMM_LEN, 1));
      c.define("task_struct.__state", offsetRange(0, t - 4, 4));
      c.define("task_struct.flags", offsetRange(0, t - 4, 4));
      c.define("task_struct.mm", offsetRange(0, t - 8, 8));
      c.define("task_struct.active_mm", offsetRange(0, t - 8, 8));
      c.define("task_struct.real_parent", offsetRange(0, t - 8, 8));
      c.define("task_struct.pending", offsetRange(0, t - 24, 8));
      if (facts.initCred !== undefined) {
        c.define("task_struct.real_cred", offsetRange(0, t - 8, 8));
        c.define("cred.uid", CRED_ID_STARTS);
      }
    }
    this.names =
      this.groups.has("task") && facts.workerThread !== undefined
        ? new KthreadNames(c, { workerThread: facts.workerThread, rescuerThread: facts.rescuerThread }, t)
        : undefined;
    if (this.groups.has("mm")) {
      for (const k of MM_MEMBERS) c.define(k, offsetRange(0, MM_EXTENT - 8, 8));
    }
    if (this.groups.has("module")) {
      c.define("module.state", offsetRange(MODULE_FROM, MODULE_TO - 4, 4));
      c.define("module.name", offsetRange(MODULE_FROM, MODULE_TO - MODULE_NAME_LEN, 1));
      c.define("module.core_base", offsetRange(MODULE_FROM, MODULE_TO - 8, 8));
      c.define("module.core_text_size", offsetRange(MODULE_FROM, MODULE_TO - 4, 4));
    }
    for (const k of ["task_struct.pid", "task_struct.tgid"]) this.lastChild.set(k, new Map());
  }

  /**
   * A task_struct: all of it while candidates are spread over it, only the span of the found
   * members once every awaited task member has converged (a boot has ~60 tasks per event).
   */
  private readTask(view: GuestView, addr: bigint, whole = false): Obj | undefined {
    if (whole) {
      const b = view.read(addr, this.facts.taskSize);
      return b ? Obj.of(addr, b) : undefined;
    }
    const span = this.taskSpan();
    return Obj.lazy(view, addr, span?.[0] ?? 0, span?.[1] ?? this.facts.taskSize);
  }

  private taskSpan(): [number, number] | undefined {
    if (this.span !== undefined) return this.span ?? undefined;
    const keys = TASK_MEMBERS.filter((k) => !BEST_EFFORT.has(k));
    if (!this.cands.done(...keys)) return undefined;
    const offs = keys.map((k) => this.cands.one(k)!);
    this.span = [Math.min(...offs), Math.max(...offs) + TASK_COMM_LEN];
    return this.span;
  }

  /** Applies every rule to one event. */
  observe(obs: Observation): EventSummary {
    const c = this.cands;
    c.event = obs.index;
    if (obs.kind === "create") this.creates++;
    if (obs.kind === "release") this.releases++;
    if (obs.kind === "module") this.moduleEvents++;
    const cur = this.readTask(obs.view, obs.current, true);
    let tasks: Obj[] | undefined;
    let child: Obj | undefined;
    let threadCreated = false;
    if (cur) {
      if (this.groups.has("task")) {
        this.tasksRule(obs);
        tasks = this.listTasks(obs);
        ({ child, threadCreated } = this.classify(obs, tasks));
        if (child && this.span) child = this.readTask(obs.view, child.addr, true);
        this.threadInfoFlags(cur);
        this.taskRules(obs, cur, tasks, child, threadCreated);
      }
      if (this.groups.has("mm")) this.mmRules(obs, cur);
      if (this.groups.has("module")) this.moduleRules(obs, cur, tasks);
    }
    this.resolveTwins();
    c.endEvent();
    this.lastList = tasks ? new Set(tasks.map((t) => t.addr)) : undefined;
    this.remember([obs.current, ...(tasks ?? []).map((t) => t.addr), ...(child ? [child.addr] : [])]);
    const pidOff = c.one("task_struct.pid");
    if (child && pidOff !== undefined) this.highestPid = Math.max(this.highestPid, child.u32(pidOff));
    return {
      index: obs.index,
      kind: obs.kind,
      tasks: tasks?.length,
      child: child?.addr,
      threadCreated,
    };
  }

  // ---- task_struct ------------------------------------------------------------------------

  /**
   * thread_info.flags is not searched: with THREAD_INFO_IN_TASK (x86 since 4.9) thread_info is
   * the first member of task_struct and flags its first field, so it is at 0. What is checked
   * is that the word there looks like TIF bits (all defined below bit 32), not a pointer.
   */
  private threadInfoFlags(cur: Obj): void {
    const v = cur.u64(0);
    if (v >= 0n && v < 1n << 32n) return;
    if (this.fixedFailures.length === 0)
      this.fixedFailures.push(
        `task_struct.thread_info.flags: word at offset 0 of a task is ${v}, not TIF bits`,
      );
  }

  /**
   * tasks: init_task.tasks heads a ring with one node per live process. A candidate must be a
   * ring that closes at the head, whose every `next->prev` points back (consistent in both
   * directions), with exactly as many nodes as the kernel counts processes.
   */
  private tasksRule(obs: Observation): void {
    const expected = obs.processCount;
    if (expected === undefined || this.cands.get("task_struct.tasks").length <= 1) return;
    this.cands.filter("task_struct.tasks", "ring of live processes", (o) => {
      return ringLength(obs.view, this.facts.initTask + BigInt(o), expected) === expected;
    });
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
  private classify(
    obs: Observation,
    tasks: Obj[] | undefined,
  ): { child: Obj | undefined; threadCreated: boolean } {
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

  /** Every process on the tasks list, once `tasks` is known (init_task excluded). */
  private listTasks(obs: Observation): Obj[] | undefined {
    const o = this.cands.one("task_struct.tasks");
    if (o === undefined || obs.processCount === undefined) return undefined;
    const head = this.facts.initTask + BigInt(o);
    // The ring was checked both ways when `tasks` converged; forwards is enough now.
    const nodes = ringNodes(obs.view, head, obs.processCount + 64, false);
    if (!nodes) return undefined;
    const out: Obj[] = [];
    for (const n of nodes) {
      const t = this.readTask(obs.view, n - BigInt(o));
      if (t) out.push(t);
    }
    return out;
  }

  private taskRules(
    obs: Observation,
    cur: Obj,
    tasks: Obj[] | undefined,
    child: Obj | undefined,
    threadCreated: boolean,
  ): void {
    const c = this.cands;
    const idle = cur.addr === this.facts.initTask;
    const all = [cur, ...(tasks ?? []), ...(child ? [child] : [])];
    // Every listed task leads its thread group (pid == tgid): once pid and tgid are down to the
    // same two candidates the list cannot separate them, only a new thread can; skip the work.
    const twins =
      sameSet(c.get("task_struct.pid"), c.get("task_struct.tgid")) && c.get("task_struct.pid").length === 2;
    const listed = twins ? undefined : tasks;
    const seenIds = twins ? [cur, ...(child ? [child] : [])] : all;
    this.idRules("task_struct.pid", cur, idle, seenIds, listed, child);
    this.idRules("task_struct.tgid", cur, idle, seenIds, listed, child);
    if (listed) this.leaderIds(listed);
    if (threadCreated) this.threadChild(obs, cur);

    // comm: printable, not empty, NUL-terminated, in every task we can see; and the idle task
    // is named INIT_TASK_COMM, "swapper" ("swapper/<cpu>" once init_idle() ran).
    if (idle)
      c.filter("task_struct.comm", "idle task is swapper", (o) =>
        /^swapper(\/\d+)?$/.test(cur.str(o, TASK_COMM_LEN) ?? ""),
      );
    c.filter("task_struct.comm", "printable NUL-terminated name", (o) =>
      all.every((t) => isNameString(t.slice(o, TASK_COMM_LEN), TASK_COMM_LEN, true)),
    );
    this.innermostString("task_struct.comm", TASK_COMM_LEN);

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

    this.mmPointers(obs, cur, idle, all, child);
    this.realParent(cur, idle, tasks, child);
    this.pending(cur, child);
    this.credRules(obs.view, [cur, ...(tasks ?? []), ...(child ? [child] : [])]);
    if (tasks) this.kthreadNames(obs.view, tasks);
  }

  /** Once flags, mm and comm are known: the members behind kernel threads' /proc names. */
  private kthreadNames(view: GuestView, tasks: readonly Obj[]): void {
    const c = this.cands;
    const [flags, mm, comm] = ["task_struct.flags", "task_struct.mm", "task_struct.comm"].map((k) =>
      c.one(k),
    );
    if (!this.names?.wanted() || flags === undefined || mm === undefined || comm === undefined) return;
    // The listing reads only the span of the awaited members by now; these lie elsewhere.
    const full = tasks.map((t) => Obj.lazy(view, t.addr, 0, this.facts.taskSize));
    this.names.observe(
      view,
      full.map((t) => ({
        addr: t.addr,
        flags: t.u32(flags),
        mm: t.u64(mm),
        comm: t.str(comm, TASK_COMM_LEN) ?? "",
        u64: (o: number) => t.u64(o),
      })),
    );
  }

  /**
   * real_cred: the idle task runs with init_cred, and so does nothing else in it but its twin
   * `cred` (declared next; the two differ only while a task overrides its credentials).
   * cred.uid: init_cred is root with every capability, and struct cred declares a usage count
   * (atomic_t, or atomic_long_t since 6.7; CONFIG_DEBUG_CREDENTIALS adds three fields ending in
   * CRED_MAGIC), eight zero ids, zero securebits, then the capability sets inheritable (empty),
   * permitted, effective and bounding (full), aligned to 4 or 8 bytes. Only one start of the ids
   * makes that whole sequence line up in init_cred's bytes.
   */
  private credRules(view: GuestView, tasks: readonly Obj[]): void {
    const c = this.cands;
    const initCred = this.facts.initCred;
    if (initCred === undefined || !c.has("cred.uid")) return;
    if (c.get("task_struct.real_cred").length > 1) {
      const init = this.readTask(view, this.facts.initTask, true);
      if (init)
        c.filter("task_struct.real_cred", "idle task runs with init_cred", (o) => init.u64(o) === initCred);
      this.trackTwins("task_struct.real_cred", tasks, 8);
    }
    if (c.get("cred.uid").length > 1) {
      const bytes = view.read(initCred, INIT_CRED_SPAN);
      if (!bytes) return;
      const fits = CRED_ID_STARTS.filter((f) => credLayoutFits(bytes, f));
      if (fits.length === 1)
        c.resolve(
          "cred.uid",
          fits[0]!,
          "the only start of eight zero ids in init_cred that a usage count precedes and securebits plus the capability sets (empty, full, full, full) follow",
        );
      else c.replace("cred.uid", "init_cred: usage, ids, securebits, capability sets", fits);
    }
  }

  /**
   * pid and tgid: non-negative and at most PID_MAX_LIMIT; the idle task's is 0; distinct among
   * live processes (one leader per thread group); and each new process gets a larger number
   * than the one created before it (pids are handed out in increasing order until they wrap
   * at pid_max, which a boot never reaches).
   */
  private idRules(
    key: string,
    cur: Obj,
    idle: boolean,
    all: Obj[],
    tasks: Obj[] | undefined,
    child: Obj | undefined,
  ): void {
    const c = this.cands;
    c.filter(key, "0..PID_MAX_LIMIT", (o) => all.every((t) => t.u32(o) >= 0 && t.u32(o) <= PID_MAX_LIMIT));
    if (idle) c.filter(key, "idle task is 0", (o) => cur.u32(o) === 0);
    if (tasks) {
      c.filter(key, "unique among processes", (o) => {
        const seen = new Set<number>();
        for (const t of tasks) {
          const v = t.u32(o);
          if (v <= 0 || seen.has(v)) return false;
          seen.add(v);
        }
        return true;
      });
    }
    if (child) {
      const last = this.lastChild.get(key)!;
      c.filter(key, "increases in creation order", (o) => {
        const prev = last.get(o);
        return prev === undefined || child.u32(o) > prev;
      });
      for (const o of c.get(key)) last.set(o, child.u32(o));
    }
  }

  /** A process (thread-group leader) has tgid == pid. */
  private leaderIds(tasks: Obj[]): void {
    const c = this.cands;
    const pids = c.get("task_struct.pid");
    const tgids = c.get("task_struct.tgid");
    if (pids.length * tgids.length > MAX_JOINT) return;
    const agree = (a: number, b: number) => a !== b && tasks.every((t) => t.u32(a) === t.u32(b));
    c.replace(
      "task_struct.tgid",
      "leader's tgid is its pid",
      tgids.filter((t) => pids.some((p) => agree(t, p))),
    );
    c.replace(
      "task_struct.pid",
      "leader's tgid is its pid",
      pids.filter((p) => tgids.some((t) => agree(t, p))),
    );
  }

  /**
   * The one event that tells pid from tgid: a thread is created (nr_threads grows, the process
   * count does not). The new thread shares its creator's tgid but has a new, larger pid. It is
   * not on the tasks list, but copy_process() still holds it in a register or on its stack; a
   * (pid, tgid) pair survives if some such pointer is a task with the creator's tgid and a
   * larger pid than any process created so far.
   */
  private threadChild(obs: Observation, cur: Obj): void {
    const c = this.cands;
    const pids = c.get("task_struct.pid");
    const tgids = c.get("task_struct.tgid");
    const ptrs = [...new Set(obs.pointers)].filter((p) => isKernelPointer(p) && p !== cur.addr);
    if (pids.length * tgids.length * ptrs.length > MAX_JOINT) return;
    const objs = ptrs.map((p) => this.readTask(obs.view, p)).filter((o): o is Obj => o !== undefined);
    const lastPid = this.lastChild.get("task_struct.pid")!;
    const ok = (p: number, t: number) =>
      p !== t &&
      objs.some(
        (x) =>
          x.u32(t) === cur.u32(t) &&
          x.u32(p) !== cur.u32(p) &&
          x.u32(p) > (lastPid.get(p) ?? 0) &&
          x.u32(p) <= PID_MAX_LIMIT,
      );
    c.replace(
      "task_struct.tgid",
      "new thread shares tgid",
      tgids.filter((t) => pids.some((p) => ok(p, t))),
    );
    c.replace(
      "task_struct.pid",
      "new thread has a new pid",
      pids.filter((p) => tgids.some((t) => ok(p, t))),
    );
  }

  /**
   * mm, active_mm and mm_struct.pgd together. mm is NULL for a kernel thread and equals
   * active_mm for a user task; active_mm is what the CPU runs on, so its pgd is the page table
   * in CR3 (read as a kernel virtual address that maps to the page CR3 names: the direct map,
   * or swapper_pg_dir in the image for init_mm). The idle task has no mm and runs on init_mm.
   */
  private mmPointers(obs: Observation, cur: Obj, idle: boolean, all: Obj[], child: Obj | undefined): void {
    const c = this.cands;
    if (
      c.done("task_struct.mm", "task_struct.active_mm") &&
      (!this.groups.has("mm") || c.done("mm_struct.pgd"))
    )
      return;
    const ptrOrNull = (v: bigint) => v === 0n || (isKernelPointer(v) && v % 8n === 0n);
    // Over every task only once few candidates are left: early, the creator and child suffice.
    const seen = (k: string) => (c.get(k).length <= 16 ? all : all.filter((t) => t === cur || t === child));
    for (const k of ["task_struct.mm", "task_struct.active_mm"]) {
      const objs = seen(k);
      c.filter(k, "NULL or a kernel pointer", (o) => objs.every((t) => ptrOrNull(t.u64(o))));
    }
    if (idle) {
      c.filter("task_struct.mm", "idle task has no mm", (o) => cur.u64(o) === 0n);
      c.filter("task_struct.active_mm", "idle task runs on init_mm", (o) => cur.u64(o) === this.facts.initMm);
    }
    // The page table in CR3 is active_mm's for the idle task (init_mm) and for a user task
    // (its own mm). Not for other kernel threads: x86's lazy TLB lets one keep a borrowed
    // active_mm while the CPU has already switched to init_mm.
    const mmOne = c.one("task_struct.mm");
    const user = mmOne !== undefined && cur.u64(mmOne) !== 0n;
    if (idle || user) this.pgdRule(obs, cur);
    const a3 = c.get("task_struct.active_mm");
    const mms = c.get("task_struct.mm");
    if (mms.length * a3.length <= MAX_JOINT) {
      const sameOrNull = (t: Obj, m: number) =>
        t.u64(m) === 0n || a3.some((a) => a !== m && t.u64(a) === t.u64(m));
      c.filter("task_struct.mm", "NULL or equal to active_mm", (m) => sameOrNull(cur, m));
      if (child) {
        // copy_mm(): a child gets mm == active_mm (both NULL for a kernel thread).
        c.filter("task_struct.mm", "child's mm is its active_mm", (m) =>
          a3.some((a) => a !== m && child.u64(a) === child.u64(m)),
        );
        const m2 = c.get("task_struct.mm");
        c.filter("task_struct.active_mm", "child's active_mm is its mm", (a) =>
          m2.some((m) => a !== m && child.u64(a) === child.u64(m)),
        );
      }
    }
  }

  private pgdRule(obs: Observation, cur: Obj): void {
    const c = this.cands;
    const actives = c.get("task_struct.active_mm");
    const pgds = this.groups.has("mm") ? c.get("mm_struct.pgd") : [];
    if (pgds.length === 0 || actives.length * pgds.length > MAX_JOINT) return;
    const pgdOf = (mm: bigint, p: number) => {
      const b = obs.view.read(mm + BigInt(p), 8);
      return b ? obs.view.translate(b.readBigUInt64LE(0)) : undefined;
    };
    const runsOnCr3 = (a: number, p: number) => {
      const mm = cur.u64(a);
      return isKernelPointer(mm) && pgdOf(mm, p) === obs.cr3Root;
    };
    c.replace(
      "task_struct.active_mm",
      "its pgd is CR3",
      actives.filter((a) => pgds.some((p) => runsOnCr3(a, p))),
    );
    const a2 = c.get("task_struct.active_mm");
    c.replace(
      "mm_struct.pgd",
      "active_mm's pgd is CR3",
      pgds.filter((p) => a2.some((a) => runsOnCr3(a, p))),
    );
  }

  /**
   * real_parent: the idle task is its own parent; a new child's is its creator or, for
   * CLONE_PARENT/CLONE_THREAD, its creator's parent; every process's is a live process or the
   * idle task. `parent` (declared right after it) holds the same value unless a debugger
   * ptrace-attaches, so when exactly those two survive the first is taken, and said so.
   */
  private realParent(cur: Obj, idle: boolean, tasks: Obj[] | undefined, child: Obj | undefined): void {
    const c = this.cands;
    const k = "task_struct.real_parent";
    if (idle) c.filter(k, "idle task is its own parent", (o) => cur.u64(o) === this.facts.initTask);
    if (child)
      c.filter(
        k,
        "child's parent is its creator",
        (o) => child.u64(o) === cur.addr || child.u64(o) === cur.u64(o),
      );
    if (tasks) {
      const live = new Set<bigint>([this.facts.initTask, ...tasks.map((t) => t.addr)]);
      c.filter(k, "parent is a live process", (o) =>
        tasks.every((t) => t.u64(o) !== t.addr && live.has(t.u64(o))),
      );
    }
    this.trackTwins(k, [cur, ...(tasks ?? []), ...(child ? [child] : [])], 8);
  }

  /**
   * pending (struct sigpending { list_head list; sigset_t signal; }): init_sigpending() gives
   * a child an empty queue (list pointing at itself) and no signal bits; in every task the list
   * is empty or links kernel objects.
   */
  private pending(cur: Obj, child: Obj | undefined): void {
    const c = this.cands;
    const k = "task_struct.pending";
    const sane = (t: Obj, o: number) => {
      const self = t.addr + BigInt(o);
      const next = t.u64(o);
      const prev = t.u64(o + 8);
      if (next === self || prev === self) return next === self && prev === self;
      return isKernelPointer(next) && isKernelPointer(prev);
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
    this.releases++;
    const k = "task_struct.pending";
    const c = this.cands;
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

  /** Bounded like everything read from the guest: a boot has a few hundred tasks. */
  private remember(addrs: readonly bigint[]): void {
    if (this.seen.size > MAX_SEEN_TASKS) this.seen.clear();
    for (const a of addrs) this.seen.add(a);
  }

  // ---- mm_struct (user processes) ------------------------------------------------------------

  /**
   * Checked on the current task's mm when it is a user process, through that process's own
   * page tables: the code range is user memory mapped read+execute from its first byte (the
   * page before is not code) to its last (the page after is not); the argument and
   * environment strings are adjacent NUL-terminated runs in writable, non-executable memory.
   */
  private mmRules(obs: Observation, cur: Obj): void {
    const c = this.cands;
    const mmOff = c.one("task_struct.mm");
    const pgdOff = c.one("mm_struct.pgd");
    if (mmOff === undefined || pgdOff === undefined || c.done(...MM_MEMBERS)) return;
    const mmAddr = cur.u64(mmOff);
    if (!isKernelPointer(mmAddr)) return;
    const bytes = obs.view.read(mmAddr, MM_EXTENT);
    if (!bytes) return;
    const mm = Obj.of(mmAddr, bytes);
    const pgd = mm.u64(pgdOff);
    // Pages a process has not touched are not present, and fork() write-protects every private
    // page for copy-on-write: only what a present page says counts, and "writable" does not.
    const page = (a: bigint) => obs.view.userPage(pgd, a);
    const notCode = (a: bigint) => {
      const r = page(a);
      return r !== undefined && !(r.user && r.executable && !r.writable);
    };
    const isCode = (a: bigint) => {
      const r = page(a);
      return r?.user === true && r.executable && !r.writable;
    };
    const notData = (a: bigint) => {
      const r = page(a);
      return r !== undefined && (!r.user || r.executable);
    };
    const byteAt = (a: bigint) => obs.view.readUser(pgd, a, 1)?.[0];

    c.filter("mm_struct.start_code", "first byte of user code", (o) => {
      const v = mm.u64(o);
      return isUser(v) && v > PAGE && !notCode(v) && !isCode(v - 1n);
    });
    c.filter("mm_struct.end_code", "end of user code", (o) => {
      const v = mm.u64(o);
      return isUser(v) && v > PAGE && !notCode(v - 1n) && !isCode(roundUp(v));
    });
    const starts = c.get("mm_struct.start_code");
    const ends = c.get("mm_struct.end_code");
    if (starts.length * ends.length <= 4096) {
      const pair = (s: number, e: number) => userCode(obs.view, pgd, mm.u64(s), mm.u64(e));
      c.replace(
        "mm_struct.start_code",
        "code up to end_code",
        starts.filter((s) => ends.some((e) => pair(s, e))),
      );
      const s2 = c.get("mm_struct.start_code");
      c.replace(
        "mm_struct.end_code",
        "code from start_code",
        ends.filter((e) => s2.some((s) => pair(s, e))),
      );
    }

    c.filter("mm_struct.arg_start", "in user data", (o) => isUser(mm.u64(o)) && !notData(mm.u64(o)));
    for (const k of ["mm_struct.arg_end", "mm_struct.env_start", "mm_struct.env_end"]) {
      c.filter(k, "ends a string in user data", (o) => {
        const v = mm.u64(o);
        return isUser(v) && !notData(v - 1n) && byteAt(v - 1n) === 0;
      });
    }
    // saved_auxv is an array of {key, value}: its AT_EXECFN value is bprm->exec, the filename
    // copied just above the environment, i.e. the same number as env_end. A slot whose key
    // slot holds AT_EXECFN is that copy, not env_end.
    c.filter("mm_struct.env_end", "not the AT_EXECFN auxv entry", (o) => mm.u64(o - 8) !== AT_EXECFN);
    this.argsTuple(mm, (a, n) => obs.view.readUser(pgd, a, n));
  }

  /**
   * create_elf_tables(): arg_start < arg_end == env_start < env_end, the arguments are printable
   * strings ending in NUL. The four are declared in this order in mm_struct (since 2.6), which
   * is what tells arg_end from env_start: they always hold the same value.
   */
  private argsTuple(mm: Obj, readUser: (a: bigint, n: number) => Buffer | undefined): void {
    const c = this.cands;
    const keys = ["mm_struct.arg_start", "mm_struct.arg_end", "mm_struct.env_start", "mm_struct.env_end"];
    const sets = keys.map((k) => c.get(k));
    if (sets[1]!.length * sets[2]!.length > MAX_JOINT || sets[0]!.length * sets[3]!.length > MAX_JOINT)
      return;
    const printable = new Map<string, boolean>();
    const argsOk = (a: bigint, b: bigint) => {
      const key = `${a}:${b}`;
      let ok = printable.get(key);
      if (ok === undefined) {
        const bytes = b - a <= BigInt(MAX_ARGS) ? readUser(a, Number(b - a)) : undefined;
        // Arguments may be UTF-8 or any bytes but controls (the test guest runs `wl-café`).
        ok = bytes?.every((x) => x === 0 || (x >= 0x20 && x !== 0x7f)) === true;
        printable.set(key, ok);
      }
      return ok;
    };
    const keep = keys.map(() => new Set<number>());
    // The equal pair first: it is what narrows the search.
    for (const a1 of sets[1]!)
      for (const e0 of sets[2]!) {
        if (!(a1 < e0 && mm.u64(a1) === mm.u64(e0))) continue;
        const mid = mm.u64(a1);
        for (const a0 of sets[0]!)
          for (const e1 of sets[3]!) {
            if (!(a0 < a1 && e0 < e1)) continue;
            const [va0, ve1] = [mm.u64(a0), mm.u64(e1)];
            if (!(va0 < mid && mid < ve1 && ve1 - va0 <= BigInt(MAX_ARGS))) continue;
            if (!argsOk(va0, mid)) continue;
            [a0, a1, e0, e1].forEach((o, i) => keep[i]!.add(o));
          }
      }
    keys.forEach((k, i) =>
      c.replace(
        k,
        "arg/env strings in order",
        sets[i]!.filter((o) => keep[i]!.has(o)),
      ),
    );
  }

  // ---- modules -------------------------------------------------------------------------------

  /**
   * Module members, relative to the `list` node as in the patent (step b4: the newest module is
   * the head's `next`). At the moment a module joins the list (add_unformed_module) it is
   * MODULE_STATE_UNFORMED; once the process that loaded it is gone, finit_module() has returned,
   * so the module is LIVE and its core text is mapped executable: base page-aligned in the module
   * area, [base, base+text_size) executable and the page after it not.
   */
  private moduleRules(obs: Observation, cur: Obj, tasks: Obj[] | undefined): void {
    const c = this.cands;
    // At a module event list_add_rcu() has just set head->next; the old first's prev is written
    // next, so the ring is checked forwards only.
    const nodes = ringNodes(obs.view, this.facts.modulesHead, MAX_MODULES, false);
    if (!nodes) return;
    const pidOff = c.one("task_struct.pid");
    // Only a node never seen before was just added (a failed load's removal also writes the head).
    const added = obs.kind === "module" && nodes.length > 0 && !this.modules.has(nodes[0]!);
    if (added) {
      this.modules.set(nodes[0]!, {
        loader: cur.addr,
        loaderPid: pidOff === undefined ? undefined : cur.u32(pidOff),
        addedAt: obs.index,
      });
    }
    const mods = nodes.map((n) => ({ node: n, obj: this.readModule(obs.view, n) }));
    const present = mods.filter((m): m is { node: bigint; obj: Obj } => m.obj !== undefined);
    if (present.length === 0) return;
    const newest = added ? present.find((m) => m.node === nodes[0]) : undefined;
    const alive = new Set(tasks?.map((t) => `${t.addr}:${pidOff === undefined ? "" : t.u32(pidOff)}`) ?? []);
    const settled = present.filter((m) => {
      const seen = this.modules.get(m.node);
      if (!seen || !tasks || pidOff === undefined || seen.loaderPid === undefined) return false;
      return seen.addedAt < obs.index && !alive.has(`${seen.loader}:${seen.loaderPid}`);
    });

    c.filter("module.state", "a module_state value", (o) =>
      present.every((m) => m.obj.u32(o) >= 0 && m.obj.u32(o) <= MODULE_STATE_UNFORMED),
    );
    if (newest)
      c.filter("module.state", "UNFORMED when listed", (o) => newest.obj.u32(o) === MODULE_STATE_UNFORMED);
    if (settled.length > 0)
      c.filter("module.state", "LIVE once loaded", (o) =>
        settled.every((m) => m.obj.u32(o) === MODULE_STATE_LIVE),
      );

    c.filter("module.name", "printable NUL-terminated name", (o) =>
      present.every((m) => isNameString(m.obj.slice(o, MODULE_NAME_LEN), MODULE_NAME_LEN)),
    );
    // add_unformed_module() refuses a second module of the same name.
    c.filter("module.name", "unique among modules", (o) => {
      const names = present.map((m) => m.obj.str(o, MODULE_NAME_LEN));
      return new Set(names).size === names.length;
    });
    this.innermostString("module.name", MODULE_NAME_LEN);

    c.filter("module.core_base", "page-aligned in the module area", (o) =>
      present.every((m) => {
        const v = m.obj.u64(o);
        return v % PAGE === 0n && v >= MODULES_START && v < MODULES_END;
      }),
    );
    c.filter("module.core_text_size", "a whole number of pages", (o) =>
      present.every((m) => {
        const v = m.obj.u32(o);
        return v > 0 && v % 4096 === 0 && v < 1 << 26;
      }),
    );
    if (settled.length === 0) return;
    this.settledSeen = true;
    const exec = (a: bigint) => obs.view.kernelPage(a)?.executable === true;
    const notExec = (a: bigint) => !exec(a);
    c.filter("module.core_base", "executable once loaded", (o) => settled.every((m) => exec(m.obj.u64(o))));
    const bases = c.get("module.core_base");
    const sizes = c.get("module.core_text_size");
    if (bases.length * sizes.length > 4096) return;
    const text = (b: number, s: number) =>
      settled.every((m) => {
        const base = m.obj.u64(b);
        const end = base + BigInt(m.obj.u32(s));
        return codeRange(base, end, notExec, exec) && !exec(end);
      });
    c.replace(
      "module.core_text_size",
      "text is exactly the executable pages",
      sizes.filter((s) => bases.some((b) => text(b, s))),
    );
    const s2 = c.get("module.core_text_size");
    c.replace(
      "module.core_base",
      "text is exactly the executable pages",
      bases.filter((b) => s2.some((s) => text(b, s))),
    );
    this.trackTwins(
      "module.core_text_size",
      settled.map((m) => m.obj),
      4,
    );
  }

  private readModule(view: GuestView, node: bigint): Obj | undefined {
    const w = readWindow(view, node, MODULE_FROM, MODULE_TO);
    return w ? Obj.of(node, w.bytes, w.base) : undefined;
  }

  // ---- choices outside the constraints -------------------------------------------------------

  /**
   * A name array is also "a printable string" at any offset inside its text: when every
   * survivor lies within one array's length of the lowest, and the constraints held for all
   * of them at every event, they are one buffer seen from inside, and the member starts at the
   * lowest. (A survivor further away is a different field, and the member stays unresolved.)
   */
  private innermostString(key: string, len: number): void {
    const s = this.cands.get(key);
    if (s.length < 2) return;
    const lo = s[0]!;
    if (s.every((o) => o - lo < len)) this.cands.replace(key, "suffix of a longer candidate", [lo]);
  }

  /** Notes whether the survivors of `key` disagree on some object. */
  private trackTwins(key: string, objs: readonly Obj[], width: 4 | 8): void {
    const s = this.cands.get(key);
    if (s.length < 2 || this.differed.has(key)) return;
    const v = (o: Obj, off: number) => (width === 4 ? BigInt(o.u32(off)) : o.u64(off));
    if (objs.some((o) => s.some((off) => v(o, off) !== v(o, s[0]!)))) this.differed.add(key);
  }

  private resolveTwins(): void {
    const sizes = this.cands.get("module.core_text_size");
    const base = this.cands.one("module.core_base");
    if (
      sizes.length > 1 &&
      base !== undefined &&
      this.settledSeen &&
      !this.differed.has("module.core_text_size")
    ) {
      const after = sizes.filter((o) => o > base);
      if (after.length > 0) {
        this.cands.resolve(
          "module.core_text_size",
          after[0]!,
          `${sizes.join(", ")} held the same page count in every loaded module; the one nearest after the text base (${base}) is taken, as a layout keeps a region's size beside its base`,
        );
      }
    }
    const rc = this.cands.get("task_struct.real_cred");
    if (rc.length === 2 && rc[1]! - rc[0]! === 8 && !this.differed.has("task_struct.real_cred")) {
      this.cands.resolve(
        "task_struct.real_cred",
        rc[0]!,
        `real_cred and cred (${rc[0]}, ${rc[1]}) held the same pointer at every event; real_cred is declared first`,
      );
    }
    const s = this.cands.get("task_struct.real_parent");
    if (s.length === 2 && s[1]! - s[0]! === 8 && !this.differed.has("task_struct.real_parent")) {
      this.cands.resolve(
        "task_struct.real_parent",
        s[0]!,
        `real_parent and parent (${s[0]}, ${s[1]}) held the same value at every event (no ptrace); real_parent is declared first`,
      );
    }
  }

  // ---- results ------------------------------------------------------------------------------

  /** Every member that is waited for has one candidate left (and no structural check failed). */
  converged(): boolean {
    return (
      this.fixedFailures.length === 0 &&
      this.cands.keys().every((k) => BEST_EFFORT.has(k) || this.cands.get(k).length === 1)
    );
  }

  status(): MemberStatus[] {
    return this.cands.keys().map((k) => this.cands.status(k));
  }

  /**
   * The offsets profile: every converged member, module members made absolute (`state` is the
   * first member of struct module, so `list` sits at minus its relative offset), plus members
   * whose place follows from the ones found: `pending.signal` (after the 16-byte list head) and
   * `thread_info.flags` (THREAD_INFO_IN_TASK: thread_info is task_struct's first member and
   * flags its first field).
   */
  profile(): Record<string, number> {
    const c = this.cands;
    const out: Record<string, number> = {};
    for (const k of [...TASK_MEMBERS, ...MM_MEMBERS]) {
      const o = c.one(k);
      if (o !== undefined) out[k] = o;
    }
    if (this.groups.has("task")) out["task_struct.thread_info.flags"] = 0;
    const pending = c.one("task_struct.pending");
    if (pending !== undefined) out["task_struct.pending.signal"] = pending + 16;
    this.names?.profile(out);
    const realCred = c.one("task_struct.real_cred");
    if (realCred !== undefined) out["task_struct.real_cred"] = realCred;
    const uid = c.one("cred.uid");
    // gid and euid follow from the ids' declaration order: uid, gid, suid, sgid, euid, ...
    if (uid !== undefined)
      Object.assign(out, { "cred.uid": uid, "cred.gid": uid + 4, "cred.euid": uid + 16 });
    const state = c.one("module.state");
    if (state !== undefined) {
      const list = -state;
      out["module.state"] = 0;
      out["module.list"] = list;
      const abs = (k: string, name: string) => {
        const o = c.one(k);
        if (o !== undefined) out[name] = o + list;
      };
      abs("module.name", "module.name");
      abs("module.core_base", "module.module_core");
      abs("module.core_text_size", "module.core_text_size");
    }
    return out;
  }
}

function sameSet(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Nodes of a ring from `head` (excluded) if it closes consistently within `max` nodes. */
export function ringNodes(
  view: GuestView,
  head: bigint,
  max: number,
  checkBack = true,
): bigint[] | undefined {
  const out: bigint[] = [];
  let node = head;
  for (let i = 0; i <= max; i++) {
    const b = view.read(node, 8);
    if (!b) return undefined;
    const next = b.readBigUInt64LE(0);
    if (!isKernelPointer(next)) return undefined;
    if (checkBack) {
      const back = view.read(next + 8n, 8);
      if (!back || back.readBigUInt64LE(0) !== node) return undefined;
    }
    if (next === head) return out;
    out.push(next);
    node = next;
  }
  return undefined;
}

/** Length of the ring at `head`, or -1 when it is not a consistent ring of at most `max` nodes. */
export function ringLength(view: GuestView, head: bigint, max: number): number {
  return ringNodes(view, head, max)?.length ?? -1;
}

/** [start, end) holds present user code and nothing else that is present. */
function userCode(view: GuestView, pgd: bigint, start: bigint, end: bigint): boolean {
  if (!(start < end)) return false;
  const runs = view.userRuns(pgd, start, end);
  if (!runs || runs.length === 0) return false;
  return runs.every((r) => r.user && r.executable && !r.writable);
}

/**
 * [start, end) is non-empty, no present page of it is something else than code, and at least
 * one is present code (bounded).
 */
function codeRange(
  start: bigint,
  end: bigint,
  notCode: (a: bigint) => boolean,
  isCode: (a: bigint) => boolean,
): boolean {
  if (!(start < end)) return false;
  const pages = (roundUp(end) - (start / PAGE) * PAGE) / PAGE;
  if (pages > BigInt(MAX_CODE_PAGES)) return false;
  let seen = false;
  for (let a = (start / PAGE) * PAGE; a < end; a += PAGE) {
    if (notCode(a)) return false;
    seen ||= isCode(a);
  }
  return seen;
}

/**
 * The bytes around `center` from `from` to `to`, cut to the pages mapped contiguously with
 * `center`'s own (a module's struct may sit at the start of its allocation, after a guard page).
 */
export function readWindow(
  view: GuestView,
  center: bigint,
  from: number,
  to: number,
): { base: number; bytes: Buffer } | undefined {
  const page = center & ~(PAGE - 1n);
  let lo = page;
  while (lo > center + BigInt(from) && view.read(lo - PAGE, 1)) lo -= PAGE;
  let hi = page + PAGE;
  while (hi < center + BigInt(to) && view.read(hi, 1)) hi += PAGE;
  const start = lo > center + BigInt(from) ? lo : center + BigInt(from);
  const end = hi < center + BigInt(to) ? hi : center + BigInt(to);
  const bytes = view.read(start, Number(end - start));
  return bytes ? { base: Number(start - center), bytes } : undefined;
}
