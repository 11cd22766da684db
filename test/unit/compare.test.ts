import assert from "node:assert/strict";
import { test } from "node:test";
import { type Ps, assertPsMatchesView, reconcileState, rewriteBudget } from "../support/compare.js";
import { type GuestView, type StatRow, renderGuestBytes } from "../support/oracle.js";

/** A guest view of these processes, as vmsight-view would report them. */
function viewOf(
  rows: readonly { pid: number; ppid: number; state: string; comm: Buffer | string }[],
): GuestView {
  const processes: StatRow[] = rows.map((r) => {
    const commBytes = Buffer.from(r.comm);
    return {
      pid: r.pid,
      comm: renderGuestBytes(commBytes),
      commBytes,
      state: r.state,
      ppid: r.ppid,
      pgrp: 0,
      session: 0,
      flags: 0,
      numThreads: 1,
      startTime: 0n,
      vsize: 0n,
      fields: [],
    };
  });
  return {
    release: "6.1.0",
    viewerPid: undefined,
    roles: new Map(),
    counterAddress: undefined,
    processes,
    threads: new Map(),
    uids: new Map(rows.map((r) => [r.pid, { real: 0, effective: 0, saved: 0, fs: 0 }])),
    gids: new Map(),
    cmdlines: new Map(rows.map((r) => [r.pid, r.ppid === 2 ? "" : renderGuestBytes(Buffer.from(r.comm))])),
    modules: [],
    maps: new Map(),
    mapsLines: new Map(),
    unparsed: [],
  };
}

const GUEST = [
  { pid: 1, ppid: 0, state: "S", comm: "init" },
  { pid: 2, ppid: 0, state: "S", comm: "kthreadd" },
  { pid: 14, ppid: 2, state: "R", comm: "rcu_preempt" },
  { pid: 20, ppid: 2, state: "I", comm: "kworker/0:1-events" },
  { pid: 21, ppid: 2, state: "R", comm: "kworker/u2:0-events_unbound" },
  { pid: 22, ppid: 2, state: "I", comm: "kworker/R-kblockd" },
  { pid: 30, ppid: 2, state: "S", comm: "kswapd0" },
  { pid: 100, ppid: 1, state: "S", comm: Buffer.from("636166c3a9", "hex") },
  { pid: 101, ppid: 1, state: "S", comm: Buffer.from("61e5b7a5e4bd9ce8b49fe8bdbde5b7", "hex") },
  { pid: 102, ppid: 1, state: "S", comm: Buffer.from("626164ffc3a95c783431", "hex") },
];

/** What vmsight reports when it decodes names with `decode` and finds the woken threads asleep. */
function ours(decode: (b: Buffer) => string, edit: (p: Ps) => Ps = (p) => p): Ps[] {
  return GUEST.map((g) => {
    const name = decode(Buffer.from(g.comm));
    const asleep = g.state === "R" && g.ppid === 2 ? "S" : g.state;
    return edit({
      pid: g.pid,
      tgid: g.pid,
      ppid: g.ppid,
      uid: 0,
      state: asleep,
      comm: name,
      cmdline: g.ppid === 2 ? "" : name,
    });
  });
}

const view = viewOf(GUEST);
const right = (b: Buffer) => renderGuestBytes(b);

test("a sound listing matches, with the threads the view woke reconciled", () => {
  assertPsMatchesView(ours(right), view);
  // A worker that moved on to other work keeps its id and still has a work item.
  assertPsMatchesView(
    ours(right, (p) => (p.pid === 20 ? { ...p, comm: "kworker/0:1-mm_percpu_wq" } : p)),
    view,
  );
});

test("a latin1 decoder fails: café is not cafÃ©", () => {
  assert.throws(
    () =>
      assertPsMatchesView(
        ours((b) => b.toString("latin1")),
        view,
      ),
    /caf/,
  );
});

test("a UTF-8 decoder with replacement characters fails on the cut and the invalid names", () => {
  assert.throws(
    () =>
      assertPsMatchesView(
        ours((b) => b.toString("utf8")),
        view,
      ),
    assert.AssertionError,
  );
});

test("a decoder that loses the worker's work item fails: the guest's suffix is required", () => {
  const bare = ours(right, (p) => (p.pid === 20 ? { ...p, comm: "kworker/0:1" } : p));
  assert.throws(() => assertPsMatchesView(bare, view), /kworker\/0:1/);
  const wrongId = ours(right, (p) => (p.pid === 20 ? { ...p, comm: "kworker/0:2-events" } : p));
  assert.throws(() => assertPsMatchesView(wrongId, view), /kworker/);
  const garbled = ours(right, (p) => (p.pid === 20 ? { ...p, comm: "kworker/0:1-\\x00\\x00" } : p));
  assert.throws(() => assertPsMatchesView(garbled, view), /kworker/);
  // A rescuer's name has no work item: all of it must match.
  const rescuer = ours(right, (p) => (p.pid === 22 ? { ...p, comm: "kworker/R-kblockX" } : p));
  assert.throws(() => assertPsMatchesView(rescuer, view), /kblock/);
});

test("state rewrites are bounded and limited to threads a shell wakes", () => {
  // Three woken threads is one too many for one comparison.
  const three = viewOf(GUEST.map((g) => (g.pid === 20 ? { ...g, state: "R" } : g)));
  assert.throws(() => assertPsMatchesView(ours(right), three), /state/);
  // kswapd is not woken by reading /proc.
  const kswapd = viewOf(GUEST.map((g) => (g.pid === 30 ? { ...g, state: "R" } : g)));
  assert.throws(() => assertPsMatchesView(ours(right), kswapd), /state/);
  // Never a user process, and never a state other than R against I or S.
  const user = viewOf(GUEST.map((g) => (g.pid === 100 ? { ...g, state: "R" } : g)));
  assert.throws(() => assertPsMatchesView(ours(right), user), /state/);
  const budget = rewriteBudget();
  const d = reconcileState(
    { state: "D", comm: "rcu_preempt" },
    { state: "R", comm: "rcu_preempt" },
    true,
    budget,
  );
  assert.equal(d.state, "D");
  assert.equal(budget.left, 2);
});
