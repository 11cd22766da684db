import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { openLime, openRaw, ramRanges, writeLime, writeRaw } from "../../src/memory/images.js";
import { pa } from "../../src/util/address.js";

const dir = mkdtempSync(join(tmpdir(), "vmsight-images-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Low RAM with a shadowed ROM inside, RAM above 1 MiB, and a lone firmware ROM far above. */
function guest(): BufferPhysicalMemory {
  const mem = new BufferPhysicalMemory();
  const fill = (n: number, seed: number) =>
    Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff));
  mem.map(0, fill(0x3000, 1));
  mem.map(0x3000, fill(0x1000, 2), "rom", false);
  mem.map(0x10_0000, fill(0x2000, 3));
  mem.map(0xfffc_0000, fill(0x1000, 4), "bios", false);
  return mem;
}

test("RAM ranges keep ROM inside RAM and drop the lone firmware ROM", () => {
  assert.deepEqual(
    ramRanges(guest()).map((r) => r.start),
    [0n, 0x3000n, 0x10_0000n],
  );
});

test("a LiME image reads back byte for byte, with one header per range", () => {
  const mem = guest();
  const path = join(dir, "g.lime");
  const seen: bigint[] = [];
  writeLime(mem, path, (done) => seen.push(done));
  assert.equal(seen.at(-1), 0x6000n);
  assert.equal(statSync(path).size, 0x6000 + 3 * 32);
  const back = openLime(path);
  try {
    assert.deepEqual(
      back.ranges().map((r) => [r.start, r.size]),
      ramRanges(mem).map((r) => [r.start, r.size]),
    );
    for (const at of [0n, 0x2fffn, 0x3000n, 0x10_1fffn])
      assert.deepEqual(back.read(pa(at), 1), mem.read(pa(at), 1));
    assert.throws(() => back.read(pa(0x4000n), 1), /no guest RAM/);
  } finally {
    back.close();
  }
});

test("a raw image is flat from address 0: holes are zeros, or faults when the ranges are given", () => {
  const mem = guest();
  const path = join(dir, "g.raw");
  writeRaw(mem, path);
  assert.equal(statSync(path).size, 0x10_2000);
  const flat = openRaw(path);
  const ranged = openRaw(path, ramRanges(mem));
  try {
    assert.deepEqual(flat.read(pa(0x10_0010n), 16), mem.read(pa(0x10_0010n), 16));
    assert.deepEqual(flat.read(pa(0x5000n), 4), Buffer.alloc(4));
    assert.deepEqual(ranged.read(pa(0x3000n), 16), mem.read(pa(0x3000n), 16));
    assert.throws(() => ranged.read(pa(0x5000n), 4), /no guest RAM/);
  } finally {
    flat.close();
    ranged.close();
  }
});
