/**
 * Symbols for other tools, proven by another tool: Volatility 3 reads a QEMU ELF dump of a test
 * guest with nothing but vmsight's symbol file (`vmsight isf`), and what it lists equals the
 * guest's own /proc. Volatility's location comes from VMSIGHT_VOLATILITY (its vol.py); `.ci/run`
 * sets it, elsewhere the test skips without it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import { Target } from "../../src/qemu/session.js";
import { assertCleanError, cliJson, runCli } from "../support/cli.js";
import { transient } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { guestSymbol, linkedTextAddress } from "../support/kallsyms-oracle.js";
import type { GuestView } from "../support/oracle.js";
import { skipUnless } from "../support/skip.js";

/**
 * task->comm as the guest's /proc name implies it: /proc names a workqueue worker
 * "kworker/ID+desc" or "-desc" after its work (the desc is not in comm), and a kernel thread by
 * its full name; comm keeps the first 15 bytes.
 */
function taskComm(procName: string): string {
  return procName.replace(/^(kworker\/(?!R-)[^+-]+)[+-].*$/, "$1").slice(0, 15);
}

const VOL = process.env.VMSIGHT_VOLATILITY;
const skip = skipUnless(
  VOL !== undefined && existsSync(VOL),
  "set VMSIGHT_VOLATILITY to Volatility 3's vol.py (../shared/peers/volatility3/vol.py) to run the interop test",
);

interface VolRun {
  readonly rows: Record<string, unknown>[];
  readonly seconds: number;
}

