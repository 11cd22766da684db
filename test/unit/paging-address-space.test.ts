import assert from "node:assert/strict";
import { test } from "node:test";
import { AddressSpace, TranslationCache, X86_64_4LEVEL, translate } from "../../src/arch/x86/index.js";
import { PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { pa, va } from "../../src/util/address.js";
import { FaultError, VmsightError } from "../../src/util/errors.js";

/**
 * Virtual layout used below (4-level):
 *   0x400000 -> phys 0x10000 (page A), 0x401000 -> phys 0x30000 (page B, not after A),
 *   0x402000 unmapped, 0x403000 -> phys 0x7000000 (no RAM there),
 *   0x404000 -> phys 0x11000 (right after A, so 0x403000..0x405000 is not contiguous).
 */
function setup(cacheSize?: number) {
  const mem = new BufferPhysicalMemory();
  const a = mem.map(0x10000, 0x2000);
  const b = mem.map(0x30000, 0x1000);
  for (let i = 0; i < a.length; i++) a[i] = (i * 7 + 1) & 0xff;
  for (let i = 0; i < b.length; i++) b[i] = (i * 13 + 5) & 0xff;
  const pt = new PageTableBuilder(mem, "4-level");
  pt.map(0x400000n, 0x10000n, 4096);
  pt.map(0x401000n, 0x30000n, 4096);
  pt.map(0x403000n, 0x7000000n, 4096);
  pt.map(0x404000n, 0x11000n, 4096);
  const space = new AddressSpace(mem, X86_64_4LEVEL, pt.root, cacheSize === undefined ? {} : { cacheSize });
  return { mem, a, b, pt, space };
}

function assertFault(fn: () => unknown, address: bigint, text: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FaultError, String(e));
    assert.equal(e.layer, "x86-64 4-level");
    assert.equal(e.address, address);
    assert.match(e.message, text);
    return true;
  });
}

test("read crosses a page boundary into a physically distant page", () => {
  for (const cacheSize of [0, 16]) {
    const { a, b, space } = setup(cacheSize);
    const got = space.read(va(0x400ff0n), 0x20);
    assert.deepEqual(got, Buffer.concat([a.subarray(0xff0, 0x1000), b.subarray(0, 0x10)]));
    assert.deepEqual(space.read(va(0x400000n), 0x2000), Buffer.concat([a.subarray(0, 0x1000), b]));
    assert.equal(space.read(va(0x400123n), 0).length, 0);
  }
});

test("a read running into an unmapped page names the first unmapped address", () => {
  const { space } = setup();
  assertFault(() => space.read(va(0x401ff8n), 16), 0x402000n, /PTE not present at 0x402000$/);
  assertFault(() => space.read(va(0x401000n), 0x3000), 0x402000n, /PTE not present/);
});

test("a mapped page with no RAM behind it faults at the virtual address of the hole", () => {
  const { space } = setup();
  assertFault(() => space.read(va(0x403010n), 4), 0x403010n, /physical 0x7000010 unreadable/);
  // Through the batched path: the first piece is fine, the second is not.
  const s2 = setup();
  s2.pt.map(0x405000n, 0x10000n, 4096);
  s2.pt.map(0x406000n, 0x7000000n, 4096);
  assertFault(() => s2.space.read(va(0x405ffen), 4), 0x406000n, /physical 0x7000000 unreadable/);
});

test("scalar reads, including ones that straddle a page boundary", () => {
  const { a, b, space } = setup();
  assert.equal(space.readU8(va(0x400005n)), a[5]);
  assert.equal(space.readU16(va(0x400010n)), a.readUInt16LE(0x10));
  assert.equal(space.readU32(va(0x400ffcn)), a.readUInt32LE(0xffc));
  assert.equal(space.readU64(va(0x400100n)), a.readBigUInt64LE(0x100));
  const straddle = Buffer.concat([a.subarray(0xffb, 0x1000), b.subarray(0, 3)]);
  assert.equal(space.readU64(va(0x400ffbn)), straddle.readBigUInt64LE(0));
  assert.equal(space.readU32(va(0x400ffen)), straddle.readUInt32LE(3));
  assertFault(() => space.readU64(va(0x401ffcn)), 0x402000n, /PTE not present/);
});

test("write splits across pages and lands in the right physical bytes", () => {
  const { a, b, space } = setup();
  const data = Buffer.from("0123456789abcdef");
  space.write(va(0x400ff8n), data);
  assert.deepEqual(a.subarray(0xff8, 0x1000), data.subarray(0, 8));
  assert.deepEqual(b.subarray(0, 8), data.subarray(8));
  assertFault(() => space.write(va(0x401ffen), data), 0x402000n, /PTE not present/);
});

