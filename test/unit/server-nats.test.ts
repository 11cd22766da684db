/**
 * `serve --publish`: events reach JetStream in order on vmsight.<host>.<vm>.<type>; a durable
 * consumer that disconnects while events keep coming, and comes back, misses none; a nats-server
 * restart mid-stream (file storage, same store) loses and duplicates none; a queue that outgrows
 * its bound while NATS is away drops with a warning instead of growing. Runs a real nats-server
 * (Debian's, installed by scripts/setup.sh) on a free loopback port.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AckPolicy, type NatsConnection, connect } from "nats";
import { ProtocolCore } from "../../src/server/core.js";
import { NatsPublisher, STREAM, subjectOf } from "../../src/server/nats.js";
import { EVENT_TYPES, type EventType } from "../../src/server/schema.js";
import { parseTypes } from "../../src/server/serve.js";
import { UsageError } from "../../src/util/errors.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";
import { type NatsServer, startNatsServer } from "../support/nats-server.js";
import { CoreClient, until } from "../support/rpc-client.js";

type Taken = { subject: string; body: Record<string, unknown> };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

async function take(nc: NatsConnection, count: number): Promise<Taken[]> {
  const consumer = await nc.jetstream().consumers.get(STREAM, "reader");
  const out: Taken[] = [];
  while (out.length < count) {
    const batch = await consumer.fetch({ max_messages: count - out.length, expires: 2000 });
    for await (const m of batch) {
      out.push({ subject: m.subject, body: m.json() });
      await m.ackAck();
    }
  }
  return out;
}

/** Everything left for the durable consumer, read until a fetch comes back empty. */
async function drain(nats: NatsServer): Promise<Taken[]> {
  const nc = await connect({ servers: nats.url.slice("nats://".length) });
  const consumer = await nc.jetstream().consumers.get(STREAM, "reader");
  const out: Taken[] = [];
  for (let got = -1; got !== 0; ) {
    got = 0;
    for await (const m of await consumer.fetch({ max_messages: 500, expires: 1000 })) {
      out.push({ subject: m.subject, body: m.json() });
      await m.ackAck();
      got++;
    }
  }
  await nc.close();
  return out;
}

async function setup(opts: { maxQueue?: number; types?: readonly EventType[] } = {}) {
  const nats = await startNatsServer();
  const vm = new FakeVm();
  const dir = fakeDirectory({ "web-1": vm });
  const core = new ProtocolCore(dir);
  const log: string[] = [];
  const publisher = await NatsPublisher.start(core, {
    url: nats.url,
    host: "h.example",
    log: (l) => log.push(l),
    ...opts,
  });
  const admin = await connect({ servers: nats.url.slice("nats://".length) });
  await (await admin.jetstreamManager()).consumers.add(STREAM, {
    durable_name: "reader",
    ack_policy: AckPolicy.Explicit,
  });
  await admin.close();
  assert.equal(vm.streams.size, 1, "the publisher subscribed to the VM");
  const exec = (n: number) => vm.emit({ type: "exec", pid: 100 + n, comm: "sh", filename: "/bin/true", n });
  const close = async () => {
    await publisher.close(1000);
    await core.close();
    await nats.stop();
  };
  return { nats, vm, dir, core, publisher, log, exec, close };
}

const numbers = (all: readonly Taken[]) =>
  all.filter((m) => m.body.type === "process.exec").map((m) => m.body.n);

test("a consumer that disconnects while events flow and comes back misses none, in order", async () => {
  const s = await setup();
  const TOTAL = 400;
  try {
    let emitted = 0;
    const producing = (async () => {
      for (; emitted < TOTAL; emitted++) {
        s.exec(emitted);
        await sleep(3);
      }
    })();
    const first = await connect({ servers: s.nats.url.slice("nats://".length) });
    const part1 = await take(first, 100);
    await first.close();
    const away = s.publisher.published;
    assert.ok(away < TOTAL, "the consumer left while events were still being published");
    await until(() => s.publisher.published >= away + 100, "publishing went on without the consumer");
    const second = await connect({ servers: s.nats.url.slice("nats://".length) });
    const part2 = await take(second, 50);
    await second.close();
    await producing;
    s.vm.emit({ type: "syscall", pid: 1, tid: 1, comm: "x", nr: 0, name: "read", args: [], ret: 0 });
    s.dir.set("web-1", false);
    await until(() => s.publisher.published === TOTAL + 1, "the execs and the VANISHED published");
    await s.publisher.flush();
    const all = [...part1, ...part2, ...(await drain(s.nats))];
    assert.deepEqual(numbers(all), range(TOTAL), "every exec once, in order");
    assert.equal(s.publisher.dropped, 0);
    const execs = all.filter((m) => m.body.type === "process.exec");
    assert.ok(execs.every((m) => m.subject === subjectOf("h.example", "web-1", "process.exec")));
    assert.equal(subjectOf("h.example", "web-1", "process.exec"), "vmsight.h_example.web-1.process.exec");
    assert.equal(all.length, TOTAL + 1, "the syscall is not published by default");
    const last = all.at(-1);
    assert.equal(last?.subject, "vmsight.h_example.web-1.vm.state");
    assert.equal(last?.body.event, "VANISHED");
  } finally {
    await s.close();
  }
});

