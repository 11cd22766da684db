/** The queue every event stream reads through: order, end, failure after what was queued, the bound. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { isVmsightError } from "../../src/util/errors.js";
import { EventQueue } from "../../src/util/event-queue.js";

test("a waiting reader gets the next item; the end comes after what was queued", async () => {
  const q = new EventQueue<number>();
  const first = q.take();
  q.push(1);
  assert.equal(await first, 1);
  q.push(2);
  q.end();
  q.push(3); // after the end: dropped
  assert.equal(await q.take(), 2);
  assert.equal(await q.take(), undefined);
  assert.equal(await q.take(), undefined);
});

test("a failure reaches the reader once what was queued before it is read", async () => {
  const q = new EventQueue<string>();
  q.push("a");
  q.fail(new Error("first"));
  q.fail(new Error("second"));
  assert.equal(await q.take(), "a");
  await assert.rejects(q.take(), /first/);
  await assert.rejects(q.take(), /first/);
});

test("a reader that stops reading gets E_BUSY, not an endless queue", async () => {
  const q = new EventQueue<number>(3);
  for (let i = 0; i < 10; i++) q.push(i);
  assert.deepEqual([await q.take(), await q.take(), await q.take()], [0, 1, 2]);
  await assert.rejects(q.take(), (e) => isVmsightError(e) && e.code === "E_BUSY");
  assert.equal(q.ended, true);
});
