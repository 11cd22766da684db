/**
 * The CLI while `vmsight serve` holds the guest's QMP socket: every command for that guest goes
 * through the server (found by its QMP path), so `trace proc` in one terminal and `ps` in
 * another both work. The guest's own /proc is the oracle, through the same comparisons the
 * semantics test makes of a CLI attached on its own. A command that needs the guest in its own
 * process says why it cannot run, and the server killed with SIGKILL leaves the CLI attaching
 * directly again.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BackgroundCli } from "../support/background.js";
import { assertCleanError, cliJson, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { checkLsmod, checkMaps, checkPids, checkPsView, checkThreads } from "../support/semantics-checks.js";

const KERNEL = (process.env.VMSIGHT_TEST_KERNELS ?? "6.12").split(",").includes("6.12") ? "6.12" : "6.1";

describe(`the CLI through vmsight serve on a ${KERNEL} guest`, () => {
  let g: TestGuest;
  let dir: string;
  let server: BackgroundCli;
  const vmsight = (...args: string[]) => runCli(["--qmp", g.qmpSocket, ...args], 180_000);

  before(async () => {
    g = await bootTestGuest(KERNEL);
    await g.waitReady(180_000);
    dir = mkdtempSync(join(tmpdir(), "vmsight-serve-cli-"));
    server = new BackgroundCli(["serve", "--vm", `guest=${g.qmpSocket}`, "--socket", join(dir, "s.sock")]);
    await server.waitFor(/^ws\+unix:/m, 60_000, "stdout");
  });
  after(async () => {
    server?.kill("SIGKILL");
    await g?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("ps, threads, lsmod, maps and pids equal the guest's /proc", async () => {
    // One view of the guest (~2.5 s over its console) for ps, lsmod and maps: the modules and the
    // workload's mappings stay as they were while ps and threads are compared.
    const view = await checkPsView(g);
    await checkThreads(g);
    await checkLsmod(g, view);
    await checkMaps(g, view);
    await checkPids(g);
  });

  test("trace proc in one process while ps, read and status answer in others", async () => {
    const trace = new BackgroundCli(["--qmp", g.qmpSocket, "trace", "proc", "--json"]);
    await trace.ready();
    assert.match(trace.stderr, /through vmsight serve \(pid \d+\)/);
    let seen: Record<string, unknown> | undefined;
    for (let i = 0; i < 10 && !seen; i++) {
      await g.serial.command(`sh -c 'echo CLI-${i}' >/dev/null`, 60_000);
      const ps = await cliJson<{ pid: number }[]>(["--qmp", g.qmpSocket, "ps"]);
      assert.ok(
        ps.some((p) => p.pid === 1),
        "ps answers while trace runs",
      );
      await new Promise((r) => setTimeout(r, 500));
      seen = trace.events().find((e) => e.type === "exec" && (e.argv as string[]).includes(`echo CLI-${i}`));
    }
    assert.ok(seen, `trace saw an exec of the guest's command: ${trace.stdout.slice(-500)}`);
    const banner = await g.serial.command("cat /proc/version");
    const status = await cliJson<{ status: string; vcpus: number }>(["--qmp", g.qmpSocket, "status"]);
    assert.equal(status.status, "running");
    const kernel = await cliJson<{ version: string }[]>(["--qmp", g.qmpSocket, "kernel"]);
    assert.ok(banner.includes(kernel[0]!.version), `${kernel[0]!.version} in ${banner}`);
    trace.kill("SIGINT");
    assert.equal(await trace.exited, 0, trace.stderr);
    assert.match(trace.stderr, /traps removed/);
  });

  test("kill goes through the server and the process leaves the guest's /proc", async () => {
    const out = await g.serial.command("sh -c 'sleep 1000 >/dev/null 2>&1 </dev/null & echo $!'");
    const pid = Number(out.trim().split("\n").pop());
    assert.equal((await g.serial.run(`test -e /proc/${pid}`)).status, 0);
    const r = await vmsight("kill", String(pid), "--json");
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await g.serial.run(`test -e /proc/${pid}`)).status, 1, `pid ${pid} still there`);
  });

  test("a command that needs the guest in its own process says so; so does an option the server cannot take", async () => {
    const isf = await vmsight("isf");
    assertCleanError(isf);
    assert.match(isf.stderr, /vmsight serve \(pid \d+\) holds this guest's QMP socket/);
    const stop = await vmsight("stop");
    assertCleanError(stop);
    assert.match(stop.stderr, /holds this guest's QMP socket, and "stop" cannot/);
    const offsets = await vmsight("ps", "--offsets", "/nonexistent.json");
    assertCleanError(offsets);
    assert.match(offsets.stderr, /--offsets cannot apply/);
  });

  test("with the server killed (SIGKILL), the CLI attaches to the guest itself again", async () => {
    server.kill("SIGKILL");
    await server.exited;
    const ps = await cliJson<{ pid: number }[]>(["--qmp", g.qmpSocket, "ps"]);
    assert.ok(ps.some((p) => p.pid === 1));
    const isf = await vmsight("isf");
    assert.equal(isf.code, 0, isf.stderr);
  });
});
