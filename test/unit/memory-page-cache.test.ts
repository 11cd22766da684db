import assert from "node:assert/strict";
import { test } from "node:test";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { CachedPhysicalMemory } from "../../src/memory/page-cache.js";
import { pa } from "../../src/util/address.js";
import { FaultError } from "../../src/util/errors.js";

function setup() {
  const raw = new BufferPhysicalMemory();
  const bytes = raw.map(0, 0x10000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
  return { raw, bytes, cached: new CachedPhysicalMemory(raw) };
}

test("cached reads equal the source, across pages and at every size class", () => {
  const { bytes, cached } = setup();
  for (const [addr, len] of [
    [0, 8],
    [0xff8, 16],
    [0x1000, 600],
    [0x1ffc, 5000],
    [0x3000, 0x1000],
    [0x20, 70000 - 0x20],
  ]) {
    const want = bytes.subarray(addr!, Math.min(addr! + len!, bytes.length));
    if (addr! + len! > bytes.length) continue;
    assert.deepEqual(cached.read(pa(addr!), len!), want, `read ${addr}+${len}`);
  }
});

test("a cached page stays stale until invalidate(), as a stopped guest's memory would", () => {
  const { bytes, cached } = setup();
  const before = Buffer.from(cached.read(pa(0x2000), 600));
  bytes[0x2000] = 0xaa; // the guest writes while "running"
  assert.deepEqual(cached.read(pa(0x2000), 600), before);
  cached.invalidate();
  assert.equal(cached.read(pa(0x2000), 600)[0], 0xaa);
});

test("writes go through and are visible at once", () => {
  const { raw, cached } = setup();
  cached.read(pa(0x4000), 600);
  cached.write(pa(0x4004), Buffer.from("vmsight"));
  assert.equal(cached.read(pa(0x4004), 7).toString(), "vmsight");
  assert.equal(raw.read(pa(0x4004), 7).toString(), "vmsight");
});

test("a read past backed memory names the exact first unbacked address", () => {
  const { cached } = setup();
  assert.throws(
    () => cached.read(pa(0xfff0), 600),
    (e: unknown) => e instanceof FaultError && e.address === 0x10000n,
  );
});

test("small reads go straight through once, then cache their page", () => {
  const { bytes, cached } = setup();
  assert.equal(cached.read(pa(0x5008), 8).readUInt8(0), bytes[0x5008]);
  bytes[0x5008] = 0x11;
  assert.equal(cached.read(pa(0x5008), 8).readUInt8(0), 0x11, "the first small read did not cache the page");
  bytes[0x5008] = 0x22;
  assert.equal(cached.read(pa(0x5008), 8).readUInt8(0), 0x11, "the second small read cached the page");
  cached.invalidate();
  assert.equal(cached.read(pa(0x5008), 8).readUInt8(0), 0x22);
});

/** A source that counts its reads: single and batched. */
function counted() {
  const { raw, bytes } = setup();
  const calls = { read: 0, batches: 0, batched: 0 };
  const source = Object.assign(Object.create(raw) as BufferPhysicalMemory, {
    read(addr: bigint, length: number) {
      calls.read++;
      return raw.read(pa(addr), length);
    },
    readMany(requests: readonly { addr: bigint; length: number }[]) {
      calls.batches++;
      calls.batched += requests.length;
      return requests.map((r) => ({ ok: true as const, data: raw.read(pa(r.addr), r.length) }));
    },
  });
  return { bytes, calls, cached: new CachedPhysicalMemory(source) };
}

test("prefetched reads come from one batch, then from the cache until invalidate()", () => {
  const { bytes, calls, cached } = counted();
  const wanted = [0x1008, 0x2ff8, 0x7000, 0x9010].map((a) => ({ addr: pa(a), length: 8 }));
  cached.prefetch([...wanted, { addr: pa(0x4000), length: 600 }]);
  assert.deepEqual(calls, { read: 0, batches: 1, batched: 5 });
  for (const w of wanted)
    assert.deepEqual(cached.read(w.addr, 4), bytes.subarray(Number(w.addr), Number(w.addr) + 4));
  assert.deepEqual(cached.read(pa(0x4000), 600), bytes.subarray(0x4000, 0x4000 + 600));
  assert.equal(calls.read, 0, "a prefetched read went to the source");
  cached.prefetch(wanted);
  assert.equal(calls.batches, 1, "already fetched: no second batch");
  bytes[0x1008] = 0x5a;
  cached.invalidate();
  assert.equal(cached.read(pa(0x1008), 1)[0], 0x5a);
  assert.equal(calls.read, 1);
});

test("a prefetched read does not serve a longer read at the same address", () => {
  const { bytes, cached } = counted();
  cached.prefetch([{ addr: pa(0x3000), length: 8 }]);
  assert.deepEqual(cached.read(pa(0x3000), 600), bytes.subarray(0x3000, 0x3000 + 600));
});

test("a write drops what was prefetched", () => {
  const { cached } = counted();
  cached.prefetch([{ addr: pa(0x6000), length: 8 }]);
  cached.write(pa(0x6000), Buffer.from([1, 2, 3]));
  assert.deepEqual([...cached.read(pa(0x6000), 3)], [1, 2, 3]);
});
