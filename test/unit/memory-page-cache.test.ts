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
