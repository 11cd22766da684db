import { isKernelPointer } from "../../os/linux/walk.js";
import type { Candidates } from "../candidates.js";
import type { GuestView } from "../types.js";
import { MAX_JOINT, PID_MAX_LIMIT } from "./abi.js";
import type { RuleContext, TaskEvent } from "./context.js";
import { keepAgreeing } from "./joint.js";
import type { Obj } from "./reader.js";

/** Where cred.uid can start: after an atomic_t or atomic_long_t usage, or the debug fields. */
export const CRED_ID_STARTS = [4, 8, 20];
const CRED_MAGIC = 0x43736564;
const INIT_CRED_SPAN = 128;
/** Creations that may overtake one another between alloc_pid() and joining the task list. */
const REORDER_WINDOW = 8;

/** pid and tgid, and the credentials (real_cred, cred.uid). */
export class IdRules {
  /** Per pid/tgid candidate: its values in the newest children seen (creation order), newest last. */
  private readonly lastChildren = new Map<string, Map<number, number[]>>([
    ["task_struct.pid", new Map()],
    ["task_struct.tgid", new Map()],
  ]);

  constructor(private readonly ctx: RuleContext) {}

  observe(ev: TaskEvent): void {
    const c = this.ctx.cands;
    const { cur, child, tasks } = ev;
    // Every listed task leads its thread group (pid == tgid): once pid and tgid are down to the
    // same two candidates the list cannot separate them, only a new thread can; skip the work.
    const twins =
      sameSet(c.get("task_struct.pid"), c.get("task_struct.tgid")) && c.get("task_struct.pid").length === 2;
    const listed = twins ? undefined : tasks;
    const seenIds = twins ? [cur, ...(child ? [child] : [])] : ev.all;
    this.idRules("task_struct.pid", ev, seenIds, listed);
    this.idRules("task_struct.tgid", ev, seenIds, listed);
    if (listed) this.leaderIds(listed);
    if (ev.threadCreated) this.threadChild(ev);
  }

  /**
   * pid and tgid: non-negative and at most PID_MAX_LIMIT; the idle task's is 0; distinct among
   * live processes (one leader per thread group); and pids are handed out in increasing order
   * (until they wrap at pid_max, which a boot never reaches) - but in alloc_pid(), before the
   * child is linked and total_forks fires. A fork preempted in between (or on another vCPU) is
   * seen after a later one with a larger pid, so a new child's pid is only known to exceed
   * the smallest of the last REORDER_WINDOW children's, not the last one's: the strict rule
   * emptied pid and tgid on fork-heavy 6.12 boots.
   */
  private idRules(key: string, ev: TaskEvent, all: Obj[], tasks: Obj[] | undefined): void {
    const c = this.ctx.cands;
    const { cur, idle, child } = ev;
    unlessContradictory(c, key, "0..PID_MAX_LIMIT", (o) =>
      all.every((t) => t.u32(o) >= 0 && t.u32(o) <= PID_MAX_LIMIT),
    );
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
      const recent = this.lastChildren.get(key)!;
      unlessContradictory(c, key, "increases in creation order", (o) => {
        const prev = recent.get(o);
        return prev === undefined || child.u32(o) > Math.min(...prev);
      });
      for (const o of c.get(key)) {
        const prev = recent.get(o) ?? [];
        prev.push(child.u32(o));
        if (prev.length > REORDER_WINDOW) prev.shift();
        recent.set(o, prev);
      }
    }
  }

  /** A process (thread-group leader) has tgid == pid. */
  private leaderIds(tasks: Obj[]): void {
    const agree = (t: number, p: number) => t !== p && tasks.every((x) => x.u32(t) === x.u32(p));
    keepAgreeing(
      this.ctx.cands,
      { key: "task_struct.tgid", rule: "leader's tgid is its pid" },
      { key: "task_struct.pid", rule: "leader's tgid is its pid" },
      agree,
    );
  }

  /**
   * The one event that tells pid from tgid: a thread is created (nr_threads grows, the process
   * count does not). The new thread shares its creator's tgid but has a new, larger pid. It is
   * not on the tasks list, but copy_process() still holds it in a register or on its stack; a
   * (pid, tgid) pair survives if some such pointer is a task with the creator's tgid and a
   * larger pid than the recent creations (see idRules for why not all of them).
   */
  private threadChild(ev: TaskEvent): void {
    const { obs, cur } = ev;
    const ptrs = [...new Set(obs.pointers)].filter(
      (p) => isKernelPointer(p, obs.view.bounds) && p !== cur.addr,
    );
    const objs = ptrs.map((p) => this.ctx.readTask(obs.view, p)).filter((o): o is Obj => o !== undefined);
    const recent = this.lastChildren.get("task_struct.pid")!;
    const floor = (p: number) => Math.min(...(recent.get(p) ?? [0]));
    const ok = (t: number, p: number) =>
      p !== t &&
      objs.some(
        (x) =>
          x.u32(t) === cur.u32(t) &&
          x.u32(p) !== cur.u32(p) &&
          x.u32(p) > floor(p) &&
          x.u32(p) <= PID_MAX_LIMIT,
      );
    // An event where no pair agrees tells nothing about the offsets: the new thread was not
    // among the pointers seen (copy_process() keeps it in a register or spills it, but not
    // always within the words scanned). Filtering on it would rule out every candidate at
    // once, as a fork-heavy 6.12 boot showed (pid and tgid both left with none).
    const c = this.ctx.cands;
    const tgids = c.get("task_struct.tgid");
    const pids = c.get("task_struct.pid");
    if (tgids.length * pids.length * Math.max(1, ptrs.length) > MAX_JOINT) return;
    if (!tgids.some((t) => pids.some((p) => ok(t, p)))) return;
    keepAgreeing(
      c,
      { key: "task_struct.tgid", rule: "new thread shares tgid" },
      { key: "task_struct.pid", rule: "new thread has a new pid" },
      ok,
      // Each pair is judged against every pointer.
      MAX_JOINT / Math.max(1, ptrs.length),
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
  creds(view: GuestView, tasks: readonly Obj[]): void {
    const c = this.ctx.cands;
    const initCred = this.ctx.facts.initCred;
    if (initCred === undefined || !c.has("cred.uid")) return;
    if (c.get("task_struct.real_cred").length > 1) {
      const init = this.ctx.readTask(view, this.ctx.facts.initTask, true);
      if (init)
        c.filter("task_struct.real_cred", "idle task runs with init_cred", (o) => init.u64(o) === initCred);
      this.ctx.trackTwins("task_struct.real_cred", tasks, 8);
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

  /** The twin left when real_cred and cred held the same pointer throughout. */
  resolveTwins(): void {
    this.ctx.declaredFirst(
      "task_struct.real_cred",
      (a, b) =>
        `real_cred and cred (${a}, ${b}) held the same pointer at every event; real_cred is declared first`,
    );
  }
}

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

function sameSet(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * A rule that leans on which task an event made (the child, told from the list's tail): when it
 * would rule out every candidate, the event was misread (a fork-heavy boot gave a task that was
 * not the new child), not the member, so that event's evidence is dropped.
 */
function unlessContradictory(c: Candidates, key: string, rule: string, keep: (o: number) => boolean): void {
  if (c.get(key).some(keep)) c.filter(key, rule, keep);
}
