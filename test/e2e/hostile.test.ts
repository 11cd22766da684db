/**
 * A hostile guest, live: vmsight corrupts a running guest's kernel lists from outside (the guest
 * paused while its memory is changed and read, the original bytes put back before it runs
 * again) the way a bug or a rootkit would, and its listings must stay bounded, say what is
 * wrong, and find what the task list hides through the PID namespace.
 *   (a) a task list that loops: a task's tasks.next points back at an earlier task;
 *   (b) a workload process unlinked from the task list with list_del, kept in the PID namespace;
 *   (c) a module unlinked from the modules list with list_del, left in sysfs.
 * The pids and module names come from the guest's own /proc.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { listModules } from "../../src/os/linux/modules.js";
import { type CliResult, assertCleanError, runCli } from "../support/cli.js";
import { listDel, taskOf, tasksOffset, whileCorrupt } from "../support/corrupt.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import type { GuestView } from "../support/oracle.js";

/** A listing of a corrupt guest that takes longer than this is taken to hang. */
const BOUND_MS = 60_000;

describe("a hostile 6.12 guest: corrupted kernel lists, live", () => {
  let g: TestGuest;
  let view: GuestView;
  const vmsight = (...args: string[]) => runCli(["--qmp", g.qmpSocket, ...args], BOUND_MS);
  const said = (r: CliResult) => `rc ${r.code}: ${(r.code === 0 ? r.stdout : r.stderr).trim()}`;
  const pidsOf = (r: CliResult) =>
    (JSON.parse(r.stdout) as { pid: number; comm: string }[]).map((p) => p.pid);

  before(async () => {
    g = await bootTestGuest("6.12");
    await g.waitReady(180_000);
    view = await g.view();
  });
  after(async () => g?.stop());

  test("(a) a task list that loops: ps and threads fail at once naming task_struct.tasks; pids and lsmod stand", async (t) => {
    const sleeper = view.roles.get("sleep")!;
    await whileCorrupt(
      g,
      (k) => {
        // The sleeper's next is init again: the walk goes round init..sleeper forever.
        const off = tasksOffset(k);
        return [{ addr: taskOf(k, sleeper) + off, value: taskOf(k, 1) + off }];
      },
      async () => {
        for (const command of ["ps", "threads"]) {
          const r = await vmsight(command);
          t.diagnostic(`${command}: ${said(r)}`);
          assertCleanError(r);
          assert.match(r.stderr, /task_struct\.tasks list loops back to 0x[0-9a-f]+ \(from 0x[0-9a-f]+\)/);
        }
        const pids = await vmsight("pids", "--json");
        assert.equal(pids.code, 0, pids.stderr);
        assert.ok(pidsOf(pids).includes(sleeper));
        const lsmod = await vmsight("lsmod", "--json");
        assert.equal(lsmod.code, 0, lsmod.stderr);
        t.diagnostic(`pids: rc 0, ${pidsOf(pids).length} processes; lsmod: rc 0`);
      },
    );
    await assertHealthy(g, view);
  });

  test("(b) a process unlinked from the task list: ps omits it and warns, pids finds it", async (t) => {
    const hidden = view.roles.get("sleep")!;
    await whileCorrupt(
      g,
      (k) => listDel(k, taskOf(k, hidden) + tasksOffset(k)),
      async () => {
        const ps = await vmsight("ps", "--json");
        const pids = await vmsight("pids", "--json");
        assert.equal(ps.code, 0, ps.stderr);
        assert.equal(pids.code, 0, pids.stderr);
        assert.ok(!pidsOf(ps).includes(hidden), `ps does not see the unlinked pid ${hidden}`);
        assert.ok(pidsOf(pids).includes(hidden), `pids finds the unlinked pid ${hidden}`);
        const missing = pidsOf(pids).filter((p) => !pidsOf(ps).includes(p));
        assert.deepEqual(missing, [hidden]);
        const row = (await vmsight("pids")).stdout
          .split("\n")
          .find((l) => new RegExp(`^\\s*${hidden}\\s`).test(l));
        t.diagnostic(
          `ps: rc 0, ${pidsOf(ps).length} processes, no pid ${hidden}; stderr: ${ps.stderr.trim()}`,
        );
        assert.match(
          ps.stderr,
          /^warning: the task_struct\.tasks list has \d+ processes but the kernel counts \d+ \(process_counts\): some are unlinked from the list; `vmsight pids` lists them\n$/,
        );
        t.diagnostic(`pids: rc 0, ${pidsOf(pids).length} processes, among them: ${row?.trim()}`);
        const lsmod = await vmsight("lsmod");
        assert.equal(lsmod.code, 0, lsmod.stderr);
      },
    );
    await assertHealthy(g, view);
  });

  test("(c) a module unlinked from the modules list: lsmod omits it, and says sysfs still has it", async (t) => {
    const name = view.modules[0]!.name;
    await whileCorrupt(
      g,
      (k) => {
        const mod = listModules(k).find((m) => m.name === name);
        assert.ok(mod, `${name} is on the modules list before the corruption`);
        return listDel(k, mod.addr + BigInt(k.layout.offsetof("module", "list")));
      },
      async () => {
        const r = await vmsight("lsmod", "--json");
        assert.equal(r.code, 0, r.stderr);
        const names = (JSON.parse(r.stdout) as { name: string }[]).map((m) => m.name);
        assert.deepEqual(
          names,
          view.modules.map((m) => m.name).filter((n) => n !== name),
        );
        t.diagnostic(`lsmod: rc 0, ${names.join(", ")} (${name} unlinked); stderr: ${r.stderr.trim()}`);
        assert.match(
          r.stderr,
          new RegExp(
            `^warning: module ${name} \\(struct module 0x[0-9a-f]+\\) is in sysfs \\(module_kset\\) but not on the modules list`,
          ),
        );
        for (const command of ["ps", "pids"]) {
          const c = await vmsight(command);
          assert.equal(c.code, 0, c.stderr);
        }
      },
    );
    await assertHealthy(g, view);
  });
});

/** The original bytes are back: the guest runs, and ps and lsmod see what they saw before. */
async function assertHealthy(g: TestGuest, before: GuestView): Promise<void> {
  assert.match(await g.serial.command("echo alive"), /alive/);
  const ps = await runCli(["--qmp", g.qmpSocket, "ps", "--json"], BOUND_MS);
  assert.equal(ps.code, 0, ps.stderr);
  assert.equal(ps.stderr, "", "a whole task list gives no warning");
  const pids = new Set((JSON.parse(ps.stdout) as { pid: number }[]).map((p) => p.pid));
  for (const pid of before.roles.values()) assert.ok(pids.has(pid), `role pid ${pid} is listed again`);
  const lsmod = await runCli(["--qmp", g.qmpSocket, "lsmod", "--json"], BOUND_MS);
  assert.equal(lsmod.code, 0, lsmod.stderr);
  assert.equal((JSON.parse(lsmod.stdout) as unknown[]).length, before.modules.length);
  assert.doesNotMatch(lsmod.stderr, /warning/, "a healthy modules list gives no warning");
}
