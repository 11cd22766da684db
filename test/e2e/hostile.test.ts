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
import { type KernelInfo, discoverKernel } from "../../src/os/linux/kernel.js";
import { listModules } from "../../src/os/linux/modules.js";
import { listTasks } from "../../src/os/linux/tasks.js";
import { Target } from "../../src/qemu/session.js";
import { va } from "../../src/util/address.js";
import { type CliResult, assertCleanError, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import type { GuestView } from "../support/oracle.js";

/** include/linux/poison.h with CONFIG_ILLEGAL_POINTER_VALUE 0xdead000000000000 (x86-64). */
const LIST_POISON1 = 0xdead000000000100n;
const LIST_POISON2 = 0xdead000000000122n;
/** A listing of a corrupt guest that takes longer than this is taken to hang. */
const BOUND_MS = 60_000;

interface Patch {
  readonly addr: bigint;
  readonly value: bigint;
}

/** `list_del(entry)`: the neighbours skip it, its own pointers are poisoned. */
function listDel(k: KernelInfo, entry: bigint): Patch[] {
  const next = k.kernel.readU64(va(entry));
  const prev = k.kernel.readU64(va(entry + 8n));
  return [
    { addr: prev, value: next },
    { addr: next + 8n, value: prev },
    { addr: entry, value: LIST_POISON1 },
    { addr: entry + 8n, value: LIST_POISON2 },
  ];
}

/**
 * Pauses the guest, applies the patches `plan` makes, runs `check` on the frozen corrupt guest
 * (QEMU takes one QMP client at a time, so vmsight's own runs come between two attaches), then
 * writes the original bytes back and lets the guest run.
 */
async function whileCorrupt(
  g: TestGuest,
  plan: (k: KernelInfo) => Patch[],
  check: () => Promise<void>,
): Promise<void> {
  let saved: Patch[] = [];
  try {
    await withPausedKernel(g, (k) => {
      for (const p of plan(k)) {
        saved.unshift({ addr: p.addr, value: k.kernel.readU64(va(p.addr)) });
        write(k, p);
      }
    });
    await check();
  } finally {
    await withPausedKernel(g, (k) => {
      for (const p of saved) write(k, p);
    });
    saved = [];
    const target = await Target.attach(g.qmpSocket);
    await target.resume();
    await target.close();
  }
}

/** Attaches, pauses the guest (it stays paused), finds its kernel and runs `fn` on it. */
async function withPausedKernel(g: TestGuest, fn: (k: KernelInfo) => void): Promise<void> {
  const target = await Target.attach(g.qmpSocket);
  try {
    await target.pause();
    const regs = await target.registers(0);
    const r = (n: string) => regs.get(n) ?? 0n;
    fn(discoverKernel(target.memory, { cr0: r("cr0"), cr3: r("cr3"), cr4: r("cr4"), efer: r("efer") }));
  } finally {
    await target.close();
  }
}

function write(k: KernelInfo, p: Patch): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(p.value);
  k.kernel.write(va(p.addr), b);
}

const tasksOffset = (k: KernelInfo) => BigInt(k.layout.offsetof("task_struct", "tasks"));

function taskOf(k: KernelInfo, pid: number): bigint {
  const t = listTasks(k).find((x) => x.pid === pid);
  assert.ok(t, `pid ${pid} is on the task list before the corruption`);
  return t.addr;
}

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
