import assert from "node:assert/strict";
import { mapleTreeEntries } from "../../src/os/linux/maple-tree.js";
import { xarrayEntries } from "../../src/os/linux/pid-ns.js";
import { va } from "../../src/util/address.js";
import { CraftedKernel, DEFAULT_PAGE_OFFSET } from "../support/crafted-kernel.js";
import { Builder, LAYOUT_6_1, MAPLE_ARANGE_64, MAPLE_RANGE_64, fakeLayout } from "../support/crafted-maps.js";
import { fuzzTargets } from "./harness.js";
import { pointerInto } from "./mutate.js";

/**
 * Guest memory for the tree walkers: a 64 KiB window of the direct map. Its first u64 holds the
 * root (ma_root or xa_head); the nodes follow.
 */
const SIZE = 64 << 10;
/** Where CraftedKernel's heap starts in the direct map; nothing is mapped past SIZE of it. */
const BASE = DEFAULT_PAGE_OFFSET + 0x1000000n;

function kernel(bytes?: Uint8Array): CraftedKernel {
  const k = new CraftedKernel({ heapSize: SIZE });
  k.alloc(4096, 4096); // the first page holds the root; the allocator hands out what follows
  if (bytes) k.write(BASE, bytes.subarray(0, SIZE));
  return k;
}

function snapshot(k: CraftedKernel, root: bigint): Uint8Array {
  k.writeU64(BASE, root);
  return new Uint8Array(k.kernel.read(va(BASE), SIZE));
}

const P = (n: number) => BASE + 0x8000n + BigInt(n) * 0x40n;

function mapleSeeds(): Uint8Array[] {
  const small = kernel();
  const deep = new Builder(small, LAYOUT_6_1).tree(
    Array.from({ length: 60 }, (_, i) => ({
      start: 0x10000n * BigInt(i + 1),
      last: 0x10000n * BigInt(i + 1) + 0xfffn,
      value: P(i),
    })),
    {
      leafSlots: 6,
      levels: [
        { type: MAPLE_RANGE_64, fanout: 4 },
        { type: MAPLE_ARANGE_64, fanout: 10 },
      ],
    },
  );
  const dense = kernel();
  const leaf = new Builder(dense, LAYOUT_6_1).dense(Array.from({ length: 20 }, (_, i) => P(i)));
  return [snapshot(small, deep), snapshot(dense, leaf)];
}

const XA = fakeLayout({ offsets: { "xa_node.shift": 0, "xa_node.slots": 40 }, sizes: {} });

function xarraySeed(): Uint8Array {
  const k = kernel();
  const node = (shift: number, slots: bigint[]) => {
    const at = k.alloc(40 + 64 * 8, 64);
    k.writeU8(at, shift);
    slots.forEach((s, i) => k.writeU64(at + 40n + BigInt(8 * i), s));
    return at + 2n;
  };
  const leaves = [0, 1, 2].map((l) =>
    node(
      0,
      Array.from({ length: 64 }, (_, i) => (i % 3 === l ? P(i) : 0n)),
    ),
  );
  return snapshot(k, node(6, [...leaves, 0n, 0x1n, 0x6n]));
}

const ptr = (tags: bigint[]) => () => [pointerInto(BASE, SIZE, tags)];

fuzzTargets(import.meta.url, [
  {
    name: "maple-tree",
    seeds: mapleSeeds,
    run: (bytes) => {
      const k = kernel(bytes);
      const ctx = k.context(fakeLayout(LAYOUT_6_1));
      let last = -1n;
      let n = 0;
      for (const e of mapleTreeEntries(ctx, k.kernel.readU64(va(BASE)))) {
        assert.ok(e.index > last || n === 0, `entry ${e.index} after ${last}`);
        assert.ok(e.last >= e.index, "an entry ends before it starts");
        last = e.last;
        assert.ok(++n <= SIZE, "more entries than bytes");
      }
    },
    runs: 3000,
    maxRandomBytes: SIZE,
    // Node pointers carry their type in bits 3..6 and bit 2 set; roots also bit 1.
    mutations: ptr([0x0cn, 0x14n, 0x1cn, 0x16n, 0x1en, 0x04n]),
  },
  {
    name: "xarray",
    seeds: () => [xarraySeed()],
    run: (bytes) => {
      const k = kernel(bytes);
      let last = -1n;
      let n = 0;
      for (const e of xarrayEntries(k.context(XA), k.kernel.readU64(va(BASE)))) {
        assert.ok(e.index > last, `index ${e.index} after ${last}`);
        last = e.index;
        assert.ok(++n <= (SIZE / 4) * 64, "more entries than node slots");
      }
    },
    runs: 3000,
    maxRandomBytes: SIZE,
    mutations: ptr([0x2n]),
  },
]);
