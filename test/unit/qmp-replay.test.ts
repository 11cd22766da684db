/**
 * Replays a real QEMU 7.2 session (recorded by test/fixtures/qmp/record.ts) through
 * an in-process fake server. Expected values come from what QEMU is documented to
 * do with that command line (-S: prelaunch; -m 64: RAM ends at 0x3ffffff; one vCPU),
 * not from the client's output.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { after, before, test } from "node:test";
import { QmpClient } from "../../src/transport/qmp/client.js";
import type { QmpEvent } from "../../src/transport/qmp/codec.js";
import { QmpCommandError } from "../../src/transport/qmp/failures.js";
import {
  type FakeServer,
  type Transcript,
  type TranscriptEntry,
  replayer,
  startFakeServer,
} from "../fixtures/qmp/fake-server.js";

const fixture = resolve(import.meta.dirname, "../../../test/fixtures/qmp/qemu72-session.json");
const recorded = JSON.parse(readFileSync(fixture, "utf8")) as Transcript;

let server: FakeServer;
const mismatches: string[] = [];
before(async () => {
  server = await startFakeServer(replayer(recorded.transcript, mismatches));
});
after(() => server.close());

test("the recorded session replays with the same requests, results and events", async () => {
  const rerecorded: TranscriptEntry[] = [];
  const client = await QmpClient.connect(server.path, {
    record: (dir, line) => rerecorded.push({ dir, line }),
  });
  const events: QmpEvent[] = [];
  client.onEvent((e) => events.push(e));

  assert.equal(recorded.qemuCommand.includes("-S") && recorded.qemuCommand.includes("-m 64"), true);
  assert.deepEqual(client.greeting.version, { major: 7, minor: 2, micro: 22 });
  assert.match(client.greeting.package, /^Debian 1:7\.2/);

  assert.deepEqual(await client.execute("query-status"), {
    status: "prelaunch",
    singlestep: false,
    running: false,
  });

  const cpus = (await client.execute("query-cpus-fast")) as Record<string, unknown>[];
  assert.equal(cpus.length, 1);
  assert.equal(cpus[0]?.["cpu-index"], 0);
  assert.equal(cpus[0]?.target, "x86_64");
  assert.ok(Number.isInteger(cpus[0]?.["thread-id"]) && (cpus[0]?.["thread-id"] as number) > 1);

  const mtree = await client.hmp("info mtree -f");
  assert.ok(!mtree.includes("\r"));
  assert.match(mtree, /^ AS "memory", root: system$/m);
  // 64 MiB of RAM: low 640 KiB, then the rest from 1 MiB to 0x3ffffff, aliased into pc.ram.
  assert.match(mtree, /^ {2}0000000000000000-00000000000bffff \(prio 0, ram\): pc\.ram$/m);
  assert.match(mtree, /^ {2}0000000000100000-0000000003ffffff \(prio 0, ram\): pc\.ram @0000000000100000$/m);

  const hva = await client.hmp("gpa2hva 0x1000");
  const m = /^Host virtual address for 0x1000 \(pc\.ram\) is 0x([0-9a-f]+)\n$/.exec(hva);
  assert.ok(m, hva);
  assert.equal(BigInt(`0x${m[1]}`) & 0xfffn, 0n, "guest RAM is page-aligned in QEMU's address space");
  assert.equal(await client.hmp("gpa2hva 0x10000000"), "No memory is mapped at address 0x10000000\n");
  assert.equal(await client.hmp("no-such-hmp-command"), "unknown command: 'no-such-hmp-command'\n");

  await assert.rejects(client.execute("no-such-command"), (e: unknown) => {
    assert.ok(e instanceof QmpCommandError);
    assert.equal(e.qmpClass, "CommandNotFound");
    assert.equal(e.message, "no-such-command: The command no-such-command has not been found");
    return true;
  });

  const resumed = client.waitForEvent("RESUME", 2000);
  assert.deepEqual(await client.execute("cont"), {});
  assert.equal((await resumed).event, "RESUME");
  assert.equal(((await client.execute("query-status")) as { status: string }).status, "running");
  const stopped = client.waitForEvent("STOP", 2000);
  await client.execute("stop");
  await stopped;
  assert.equal(((await client.execute("query-status")) as { status: string }).status, "paused");

  assert.deepEqual(
    events.map((e) => [e.event, e.data]),
    [
      ["RESUME", {}],
      ["STOP", {}],
    ],
  );
  const [r, s] = events.map((e) => e.timestamp.seconds * 1e6 + e.timestamp.microseconds);
  assert.ok(r! > 1.6e15 && s! >= r!, "timestamps are wall-clock microseconds, in order");

  await client.close();
  assert.deepEqual(mismatches, []);
  // Recording a replay reproduces the recording: nothing is lost or reordered.
  assert.deepEqual(rerecorded, recorded.transcript);
});
