/**
 * vm.events() streams over a fake hub: events come out in order as their records, a loop that
 * breaks, a signal that aborts and a failure each leave the hub exactly once, and a failure
 * reaches a reader that is waiting.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { EventBody } from "../../src/commands/trace.js";
import { type EventHub, eventStream } from "../../src/lib/events.js";

interface FakeHub {
  hub: EventHub;
  emit(e: EventBody): void;
  fail(error: unknown): void;
  readonly left: number;
}

function fakeHub(): FakeHub {
  let out: (e: EventBody) => void = () => {};
  let failWith: (e: unknown) => void = () => {};
  let left = 0;
  const member = { engine: { traps: () => [1, 2, 3] } };
  const hub = {
    async join(_opts: unknown, o: (e: EventBody) => void, f: (e: unknown) => void) {
      out = o;
      failWith = f;
      return member;
    },
    async leave(m: unknown) {
      assert.equal(m, member);
      left++;
    },
  } as unknown as EventHub;
  return {
    hub,
    emit: (e) => out(e),
    fail: (e) => failWith(e),
    get left() {
      return left;
    },
  };
}

const load = (name: string): EventBody => ({
  type: "load",
  name,
  base: 0xffffffffc0000000n,
  size: 4096,
  module: 0xffffffffc0001000n,
});

test("events come out as records, in order; breaking out leaves the hub once", async () => {
  const f = fakeHub();
  let traps = 0;
  const stream = eventStream(f.hub, {
    types: ["modules"],
    onReady: (n) => {
      traps = n;
    },
  });
  const first = stream.next();
  await new Promise((r) => setImmediate(r));
  assert.equal(traps, 3);
  f.emit(load("a"));
  f.emit(load("b"));
  const names: string[] = [];
  const e = (await first).value;
  assert.equal(e?.type === "load" ? e.base : undefined, "0xffffffffc0000000");
  names.push(e?.type === "load" ? e.name : "");
  for await (const ev of stream) {
    names.push(ev.type === "load" ? ev.name : "");
    break;
  }
  assert.deepEqual(names, ["a", "b"]);
  assert.equal(f.left, 1);
  assert.deepEqual(await stream.next(), { value: undefined, done: true });
  await stream.return?.();
  assert.equal(f.left, 1);
});

test("an abort ends a waiting reader and leaves the hub", async () => {
  const f = fakeHub();
  const abort = new AbortController();
  const stream = eventStream(f.hub, { types: ["proc"], signal: abort.signal });
  const waiting = stream.next();
  await new Promise((r) => setImmediate(r));
  abort.abort();
  assert.deepEqual(await waiting, { value: undefined, done: true });
  assert.equal(f.left, 1);
});

test("a failure reaches the waiting reader and the stream leaves the hub", async () => {
  const f = fakeHub();
  const stream = eventStream(f.hub, { types: ["proc"] });
  const waiting = stream.next();
  await new Promise((r) => setImmediate(r));
  f.fail(new Error("guest gone"));
  await assert.rejects(waiting, /guest gone/);
  await new Promise((r) => setImmediate(r));
  assert.equal(f.left, 1);
});
