/** Comparing vmsight's view of a live guest with the guest's own /proc view. */
import assert from "node:assert/strict";
import { cliJson } from "./cli.js";
import type { TestGuest } from "./guest.js";
import type { GuestView } from "./oracle.js";

export interface Ps {
  pid: number;
  tgid: number;
  ppid: number;
  uid: number;
  state: string;
  comm: string;
  cmdline: string;
}

/** The view script and its children exist only while the view is printed. */
export function transient(view: GuestView): Set<number> {
  const out = new Set<number>(view.viewerPid === undefined ? [] : [view.viewerPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of view.processes) {
      if (out.has(p.ppid) && !out.has(p.pid)) {
        out.add(p.pid);
        grew = true;
      }
    }
  }
  return out;
}

/**
 * The guest is live: a kworker may pick up other work (its /proc name carries the work's
 * description) between the guest's view and ours. Compare a fresh pair a few times; the last
 * comparison must hold exactly.
 */
export async function eventually<T = void>(g: TestGuest, check: (view: GuestView) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const view = await g.view();
    try {
      return await check(view);
    } catch (error) {
      if (attempt >= 3) throw error;
    }
  }
}

/**
 * Kernel threads that a shell reading /proc wakes: the RCU grace-period threads, softirq
 * threads and workqueue workers (the console's tty work). The guest's view can catch one of
 * them running (R) because of itself; our paused snapshot, taken moments later, finds it asleep.
 */
const WOKEN_BY_VIEW = /^(rcu_|ksoftirqd\/|kworker\/)/;

/** At most this many state rewrites per comparison: a broken state decoder makes far more. */
export const MAX_STATE_REWRITES = 2;

/** Counts the state rewrites of one comparison (one list against one view). */
export interface RewriteBudget {
  left: number;
  readonly rewritten: string[];
}

export function rewriteBudget(max = MAX_STATE_REWRITES): RewriteBudget {
  return { left: max, rewritten: [] };
}

/**
 * A workqueue worker's name: its id ("kworker/u4:3"), then "+desc" while it runs a work item or
 * "-desc" after. A rescuer ("kworker/R-edac-poller") has no suffix: all of its name is its id.
 */
function workerName(name: string): { id: string; desc: string } | undefined {
  const m = /^(kworker\/(?!R-)[^+-]+)([+-].*)$/.exec(name);
  return m ? { id: m[1]!, desc: m[2]! } : undefined;
}

/**
 * Differences a live guest makes between two moments, reconciled and nothing else:
 *   - a kernel thread of WOKEN_BY_VIEW that the view caught running (R) and we find asleep
 *     (I or S) takes the view's state, at most `budget.left` times in one comparison;
 *   - a workqueue worker's work item ("-desc") may have changed, but only when both names carry
 *     one, the worker ids are equal, and ours is a plain workqueue name.
 * Every other difference stays and fails the comparison.
 */
export function reconcileState<T extends { state: string; comm: string }>(
  mine: T,
  theirs: { state: string; comm: string } | undefined,
  kthread: boolean,
  budget: RewriteBudget,
): T {
  if (!theirs || !kthread) return mine;
  let out = mine;
  const sleeping = mine.state === "I" || mine.state === "S";
  if (theirs.state === "R" && sleeping && WOKEN_BY_VIEW.test(theirs.comm) && budget.left > 0) {
    budget.left--;
    budget.rewritten.push(theirs.comm);
    out = { ...out, state: "R" };
  }
  const a = workerName(mine.comm);
  const b = workerName(theirs.comm);
  if (a && b && a.id === b.id && a.desc !== b.desc && /^[+-][\w.-]+$/.test(a.desc)) {
    out = { ...out, comm: theirs.comm };
  }
  return out;
}

/** `vmsight ps --json` rows equal the guest's own /proc view: pid, ppid, uid, state, comm, cmdline. */
export function assertPsMatchesView(ours: readonly Ps[], view: GuestView): void {
  const skip = transient(view);
  const theirs = view.processes
    .filter((p) => !skip.has(p.pid))
    .map((p) => ({
      pid: p.pid,
      ppid: p.ppid,
      uid: view.uids.get(p.pid)?.real,
      state: p.state,
      comm: p.comm,
      cmdline: view.cmdlines.get(p.pid) ?? "",
    }))
    .sort((a, b) => a.pid - b.pid);
  const byPid = new Map(theirs.map((t) => [t.pid, t]));
  const budget = rewriteBudget();
  const mine = ours.map((p) =>
    reconcileState(
      { pid: p.pid, ppid: p.ppid, uid: p.uid, state: p.state, comm: p.comm, cmdline: p.cmdline },
      byPid.get(p.pid),
      p.ppid === 2,
      budget,
    ),
  );
  assert.deepEqual(mine, theirs);
}

/**
 * `ps --no-btf --offsets PROFILE` (the offsets boot discovery learned, no BTF) equals the guest's
 * own /proc, and shows what the test guest's init leaves running: the workload with a name
 * longer than comm holds, a stopped process, kernel threads by their /proc names (a full name
 * comm had to cut, a worker's last work).
 */
export async function assertProfilePsMatches(g: TestGuest, profilePath: string): Promise<void> {
  await eventually(g, async (view) => {
    const ours = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps", "--no-btf", "--offsets", profilePath]);
    assertPsMatchesView(ours, view);
    assert.ok(
      ours.some((p) => p.comm === "averyveryverylo" && p.cmdline === "workload name averyveryverylongname"),
    );
    assert.ok(ours.some((p) => p.state === "T"));
    assert.ok(ours.some((p) => p.comm.length > 15 && p.ppid === 2));
    assert.ok(ours.some((p) => /^kworker\/[^R].*-/.test(p.comm)));
  });
}
