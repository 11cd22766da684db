/**
 * `serve --publish`: events reach JetStream in order on vmsight.<host>.<vm>.<type>, and a
 * durable consumer that disconnects half way and comes back misses none. Runs a real
 * nats-server (Debian's, installed by scripts/setup.sh) on a free loopback port.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AckPolicy, type NatsConnection, connect } from "nats";
import { ProtocolCore } from "../../src/server/core.js";
import { NatsPublisher, STREAM, subjectOf } from "../../src/server/nats.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";
import { startNatsServer } from "../support/nats-server.js";
import { until } from "../support/rpc-client.js";

const TOTAL = 300;

async function take(
  nc: NatsConnection,
  count: number,
): Promise<{ subject: string; body: Record<string, unknown> }[]> {
  const consumer = await nc.jetstream().consumers.get(STREAM, "reader");
  const out: { subject: string; body: Record<string, unknown> }[] = [];
  while (out.length < count) {
    const batch = await consumer.fetch({ max_messages: count - out.length, expires: 2000 });
    for await (const m of batch) {
      out.push({ subject: m.subject, body: m.json() });
      await m.ackAck();
    }
  }
  return out;
}

test("events reach JetStream in order and a reconnecting consumer misses none", async () => {
  const nats = await startNatsServer();
  const vm = new FakeVm();
  const dir = fakeDirectory({ "web-1": vm });
  const core = new ProtocolCore(dir);
  const publisher = await NatsPublisher.start(core, { url: nats.url, host: "h.example" });
  try {
    const admin = await connect({ servers: nats.url.slice("nats://".length) });
    await (await admin.jetstreamManager()).consumers.add(STREAM, {
      durable_name: "reader",
      ack_policy: AckPolicy.Explicit,
    });
    await admin.close();
    assert.equal(vm.streams.size, 1, "the publisher subscribed to the VM");
    for (let i = 0; i < TOTAL; i++)
      vm.emit({ type: "exec", pid: 100 + i, comm: "sh", filename: "/bin/true", n: i });
    vm.emit({ type: "syscall", pid: 1, tid: 1, comm: "x", nr: 0, name: "read", args: [], ret: 0 });
    await until(() => publisher.published === TOTAL, "the execs published");
    dir.set("web-1", false);
    await until(() => publisher.published === TOTAL + 1, "the VANISHED published");
    await publisher.flush();
    assert.equal(publisher.dropped, 0);

    const first = await connect({ servers: nats.url.slice("nats://".length) });
    const part1 = await take(first, 100);
    await first.close();
    const second = await connect({ servers: nats.url.slice("nats://".length) });
    const part2 = await take(second, TOTAL + 1 - 100);
    await second.close();

    const all = [...part1, ...part2];
    const execs = all.filter((m) => m.body.type === "process.exec");
    assert.deepEqual(
      execs.map((m) => m.body.n),
      Array.from({ length: TOTAL }, (_, i) => i),
    );
    assert.ok(execs.every((m) => m.subject === subjectOf("h.example", "web-1", "process.exec")));
    assert.equal(subjectOf("h.example", "web-1", "process.exec"), "vmsight.h_example.web-1.process.exec");
    const last = all.at(-1);
    assert.equal(last?.subject, "vmsight.h_example.web-1.vm.state");
    assert.equal(last?.body.event, "VANISHED");
  } finally {
    await publisher.close();
    await core.close();
    await nats.stop();
  }
});
