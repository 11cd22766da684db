/**
 * The semantics comparisons every guest variant runs: vmsight's ps/threads/lsmod/maps against
 * what the guest itself prints from /proc over its console.
 */
import assert from "node:assert/strict";
import { cliJson, runCli } from "./cli.js";
import {
  type Ps,
  assertPsMatchesView,
  eventually,
  reconcileState,
  rewriteBudget,
  transient,
} from "./compare.js";
import type { TestGuest } from "./guest.js";
import type { GuestView } from "./oracle.js";

/** every pid, ppid, uid, state, comm and cmdline, and the workload's odd names. */
export async function checkPs(g: TestGuest): Promise<void> {
  await checkPsView(g);
}

/** checkPs, returning the view ps matched, for checks of what stays put meanwhile (lsmod, maps). */
export function checkPsView(g: TestGuest): Promise<GuestView> {
  return eventually(g, async (view) => {
    const ours = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    assertPsMatchesView(ours, view);
    assert.ok(ours.some((p) => p.comm === "my worker 1"));
    assert.ok(ours.some((p) => p.comm === "abcdefghijklmno"));
    assert.ok(
      ours.some((p) => p.comm === "averyveryverylo" && p.cmdline === "workload name averyveryverylongname"),
    );
    // Names that are bytes: UTF-8, a comm cut inside a character, invalid UTF-8.
    for (const role of ["utf8", "cjk", "split", "invalid"]) {
      const pid = view.roles.get(role);
      const theirs = view.processes.find((p) => p.pid === pid);
      assert.ok(theirs && ours.some((p) => p.pid === pid && p.comm === theirs.comm), `${role} in ps`);
    }
    assert.ok(ours.some((p) => p.comm === "café" && p.cmdline === "/bin/wl-café name café"));
    return view;
  });
}

/** every process under its name as the guest shows it. */
export async function checkPstree(g: TestGuest): Promise<void> {
  await eventually(g, async (view) => {
    const ours = await cliJson<{ pid: number; comm: string }[]>(["--qmp", g.qmpSocket, "pstree"]);
    const skip = transient(view);
    const byPid = new Map(view.processes.map((p) => [p.pid, p]));
    const budget = rewriteBudget();
    const names = ours
      .filter((t) => !skip.has(t.pid))
      .map((t) => {
        const theirs = byPid.get(t.pid);
        const mine = { pid: t.pid, state: "", comm: t.comm };
        return reconcileState(mine, theirs && { ...theirs, state: "" }, theirs?.ppid === 2, budget);
      });
    const want = view.processes
      .filter((p) => !skip.has(p.pid))
      .map((p) => ({ pid: p.pid, state: "", comm: p.comm }));
    assert.deepEqual(
      names.sort((a, b) => a.pid - b.pid),
      want.sort((a, b) => a.pid - b.pid),
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
    const budget = rewriteBudget();
    assert.deepEqual(
      ours.map((t) =>
        reconcileState(
          { tid: t.tid, tgid: t.tgid, state: t.state, comm: t.comm },
          byTid.get(t.tid),
          kthreads.has(t.tgid),
          budget,
        ),
      ),
      theirs,
    );
    const threaded = ours.filter((t) => t.tgid === view.roles.get("threads"));
    assert.equal(threaded.length, 5);
  });
}

/**
 * names, sizes, states and base addresses of /proc/modules; against `view` when given (one taken
 * for another check: no module comes or goes meanwhile in a test guest that loads none).
 */
export async function checkLsmod(g: TestGuest, given?: GuestView): Promise<void> {
  const view = given ?? (await g.view());
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

/**
 * workload processes, every column, line for line, and the text output byte for byte; against
 * `view` when given (the workload's processes map nothing new once started).
 */
export async function checkMaps(g: TestGuest, given?: GuestView): Promise<void> {
  const view = given ?? (await g.view());
  for (const role of ["memwrite", "threads", "utf8", "invalid"]) {
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
    // The text output is the guest's own file, byte for byte as the README's rule shows it.
    const text = await runCli(["--qmp", g.qmpSocket, "maps", String(pid)]);
    assert.equal(text.code, 0, text.stderr);
    assert.deepEqual(
      text.stdout.replace(/\n$/, "").split("\n"),
      view.mapsLines.get(pid),
      `maps text of ${role}`,
    );
  }
}
