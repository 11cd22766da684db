/**
 * The README's first command: `vmsight demo` boots the demo guest and shows every layer working.
 * Run with --keep (the same show), so the guest it leaves running is checked and stopped too.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
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
