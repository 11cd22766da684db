/** The mounts of a namespace from its 6.8+ rb-tree: in order, and a tree that loops fails. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { namespaceMounts } from "../../src/os/linux/mounts.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel, type LayoutSpec } from "../support/crafted-kernel.js";

// rb_node: parent_color at 0, rb_right at 8, rb_left at 16; mount.mnt_node 40 bytes in.
const LAYOUT: LayoutSpec = {
  mnt_namespace: { size: 64, members: { mounts: [8, 8] } },
  mount: { size: 128, members: { mnt_node: [40, 24] } },
};

function tree() {
  const k = new CraftedKernel({ layout: LAYOUT });
  const ns = k.alloc(64);
  const [a, b, c, d] = [k.alloc(128), k.alloc(128), k.alloc(128), k.alloc(128)];
  const node = (m: bigint) => m + 40n;
  // b is the root; a its left child; d its right child, with c as d's left child.
  k.writeU64(ns + 8n, node(b));
  k.writeU64(node(b) + 16n, node(a));
  k.writeU64(node(b) + 8n, node(d));
  k.writeU64(node(d) + 16n, node(c));
  return { k, ns, mounts: [a, b, c, d], node };
}

test("mounts come in the tree's order (by unique id: left, node, right)", () => {
  const t = tree();
  assert.deepEqual(namespaceMounts(t.k.context(), t.ns), t.mounts);
});

test("an empty namespace has no mounts; a tree that loops is a typed error", () => {
  const t = tree();
  const empty = t.k.alloc(64);
  assert.deepEqual(namespaceMounts(t.k.context(), empty), []);
  t.k.writeU64(t.node(t.mounts[2]!) + 8n, t.node(t.mounts[1]!)); // c's right child: the root again
  assert.throws(() => namespaceMounts(t.k.context(), t.ns), GuestDataError);
});
