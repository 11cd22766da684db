import { offsetRange } from "./candidates.js";
import type { MemberStatus } from "./candidates.js";
import { BEST_EFFORT, MM_MEMBERS, type MemberGroup, TASK_MEMBERS } from "./members.js";
import { MM_EXTENT, MODULE_FROM, MODULE_NAME_LEN, MODULE_TO, TASK_COMM_LEN } from "./rules/abi.js";
import { RuleContext, type TaskEvent } from "./rules/context.js";
import { CRED_ID_STARTS, IdRules } from "./rules/ids-creds.js";
import { KthreadNames, observeKthreadNames } from "./rules/kernel-threads.js";
import { mmPointers, mmRules } from "./rules/mm.js";
import { ModuleRules } from "./rules/modules.js";
import type { Obj } from "./rules/reader.js";
import { TaskRules } from "./rules/tasks.js";
import type { GuestView, KernelFacts, Observation } from "./types.js";

/**
 * Step 3 of CN109857520, adapted to x86-64 kernels of today: at each trapped event, every
 * candidate offset of every member is checked against a property the member has in every
 * kernel build, and candidates that violate it are dropped. Pure: all guest access goes
 * through the Observation's GuestView, so crafted memory drives it in unit tests.
 *
 * The rules live by kernel subsystem in rules/ (tasks, ids-creds, mm, modules,
 * kernel-threads); this class runs them in order at each event and assembles the profile.
 * Some properties relate members to each other (a list length needs `tasks` to know which
 * tasks exist; `mm->pgd` needs `active_mm`). Such rules wait until the members they lean on
 * have converged, or judge candidates jointly (rules/joint.ts).
 */

export interface DiscoveryOptions {
  /** Which groups to discover (default all three). */
  readonly groups?: readonly MemberGroup[];
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
  private readonly ctx: RuleContext;
  private readonly tasks: TaskRules;
  private readonly ids: IdRules;
  private readonly modules: ModuleRules;
  private readonly names: KthreadNames | undefined;
  creates = 0;
  releases = 0;
  moduleEvents = 0;
  /** pid of the newest child, once pid has converged. */
  highestPid = 0;