test("a nats-server restart mid-stream loses and duplicates nothing", async () => {
  const s = await setup();
  const TOTAL = 300;
  try {
    for (let i = 0; i < 100; i++) s.exec(i);
    await until(() => s.publisher.published === 100, "the first hundred published");
    await s.nats.halt();
    for (let i = 100; i < 200; i++) {
      s.exec(i);
      await sleep(2);
    }
    await until(() => s.publisher.retries > 0, "a publish failed while NATS was down");
    assert.ok(s.publisher.queued > 0, "events wait while NATS is down");
    await s.nats.restart();
    for (let i = 200; i < TOTAL; i++) s.exec(i);
    await until(() => s.publisher.published === TOTAL, "all published after the restart", 60_000);
    const all = await drain(s.nats);
    assert.deepEqual(numbers(all), range(TOTAL), "every exec once, in order, across the restart");
    assert.equal(s.publisher.dropped, 0);
    assert.ok(
      s.log.some((l) => /failed: .*retrying/.test(l)),
      `the outage was logged: ${s.log.join("\n")}`,
    );
    assert.ok(
      s.log.some((l) => /acknowledges again/.test(l)),
      `the recovery was logged: ${s.log.join("\n")}`,
    );
  } finally {
    await s.close();
  }
});

test("with NATS away, the queue stops at its bound and warns once instead of growing", async () => {
  const s = await setup({ maxQueue: 20 });
  try {
    await s.nats.halt();
    for (let i = 0; i < 50; i++) s.exec(i);
    await until(() => s.publisher.dropped === 30, "the events past the bound dropped");
    assert.equal(s.publisher.queued, 20);
    assert.equal(s.log.filter((l) => /WARNING: 20 events wait for NATS.*DROPPED/.test(l)).length, 1);
    await s.nats.restart();
    await until(() => s.publisher.published === 20, "the queued events published", 60_000);
    assert.deepEqual(numbers(await drain(s.nats)), range(20), "the oldest kept, in order");
    assert.ok(
      s.log.some((l) => /caught up; 30 events were dropped/.test(l)),
      `the loss was summed up: ${s.log.join("\n")}`,
    );
  } finally {
    await s.close();
  }
});

test("--publish-types all publishes every type, a client's breakpoints and watches too", async () => {
  assert.equal(parseTypes("all"), EVENT_TYPES);
  assert.deepEqual(parseTypes("syscall, switch"), ["syscall", "switch"]);
  assert.throws(
    () => parseTypes("syscalls"),
    (e) => e instanceof UsageError && /"all"/.test(e.hint ?? ""),
  );
  const s = await setup({ types: parseTypes("all") });
  try {
    const c = await new CoreClient(s.core).init();
    await c.ok("breakpoint.set", { vm: "web-1", at: "do_exit" });
    await c.ok("memory.set_access", { vm: "web-1", address: "0x1000", length: 4, access: "write" });
    const who = { cpu: 0, pid: 7, tid: 7, comm: "w", rip: "0x1" };
    s.vm.emit({ type: "break", at: "do_exit", ...who, args: [] });
    s.vm.emit({ type: "watch", access: "write", address: "0x1000", ...who, value: "0x2" });
    s.vm.emit({ type: "syscall", pid: 7, tid: 7, comm: "w", nr: 0, name: "read", args: [], ret: 0 });
    s.vm.emit({ type: "switch", cpu: 0, prev: 7, next: 8, cr3: "0x1000" });
    await until(() => s.publisher.published === 4, "the four published");
    const all = await drain(s.nats);
    assert.deepEqual(all.map((m) => m.subject.split(".").slice(3).join(".")).sort(), [
      "breakpoint",
      "memory.access",
      "switch",
      "syscall",
    ]);
    const access = all.find((m) => m.body.type === "memory.access")?.body;
    assert.equal(access?.value, "0x2");
    assert.equal(access?.subscription, undefined, "a client's subscription id is not published");
  } finally {
    await s.close();
  }
});