test("readCString stops at NUL without touching the unmapped page after it", () => {
  const { b, space } = setup();
  b.write("hello\0", 0xffa, "latin1");
  assert.equal(space.readCString(va(0x401ffan), 100), "hello");
  // Across a page boundary (A then B).
  const { a, b: b2, space: s2 } = setup();
  a.write("swap", 0xffc, "latin1");
  b2.write("per/0\0", 0, "latin1");
  assert.equal(s2.readCString(va(0x400ffcn), 64), "swapper/0");
  assert.equal(s2.readCString(va(0x400ffcn), 6), "swappe", "truncated at maxLength");
  // No NUL before the hole: faults at the hole.
  b2.fill(0x41);
  assertFault(() => s2.readCString(va(0x401ff0n), 64), 0x402000n, /PTE not present/);
});

test("isMapped, findTranslation and translate agree with the layout", () => {
  const { space } = setup();
  assert.equal(space.isMapped(va(0x400000n)), true);
  assert.equal(space.isMapped(va(0x402abcn)), false);
  assert.equal(space.findTranslation(va(0x402abcn)), undefined);
  assert.equal(space.translate(va(0x401abcn)).phys, 0x30abcn);
  assertFault(() => space.translate(va(0x402abcn)), 0x402abcn, /PTE not present/);
  assertFault(() => space.translate(va(0x8000_0000_0000n)), 0x8000_0000_0000n, /non-canonical/);
});

test("the cache serves stale translations until invalidate()", () => {
  const { mem, pt, space } = setup();
  mem.map(0x50000, 0x1000).write("new page", 0, "latin1");
  assert.equal(space.translate(va(0x400010n)).phys, 0x10010n);
  assert.equal(space.readU8(va(0x400000n)), 1);
  pt.map(0x400000n, 0x50000n, 4096); // the guest remaps the page
  assert.equal(translate(mem, X86_64_4LEVEL, pt.root, va(0x400010n)).phys, 0x50010n);
  assert.equal(space.translate(va(0x400010n)).phys, 0x10010n, "stale until invalidated");
  space.invalidate();
  assert.equal(space.translate(va(0x400010n)).phys, 0x50010n);
  assert.equal(space.readCString(va(0x400000n), 16), "new page");
  // Without a cache the change shows at once.
  const fresh = setup(0);
  fresh.pt.map(0x400000n, 0x11000n, 4096);
  assert.equal(fresh.space.translate(va(0x400000n)).phys, 0x11000n);
});

test("the cache is bounded and offsets within cached pages stay exact", () => {
  const { space } = setup(2);
  for (const [addr, phys] of [
    [0x400123n, 0x10123n],
    [0x401456n, 0x30456n],
    [0x404789n, 0x11789n],
    [0x400fffn, 0x10fffn],
  ] as const) {
    assert.equal(space.translate(va(addr)).phys, phys);
    assert.ok(space.cache!.size <= 2);
  }
  const c = new TranslationCache(2);
  const t = space.translate(va(0x400000n));
  c.set(1, t);
  c.set(2, t);
  c.set(3, t);
  assert.deepEqual([c.get(1), c.get(2) === t, c.get(3) === t, c.size], [undefined, true, true, 2]);
});

test("one walk of a large page serves every 4 KiB page inside it", () => {
  const mem = new BufferPhysicalMemory();
  const pt = new PageTableBuilder(mem, "4-level");
  const base = 0xffff_8880_0000_0000n;
  pt.map(base, 0x4000_0000n, 2 * 1024 * 1024);
  pt.map(base + 0x4000_0000n, 0x8000_0000n, 1024 * 1024 * 1024);
  const space = new AddressSpace(mem, X86_64_4LEVEL, pt.root);
  for (let i = 0n; i < 512n; i++) {
    const addr = base + i * 0x1000n + i;
    assert.equal(space.translate(va(addr)).phys, 0x4000_0000n + i * 0x1000n + i);
    assert.equal(space.translate(va(addr)).pageSize, 2 * 1024 * 1024);
  }
  for (let i = 0n; i < 64n; i++) {
    const addr = base + 0x4000_0000n + i * 0xff_ffffn;
    assert.equal(space.translate(va(addr)).phys, 0x8000_0000n + i * 0xff_ffffn);
  }
  assert.equal(space.cache!.misses, 2, "one walk per large page");
  assert.equal(space.cache!.size, 2);
  // Past the 2 MiB page nothing is mapped: the cached large page must not stretch over it.
  assert.equal(space.findTranslation(va(base + 0x20_0000n)), undefined);
  space.invalidate();
  assert.equal(space.cache!.size, 0);
});