  constructor(facts: KernelFacts, opts: DiscoveryOptions = {}) {
    const groups = new Set<MemberGroup>(opts.groups ?? ["task", "mm", "module"]);
    this.ctx = new RuleContext(facts, groups);
    this.tasks = new TaskRules(this.ctx);
    this.ids = new IdRules(this.ctx);
    this.modules = new ModuleRules(this.ctx);
    const t = facts.taskSize;
    const c = this.ctx.cands;
    if (groups.has("task")) {
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
      groups.has("task") && facts.workerThread !== undefined
        ? new KthreadNames(c, { workerThread: facts.workerThread, rescuerThread: facts.rescuerThread }, t)
        : undefined;
    if (groups.has("mm")) {
      for (const k of MM_MEMBERS) c.define(k, offsetRange(0, MM_EXTENT - 8, 8));
    }
    if (groups.has("module")) {
      c.define("module.state", offsetRange(MODULE_FROM, MODULE_TO - 4, 4));
      c.define("module.name", offsetRange(MODULE_FROM, MODULE_TO - MODULE_NAME_LEN, 1));
      c.define("module.core_base", offsetRange(MODULE_FROM, MODULE_TO - 8, 8));
      c.define("module.core_text_size", offsetRange(MODULE_FROM, MODULE_TO - 4, 4));
    }
  }

  get cands() {
    return this.ctx.cands;
  }

  /** Members placed by a structural fact (not filtered) whose check failed, with why. */
  get fixedFailures(): readonly string[] {
    return this.ctx.fixedFailures;
  }

  /** Applies every rule to one event. */
  observe(obs: Observation): EventSummary {
    const { ctx } = this;
    const c = ctx.cands;
    c.event = obs.index;
    if (obs.kind === "create") this.creates++;
    if (obs.kind === "release") this.releases++;
    if (obs.kind === "module") this.moduleEvents++;
    const cur = ctx.readTask(obs.view, obs.current, true);
    let ev: TaskEvent | undefined;
    let tasks: Obj[] | undefined;
    if (cur && obs.kind === "quiet") {
      // Nothing is happening: the rules that judge an event's moment (who created whom, who
      // runs on which mm) do not apply; a loaded module's lasting state does.
      tasks = ctx.groups.has("task") ? this.tasks.list(obs) : undefined;
      if (ctx.groups.has("module")) this.modules.observe(obs, cur, tasks);
    } else if (cur) {
      if (ctx.groups.has("task")) {
        ev = this.taskEvent(obs, cur);
        tasks = ev.tasks;
        this.taskRules(ev);
      }
      if (ctx.groups.has("mm")) mmRules(ctx, obs, cur);
      if (ctx.groups.has("module")) this.modules.observe(obs, cur, tasks);
    }
    this.modules.resolveTwins();
    this.ids.resolveTwins();
    ctx.declaredFirst(
      "task_struct.real_parent",
      (a, b) =>
        `real_parent and parent (${a}, ${b}) held the same value at every event (no ptrace); real_parent is declared first`,
    );
    c.endEvent();
    this.tasks.endEvent(obs.current, tasks, ev?.child);
    const pidOff = c.one("task_struct.pid");
    if (ev?.child && pidOff !== undefined) this.highestPid = Math.max(this.highestPid, ev.child.u32(pidOff));
    return {
      index: obs.index,
      kind: obs.kind,
      tasks: tasks?.length,
      child: ev?.child?.addr,
      threadCreated: ev?.threadCreated ?? false,
    };
  }

  /** The tasks list (once known) and which task this event created. */
  private taskEvent(obs: Observation, cur: Obj): TaskEvent {
    const { ctx } = this;
    this.tasks.ring(obs);
    const tasks = this.tasks.list(obs);
    let { child, threadCreated } = this.tasks.classify(obs, tasks);
    // The listing reads only the span of the awaited members; the child is read whole.
    if (child && ctx.taskSpan()) child = ctx.readTask(obs.view, child.addr, true);
    const all = [cur, ...(tasks ?? []), ...(child ? [child] : [])];
    return { obs, cur, idle: cur.addr === ctx.facts.initTask, tasks, child, threadCreated, all };
  }

  private taskRules(ev: TaskEvent): void {
    this.tasks.threadInfoFlags(ev.cur);
    this.ids.observe(ev);
    this.tasks.basics(ev);
    mmPointers(this.ctx, ev);
    this.tasks.realParent(ev);
    this.tasks.pending(ev);
    this.ids.creds(ev.obs.view, ev.all);
    if (ev.tasks) observeKthreadNames(this.ctx, this.names, ev.obs.view, ev.tasks);
  }

  /** A trapped flush_sigqueue(queue): see TaskRules.sigqueueFlushed. */
  sigqueueFlushed(index: number, queue: bigint, view: GuestView): void {
    this.releases++;
    this.tasks.sigqueueFlushed(index, queue, view);
  }

  // ---- results ------------------------------------------------------------------------------

  /** Every member that is waited for has one candidate left (and no structural check failed). */
  converged(): boolean {
    return (
      this.ctx.fixedFailures.length === 0 &&
      this.cands.keys().every((k) => BEST_EFFORT.has(k) || this.cands.get(k).length === 1)
    );
  }

  /**
   * The members `ps` needs (task_struct, mm_struct, cred) are settled: everything awaited but
   * the module members, which only module loads can teach.
   */
  processConverged(): boolean {
    return (
      this.ctx.fixedFailures.length === 0 &&
      this.cands
        .keys()
        .every((k) => BEST_EFFORT.has(k) || k.startsWith("module.") || this.cands.get(k).length === 1)
    );
  }

  /** Awaited members with more or less than one candidate left. */
  open(): string[] {
    return this.cands.keys().filter((k) => !BEST_EFFORT.has(k) && this.cands.get(k).length !== 1);
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
    if (this.ctx.groups.has("task")) out["task_struct.thread_info.flags"] = 0;
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
