/**
 * The semantics comparisons every guest variant runs: vmsight's ps/threads/lsmod/maps against
 * what the guest itself prints from /proc over its console.
 */
import assert from "node:assert/strict";
import { cliJson, runCli } from "./cli.js";
import { type Ps, assertPsMatchesView, eventually, reconcileState, transient } from "./compare.js";
import type { TestGuest } from "./guest.js";

/** every pid, ppid, uid, state, comm and cmdline, and the workload's odd names. */
export async function checkPs(g: TestGuest): Promise<void> {
  await eventually(g, async (view) => {
    const ours = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    assertPsMatchesView(ours, view);
    assert.ok(ours.some((p) => p.comm === "my worker 1"));
    assert.ok(ours.some((p) => p.comm === "abcdefghijklmno"));
    assert.ok(
      ours.some((p) => p.comm === "averyveryverylo" && p.cmdline === "workload name averyveryverylongname"),
    );
  });
}

/**
 * The PID namespace's view of the processes equals the task list's, both read from one paused
 * instant (a kworker's description changes between two runs of a running guest).
 */
export async function checkPids(g: TestGuest): Promise<void> {
  await cli(g, "pause");
  try {
    const ps = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    const pids = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "pids"]);
    assert.deepEqual(pids, ps);
  } finally {
    await cli(g, "resume");
  }
}

async function cli(g: TestGuest, command: string): Promise<void> {
  const r = await runCli(["--qmp", g.qmpSocket, command]);
  assert.equal(r.code, 0, `${command}: ${r.stderr}`);
}

/** every task of every process, with its tgid. */
export async function checkThreads(g: TestGuest): Promise<void> {
  await eventually(g, async (view) => {
    const ours = await cliJson<{ tid: number; tgid: number; state: string; comm: string }[]>([
      "--qmp",
      g.qmpSocket,
      "threads",
    ]);
    const skip = transient(view);
    const theirs = [...view.threads.entries()]
      .filter(([tgid]) => !skip.has(tgid))
      .flatMap(([, tasks]) => tasks.map((t) => ({ tid: t.pid, tgid: t.tgid, state: t.state, comm: t.comm })))
      .sort((a, b) => a.tgid - b.tgid || a.tid - b.tid);
    const byTid = new Map(theirs.map((t) => [t.tid, t]));
    const kthreads = new Set(view.processes.filter((p) => p.ppid === 2).map((p) => p.pid));
    assert.deepEqual(
      ours.map((t) =>
        reconcileState(
          { tid: t.tid, tgid: t.tgid, state: t.state, comm: t.comm },
          byTid.get(t.tid),
          kthreads.has(t.tgid),
        ),
      ),
      theirs,
    );
    const threaded = ours.filter((t) => t.tgid === view.roles.get("threads"));
    assert.equal(threaded.length, 5);
  });
}

/** names, sizes, states and base addresses of /proc/modules. */
export async function checkLsmod(g: TestGuest): Promise<void> {
  const view = await g.view();
  const ours = await cliJson<{ name: string; base: string; size: number; state: string }[]>([
    "--qmp",
    g.qmpSocket,
    "lsmod",
  ]);
  assert.deepEqual(
    ours.map((m) => ({ name: m.name, size: m.size, state: m.state, base: BigInt(m.base) })),
    view.modules.map((m) => ({ name: m.name, size: m.size, state: m.state, base: m.address })),
  );
  assert.equal(ours.length, 3);
}

/** two workload processes, line for line. */
export async function checkMaps(g: TestGuest): Promise<void> {
  const view = await g.view();
  for (const role of ["memwrite", "threads"]) {
    const pid = view.roles.get(role)!;
    const ours = await cliJson<
      {
        start: string;
        end: string;
        perms: string;
        offset: string;
        dev: string;
        inode: string;
        path: string;
      }[]
    >(["--qmp", g.qmpSocket, "maps", String(pid)]);
    const theirs = view.maps.get(pid)!;
    assert.ok(theirs.length > 3, `the guest printed maps for ${role}`);
    assert.deepEqual(
      ours.map((m) => ({
        start: BigInt(m.start),
        end: BigInt(m.end),
        perms: m.perms,
        offset: BigInt(m.offset),
        dev: m.dev,
        inode: BigInt(m.inode),
        path: m.path,
      })),
      theirs.map((m) => ({
        start: m.start,
        end: m.end,
        perms: m.perms,
        offset: m.offset,
        dev: m.dev,
        inode: m.inode,
        path: m.path,
      })),
      `maps of ${role} (pid ${pid})`,
    );
  }
}