test("a long read steps through a large page whole, then on into small pages and a hole", () => {
  const mem = new BufferPhysicalMemory();
  const big = mem.map(0x20_0000, 0x20_0000);
  const small = mem.map(0x1_0000, 0x1000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
  for (let i = 0; i < small.length; i++) small[i] = (i * 11 + 1) & 0xff;
  const pt = new PageTableBuilder(mem, "4-level");
  const base = 0xffff_ffff_8100_0000n;
  pt.map(base, 0x20_0000n, 2 * 1024 * 1024);
  pt.map(base + 0x20_0000n, 0x1_0000n, 4096);
  const space = new AddressSpace(mem, X86_64_4LEVEL, pt.root);
  const got = Buffer.alloc(0x20_0000 + 0x1000 - 0x100);
  space.readInto(va(base + 0x100n), got);
  assert.deepEqual(got.subarray(0, 0x20_0000 - 0x100), big.subarray(0x100));
  assert.deepEqual(got.subarray(0x20_0000 - 0x100), small);
  const lookups = space.cache!.hits + space.cache!.misses;
  assert.ok(
    lookups < 8,
    `${lookups} translation lookups: the large page is stepped over whole, not per 4 KiB`,
  );
  assertFault(
    () => space.read(va(base + 0x1000n), 0x20_0010),
    base + 0x20_1000n,
    /x86-64 4-level|not mapped|unmapped/,
  );
});

test("the identity space reads physical memory as virtual", () => {
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(0, 0x3000);
  ram.write("real mode", 0x1ffc, "latin1");
  const space = AddressSpace.identity(mem);
  assert.equal(space.layer, "identity");
  assert.equal(space.readCString(va(0x1ffcn), 32), "real mode");
  assert.equal(space.translate(va(0x2345n)).phys, 0x2345n);
  assert.throws(
    () => space.read(va(0x2ff0n), 0x20),
    (e: unknown) => {
      assert.ok(e instanceof FaultError);
      assert.equal(e.address, 0x3000n);
      return true;
    },
  );
});

test("absurd lengths are typed errors, not RangeErrors", () => {
  const { space } = setup();
  for (const n of [-1, 1.5, 2 ** 40, Number.NaN]) {
    assert.throws(
      () => space.read(va(0x400000n), n),
      (e: unknown) => e instanceof VmsightError,
    );
  }
  assert.throws(() => space.readCString(va(0x400000n), -5), VmsightError);
});

test("readPacked: every entry read in one batch, and only where it lies in one physical piece", () => {
  const { a, b, pt, space } = setup(16);
  // 0x410000..0x412000 is A again, both pages in physical order: a read across them is one piece.
  pt.map(0x410000n, 0x10000n, 4096);
  pt.map(0x411000n, 0x11000n, 4096);
  const addrs = [0x400010n, 0x401000n, 0x410ff8n, 0x400ff8n, 0x402000n, 0x403000n, 0x401ffcn];
  const { out, ok } = space.readPacked(addrs, 16);
  const entry = (k: number) => out.subarray(k * 16, (k + 1) * 16);
  assert.deepEqual([...ok], [1, 1, 1, 0, 0, 0, 0]);
  assert.deepEqual(entry(0), a.subarray(0x10, 0x20));
  assert.deepEqual(entry(1), b.subarray(0, 16));
  assert.deepEqual(entry(2), a.subarray(0xff8, 0x1008));
  // Not read: across into a distant page, an unmapped page, a hole, past the end of the mapping.
  assert.deepEqual(entry(3), Buffer.alloc(16));
  // What an entry not read here becomes when read alone: the fault that names the address.
  assertFault(() => space.read(va(0x401ffcn), 16), 0x402000n, /PTE not present/);
  // An offset past each address, into the next page or across into the one after it.
  const off = space.readPacked([0x400000n, 0x410000n], 16, 0x1010);
  assert.deepEqual([...off.ok], [1, 1]);
  assert.deepEqual(off.out.subarray(0, 16), b.subarray(0x10, 0x20));
  assert.deepEqual(off.out.subarray(16, 32), a.subarray(0x1010, 0x1020));
  assert.deepEqual([...space.readPacked([0x410000n], 16, 0xff8).ok], [1]);
  assert.deepEqual([...space.readPacked([0xfffffffffffff000n], 8, 0x2000).ok], [0], "past 2^64: read alone");
  assert.deepEqual([...space.readPacked([], 8).ok], []);
  assert.deepEqual([...space.readPacked([0x400000n], 4097).ok], [0], "longer than a page: read alone");
});

test("readPacked on the identity space: a physical address not exact as a number is read alone", () => {
  const mem = new BufferPhysicalMemory();
  mem.map(0x1000, 0x1000).fill(7);
  const space = AddressSpace.identity(mem);
  const got = space.readPacked([0x1000n, 1n << 60n], 4);
  assert.deepEqual([...got.ok], [1, 0]);
  assert.deepEqual(got.out.subarray(0, 4), Buffer.alloc(4, 7));
});
