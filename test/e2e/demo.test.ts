/**
 * The README's first command: `vmsight demo` boots the demo guest and shows every layer working.
 * Run with --keep (the same show), so the guest it leaves running is checked and stopped too.
 * And `vmsight demo --serve`, the README's command for the dashboard: its printed URL signs in
 * and serves the page, and Ctrl-C stops the server and the guest.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { BackgroundCli } from "../support/background.js";
import { runCli } from "../support/cli.js";

test("vmsight demo: kernel, processes, modules, maps, traced events, and a kill the guest confirms", async () => {
  const r = await runCli(["demo", "--keep"], 300_000);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  const qmp = /guest left running: vmsight --qmp (\S+) status/.exec(out)?.[1];
  assert.ok(qmp, "demo --keep names the guest it left running");
  const status = await runCli(["--qmp", qmp, "status"]);
  assert.equal(status.code, 0, `the kept guest outlives the demo: ${status.stderr}`);
  assert.match(status.stdout, /^guest running/);
  const stop = await runCli(["--qmp", qmp, "stop"]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.match(out, /KASLR slide\s+0x[0-9a-f]+/);
  assert.match(out, /symbols\s+\d{5,} \(kallsyms in guest memory\)/);
  for (const name of ["my worker 1", "abcdefghijklmno", "averyveryverylo", "wl-memwrite", "crc7"]) {
    assert.ok(out.includes(name), `demo shows ${name}`);
  }
  assert.match(out, /exec\s+\d+ \/bin\/workload \["workload", "forkloop", "3"\]/);
  assert.equal((out.match(/exit\s+\d+ \(wl-forkloop\) code 0/g) ?? []).length, 4);
  const killed = /kill -9 of pid (\d+)/.exec(out)?.[1];
  assert.ok(killed, "the demo kills a process");
  const [before, after] = out.split("== the guest's own ps, after");
  assert.match(before!.split("== the guest's own ps, before")[1]!, new RegExp(`^\\s*${killed} `, "m"));
  assert.doesNotMatch(after!, new RegExp(`^\\s*${killed} `, "m"), "the guest no longer lists the killed pid");
});

/** The QEMU pid of the served "demo" guest, asked over the printed WebSocket URL. */
async function servedQemuPid(wsUrl: string): Promise<number> {
  const plan = { poll: [{ method: "vm.get_info", params: { vm: "demo" } }], everyMs: 1000 };
  const client = new BackgroundCli(
    [wsUrl, JSON.stringify(plan)],
    join(import.meta.dirname, "../support/fleet-client.js"),
  );
  try {
    await client.waitFor(/"method":"vm.get_info"/, 120_000, "stdout");
    const reply = JSON.parse(client.stdout.split("\n")[0] ?? "") as {
      result?: { qemuPid?: number };
      error?: unknown;
    };
    assert.ok(reply.result?.qemuPid, `vm.get_info answered: ${JSON.stringify(reply)}`);
    return reply.result.qemuPid;
  } finally {
    client.kill("SIGTERM");
    await client.exited;
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

test("vmsight demo --serve: the printed URL signs in and serves the dashboard; Ctrl-C stops server and guest", async () => {
  const demo = new BackgroundCli(["demo", "--serve"]);
  let qemuPid: number | undefined;
  try {
    await demo.waitFor(/^http:\/\/127\.0\.0\.1:\d+\/\?token=\S+\n/m, 300_000, "stdout");
    const [wsLine, httpLine] = demo.stdout.split("\n");
    const url = new URL(httpLine ?? "");
    assert.equal((await fetch(url.origin)).status, 401, "no token, no page");
    const signIn = await fetch(url, { redirect: "manual" });
    assert.equal(signIn.status, 303, "the token is traded for a cookie");
    const cookie = (signIn.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
    const page = await fetch(new URL(signIn.headers.get("location") ?? "/", url.origin), {
      headers: { cookie },
    });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>vmsight<\/title>/);
    qemuPid = await servedQemuPid(wsLine ?? "");
    assert.ok(alive(qemuPid), "the demo guest runs while served");
  } finally {
    demo.kill("SIGINT");
  }
  assert.equal(await demo.exited, 0, `demo --serve exits cleanly on Ctrl-C:\n${demo.stderr}`);
  assert.doesNotMatch(demo.stderr, /error/i);
  assert.ok(qemuPid !== undefined && !alive(qemuPid), `the demo guest (QEMU pid ${qemuPid}) is stopped`);
});
