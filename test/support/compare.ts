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
export async function eventually(g: TestGuest, check: (view: GuestView) => Promise<void>): Promise<void> {
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
 * Differences a live guest makes between two moments, reconciled and nothing else. A kernel
 * thread that the guest's view caught running (R) is usually one the view itself woke:
 * the RCU grace-period thread and the console workers run while a shell reads /proc. Our paused
 * snapshot, taken moments later, finds it asleep. Only that pairing is reconciled; every other
 * state must match exactly.
 */
export function reconcileState<T extends { state: string; comm: string }>(
  mine: T,
  theirs: { state: string; comm: string } | undefined,
  kthread: boolean,
): T {
  if (!theirs || !kthread) return mine;
  let out = mine;
  if (theirs.state === "R" && (mine.state === "I" || mine.state === "S")) out = { ...out, state: "R" };
  // A workqueue worker's "-desc" suffix names the last work item it ran, which changes from one
  // moment to the next; the worker itself ("kworker/u4:3") must still match exactly. A rescuer
  // ("kworker/R-edac-poller") has no suffix: all of its name is its name.
  const base = (name: string) =>
    name.startsWith("kworker/") && !name.startsWith("kworker/R-") ? name.replace(/[-+].*$/, "") : name;
  if (mine.comm !== theirs.comm && base(mine.comm) === base(theirs.comm)) out = { ...out, comm: theirs.comm };
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
  const mine = ours.map((p) =>
    reconcileState(
      { pid: p.pid, ppid: p.ppid, uid: p.uid, state: p.state, comm: p.comm, cmdline: p.cmdline },
      byPid.get(p.pid),
      p.ppid === 2,
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
