/** The one list walker: its two shapes, and what each policy does with a broken list. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BrokenListError, chainForEach, listForEach, listForEachEntry } from "../../src/os/linux/walk.js";
import { va } from "../../src/util/address.js";
import { CraftedKernel, LINUX_6_1 } from "../support/crafted-kernel.js";

/** `item` has a singly linked `next` pointer at 8 and a list_head at 16. */
const LAYOUT = { ...LINUX_6_1, item: { size: 64, members: { next: [8, 8], node: [16, 16] } } } as const;

/** `n` items on a list_head ring at `head`, and chained through `next` from the pointer at `first`. */
function items(n: number) {
  const ck = new CraftedKernel({ layout: LAYOUT });
  const head = ck.alloc(16);
  const first = ck.alloc(8);
  ck.listInit(head);
  const all = Array.from({ length: n }, () => {
    const item = ck.alloc(64);
    ck.listAddTail(item + 16n, head);
    return item;
  });
  all.forEach((item, i) => ck.writeU64(item + 8n, all[i + 1] ?? 0n));
  ck.writeU64(first, all[0] ?? 0n);
  return { ck, ctx: ck.context(), head, first, all };
}

test("list_for_each_entry and a NULL-terminated chain yield every entry in order", () => {
  const { ctx, head, first, all } = items(5);
  assert.deepEqual([...listForEachEntry(ctx, head, "item", "node")], all);
  assert.deepEqual([...chainForEach(ctx, first, "item.next", 8)], all);
  const empty = items(0);
  assert.deepEqual([...listForEachEntry(empty.ctx, empty.head, "item", "node")], []);
  assert.deepEqual([...chainForEach(empty.ctx, empty.first, "item.next", 8)], []);
});

test("a loop: 'throw' names the list and the node it left from; 'stop' keeps what came before", () => {
  const { ck, ctx, head, all } = items(4);
  ck.writeU64(all[2]! + 16n, all[0]! + 16n); // item 2's next is item 0 again
  assert.throws(
    () => [...listForEachEntry(ctx, head, "item", "node")],
    (e: unknown) =>
      e instanceof BrokenListError &&
      e.list === "item.node" &&
      e.at === all[2]! + 16n &&
      /item\.node list loops back to 0x[0-9a-f]+ .*without reaching its head/.test(e.message),
  );
  const warned: BrokenListError[] = [];
  const got = [
    ...listForEachEntry(ctx, head, "item", "node", { onBroken: "stop", warn: (e) => warned.push(e) }),
  ];
  assert.deepEqual(got, all.slice(0, 3));
  assert.equal(warned.length, 1);
  assert.match(warned[0]!.message, /loops back/);
});

test("a chain that loops, and one longer than its bound", () => {
  const { ck, ctx, first, all } = items(4);
  ck.writeU64(all[3]! + 8n, all[1]!);
  assert.throws(() => [...chainForEach(ctx, first, "item.next", 8)], /item\.next list loops back/);
  const long = items(6);
  assert.throws(
    () => [...listForEachEntry(long.ctx, long.head, "item", "node", { max: 5 })],
    /item\.node list is longer than 5 entries/,
  );
  assert.equal(
    [...chainForEach(long.ctx, long.first, "item.next", 8, { onBroken: "stop", max: 5 })].length,
    5,
  );
});

test("a pointer out of the kernel or into unmapped memory ends the walk at that node", () => {
  const { ck, ctx, head, all } = items(3);
  ck.writeU64(all[1]! + 16n, 0x4141414141414141n);
  const warned: string[] = [];
  const stop = { onBroken: "stop", warn: (e: BrokenListError) => warned.push(e.message) } as const;
  assert.deepEqual([...listForEachEntry(ctx, head, "item", "node", stop)], all.slice(0, 2));
  assert.match(
    warned[0]!,
    /item\.node next pointer at 0x[0-9a-f]+ is not a kernel pointer: 0x4141414141414141/,
  );
  ck.writeU64(all[1]! + 16n, ck.unmapped);
  assert.throws(
    () => [...listForEachEntry(ctx, head, "item", "node")],
    (e: unknown) => e instanceof BrokenListError && e.at === ck.unmapped && /unreadable/.test(e.message),
  );
  assert.deepEqual([...chainForEach(ctx, va(ck.unmapped), "item.next", 8, stop)], []);
  assert.match(warned[1]!, /item\.next list node 0x[0-9a-f]+ is unreadable/);
});

test("checkBack: a node whose prev does not point back breaks the walk; a sound ring passes", () => {
  const { ck, ctx, head, all } = items(3);
  const mem = { readU64: (a: bigint) => ctx.kernel.readU64(va(a)), bounds: ctx.bounds };
  const nodes = all.map((item) => item + 16n);
  assert.deepEqual([...listForEach(mem, head, "ring", { checkBack: true })], nodes);
  ck.writeU64(nodes[1]! + 8n, head); // item 1's prev skips item 0: next/prev disagree
  assert.deepEqual([...listForEach(mem, head, "ring")], nodes, "without checkBack only next is followed");
  assert.throws(() => [...listForEach(mem, head, "ring", { checkBack: true })], /does not point back/);
  ck.writeU64(nodes[1]! + 8n, nodes[0]!);
  ck.writeU64(head + 8n, nodes[0]!); // the head's prev names the first node, not the last
  assert.throws(() => [...listForEach(mem, head, "ring", { checkBack: true })], /head does not point back/);
});