describe("Volatility 3 reads a guest dump with vmsight's symbol file", { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-vol-"));
  const dump = join(dir, "guest.elf");
  const symbols = join(dir, "symbols");
  const isfFile = join(symbols, "linux", "guest.json");
  let g: TestGuest;
  let view: GuestView;

  /** Runs one plugin the way the README of the peer says, with a private cache. */
  function volatility(plugin: string): Promise<VolRun> {
    const args = [VOL!, "-q", "--offline", "--cache-path", join(dir, "cache"), "-f", dump, "-s", symbols];
    const t0 = performance.now();
    return new Promise((done, fail) => {
      execFile(
        "python3",
        [...args, "-r", "json", plugin],
        { maxBuffer: 64 << 20, timeout: 300_000 },
        (error, stdout, stderr) => {
          if (error) return fail(new Error(`vol.py ${plugin} failed (${error.message}): ${stderr}`));
          const seconds = (performance.now() - t0) / 1000;
          // A plain line so the run time is seen beside the results (timing is not asserted).
          console.log(`# volatility ${plugin} with vmsight's ISF: ${seconds.toFixed(2)} s`);
          done({ rows: JSON.parse(stdout) as Record<string, unknown>[], seconds });
        },
      );
    });
  }

  before(async () => {
    g = await bootTestGuest("6.1");
    await g.waitReady(180_000);
    mkdirSync(join(symbols, "linux"), { recursive: true });
    mkdirSync(join(dir, "cache"));
    const isf = await runCli(
      ["--qmp", g.qmpSocket, "isf", "--out", join(symbols, "linux", "guest.json")],
      120_000,
    );
    assert.equal(isf.code, 0, isf.stderr);
    view = await g.view();
    const t = await Target.attach(g.qmpSocket);
    try {
      await t.pause();
      // Volatility reads paging: false dumps (the physical layout); paging: true finds no banner.
      await t.qmp.execute(
        "dump-guest-memory",
        { paging: false, protocol: `file:${dump}` },
        { timeoutMs: 120_000 },
      );
      await t.resume();
    } finally {
      await t.close();
    }
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("linux.pslist: the guest's processes, pid, ppid and task->comm", async () => {
    const { rows } = await volatility("linux.pslist");
    const skipPids = transient(view);
    const theirs = view.processes.filter((p) => !skipPids.has(p.pid));
    const byPid = new Map(theirs.map((p) => [p.pid, p]));
    const mine = rows
      .map((r) => ({ pid: Number(r.PID), ppid: Number(r.PPID), comm: String(r.COMM), state: "" }))
      .filter((r) => !skipPids.has(r.pid))
      .sort((a, b) => a.pid - b.pid);
    assert.deepEqual(
      mine.map((r) => [r.pid, r.ppid]),
      theirs.map((p) => [p.pid, p.ppid]).sort((a, b) => a[0]! - b[0]!),
    );
    for (const r of mine) {
      const p = byPid.get(r.pid)!;
      // Volatility renders comm's bytes its own way; the workload's UTF-8 and invalid names are
      // vmsight's own tests' business, so names are compared where the guest's are ASCII.
      if (!/^[\x20-\x7e]*$/.test(p.comm)) continue;
      assert.equal(r.comm, taskComm(p.comm), `pid ${r.pid}`);
    }
    assert.ok(
      mine.some((r) => r.comm === "averyveryverylo"),
      "the workload whose name comm cuts",
    );
  });

  test("linux.pstree: the same processes under the same parents", async () => {
    const { rows } = await volatility("linux.pstree");
    const flat: [number, number][] = [];
    const walk = (nodes: Record<string, unknown>[], parent: number | undefined) => {
      for (const n of nodes) {
        const pid = Number(n.PID);
        if (parent !== undefined) assert.equal(Number(n.PPID), parent, `pid ${pid} under ${parent}`);
        flat.push([pid, Number(n.PPID)]);
        walk((n.__children as Record<string, unknown>[]) ?? [], pid);
      }
    };
    walk(rows, undefined);
    const skipPids = transient(view);
    const expected = view.processes.filter((p) => !skipPids.has(p.pid)).map((p) => [p.pid, p.ppid]);
    assert.deepEqual(
      flat.filter(([pid]) => !skipPids.has(pid)).sort((a, b) => a[0] - b[0]),
      expected.sort((a, b) => a[0]! - b[0]!),
    );
  });

  test("linux.lsmod: the modules of /proc/modules", async () => {
    const { rows } = await volatility("linux.lsmod");
    assert.deepEqual(rows.map((r) => String(r.Name)).sort(), view.modules.map((m) => m.name).sort());
  });

  test("linux.lsof: open files of the guest's processes", async () => {
    const { rows } = await volatility("linux.lsof");
    const pids = new Set(view.processes.map((p) => p.pid));
    const init = rows.filter((r) => Number(r.PID) === 1);
    assert.ok(init.length > 0, "init has open files");
    assert.ok(
      init.some((r) => String(r.Path).startsWith("/dev/")),
      "init's console is a /dev file",
    );
    for (const r of rows) assert.ok(pids.has(Number(r.PID)), `lsof pid ${r.PID} is a process of the guest`);
  });

  test("the ISF from the dump is byte for byte the one from the live guest", async () => {
    const r = await runCli(["--dump", dump, "isf"], 120_000);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(r.stdout === `${readFileSync(isfFile, "utf8")}\n`, "same symbol file");
  });

  test("libvmi-config: init_task and the KASLR slide as the guest's own /proc/kallsyms has them", async () => {
    const [o] = await cliJson<Record<string, string>[]>(["--qmp", g.qmpSocket, "libvmi-config"]);
    const files = ensureKernel("6.1");
    const slide = (await guestSymbol(g.serial, "_text")) - linkedTextAddress(files.vmlinuz, files.release);
    assert.equal(BigInt(o!.linux_kaslr!), slide);
    assert.equal(BigInt(o!.linux_init_task!) + slide, await guestSymbol(g.serial, "init_task"));
    assert.equal(o!.name, view.release);
  });

  test("from an offsets profile: libvmi-config prints it, isf refuses in one line", async () => {
    const [btf] = await cliJson<Record<string, string | number>[]>(["--qmp", g.qmpSocket, "libvmi-config"]);
    const profile = join(dir, "profile.json");
    writeFileSync(
      profile,
      JSON.stringify({
        "task_struct.tasks": btf!.linux_tasks,
        "task_struct.mm": btf!.linux_mm,
        "task_struct.pid": btf!.linux_pid,
        "task_struct.comm": btf!.linux_name,
        "mm_struct.pgd": btf!.linux_pgd,
      }),
    );
    const noBtf = ["--no-btf", "--offsets", profile];
    const r = await runCli(["--qmp", g.qmpSocket, "libvmi-config", ...noBtf]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\S+ \{\n {4}ostype = "Linux";\n/);
    assert.ok(r.stdout.includes(`linux_tasks = 0x${Number(btf!.linux_tasks).toString(16)};`), r.stdout);
    const isf = await runCli(["--qmp", g.qmpSocket, "isf", ...noBtf]);
    assertCleanError(isf);
    assert.match(isf.stderr, /needs the kernel's types/);
  });
});
