/**
 * Issue 3 end to end, the variants: a guest without KASLR, with 4 GiB of RAM (memory above
 * the PCI hole) and two vCPUs (tasks on two runqueues, traps taken on either vCPU), a guest busy
 * forking while vmsight lists its tasks, and a guest with 5-level paging.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { DEFAULT_APPEND } from "../../src/guests/guest-image.js";
import { cliJson, runCli } from "../support/cli.js";
import { type Ps, assertPsMatchesView, eventually } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { checkLsmod, checkMaps, checkPids, checkPs, checkThreads } from "../support/semantics-checks.js";

describe("a 6.1 guest booted with nokaslr, 4 GiB of RAM and 2 vCPUs", () => {
  let g: TestGuest;
  before(async () => {
    g = await bootTestGuest("6.1", { memory: "4G", cpus: 2, append: `${DEFAULT_APPEND} nokaslr` });
    await g.waitReady(180_000);
  });
  after(async () => g?.stop());

  test("kernel reports no slide and the default text address", async () => {
    const [k] = await cliJson<{ slide: string; text: string }[]>(["--qmp", g.qmpSocket, "kernel"]);
    assert.equal(BigInt(k!.slide), 0n);
    assert.equal(BigInt(k!.text), 0xffffffff81000000n);
  });

  test("ps equals the guest's own /proc view", async () => {
    await eventually(g, async (view) => {
      assertPsMatchesView(await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]), view);
    });
  });

  test("threads equal the guest's own /proc view", () => checkThreads(g));

  test("kill: a sleeping and a spinning process die, whichever vCPU reaches the kernel's call site", async () => {
    const status = await cliJson<{ vcpus: number }>(["--qmp", g.qmpSocket, "status"]);
    assert.equal(status.vcpus, 2);
    // Children of a shell that exits at once: init adopts and reaps them, so a kill ends "gone".
    const out = await g.serial.command(
      "sh -c 'sleep 1000 >/dev/null 2>&1 </dev/null & S=$!; while :; do :; done >/dev/null 2>&1 </dev/null & echo PIDS $S $!'",
    );
    const pids = /PIDS (\d+) (\d+)/.exec(out)!.slice(1).map(Number);
    for (const pid of pids) {
      const r = await cliJson<{ outcome: string }>(["--qmp", g.qmpSocket, "kill", String(pid)]);
      assert.equal(r.outcome, "gone", `pid ${pid}: ${JSON.stringify(r)}`);
      assert.equal(
        (await g.serial.run(`test -e /proc/${pid}`)).status,
        1,
        `${pid} still in the guest's /proc`,
      );
    }
  });

  test("while the guest forks continuously, every listing is whole or a clear error, never a hang", async () => {
    g.serial.send("workload forkloop 0 >/dev/null 2>&1 &");
    await new Promise((r) => setTimeout(r, 1000));
    let whole = 0;
    for (let i = 0; i < 6; i++) {
      const r = await runCli(["--qmp", g.qmpSocket, "ps", "--json"], 30_000);
      if (r.code !== 0) {
        assert.match(r.stderr, /^vmsight: .+\n( {2}hint: .+\n)?$/, "a failed listing is one clean line");
        continue;
      }
      const rows = JSON.parse(r.stdout) as Ps[];
      const pids = new Set(rows.map((p) => p.pid));
      assert.equal(pids.size, rows.length, "no task listed twice");
      assert.ok(rows.some((p) => p.comm === "wl-forkloop"));
      for (const p of rows)
        assert.ok(p.ppid === 0 || pids.has(p.ppid), `parent ${p.ppid} of ${p.pid} is listed`);
      whole++;
    }
    assert.ok(whole >= 5, `${whole} of 6 listings were whole`);
    await g.serial.command("kill %1 2>/dev/null; killall wl-forkloop 2>/dev/null; true");
  });
});

describe("a 6.12 guest on QEMU's `-cpu max`: 5-level paging (CR4.LA57)", () => {
  let g: TestGuest;
  before(async () => {
    g = await bootTestGuest("6.12", { cpu: "max" });
    await g.waitReady(180_000);
  });
  after(async () => g?.stop());

  test("the guest runs with la57, and vmsight reads 5-level paging and a direct map below 0xffff800000000000", async () => {
    const flags = await g.serial.command("grep -o -w la57 /proc/cpuinfo | head -1");
    assert.equal(flags.trim(), "la57", "TCG's -cpu max offers LA57 and the kernel turned it on");
    const [k] = await cliJson<{ pagingLevels: number; pageOffsetBase: string }[]>([
      "--qmp",
      g.qmpSocket,
      "kernel",
    ]);
    assert.equal(k!.pagingLevels, 5);
    assert.ok(BigInt(k!.pageOffsetBase) < 0xffff800000000000n, `direct map at ${k!.pageOffsetBase}`);
  });

  test("ps equals the guest's own /proc view", () => checkPs(g));
  test("pids equals ps", () => checkPids(g));
  test("threads equal the guest's own /proc view", () => checkThreads(g));
  test("lsmod equals /proc/modules", () => checkLsmod(g));
  test("maps of two workload processes equal /proc/PID/maps", () => checkMaps(g));
});
