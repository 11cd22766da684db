/**
 * KASLR slide from RAM during decompression, on a made-up image: a .data section with pointers
 * into the image, copied as the decompressor would (raw, then relocated by a slide).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { dataPhysFor, findAll, slideFromData } from "../../src/discovery/slide.js";

const BASE = 0xffffffff81000000n;
const SIZE = 0x2000000;

function image() {
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i += 8) {
    // Every third word points into the image; the rest are small numbers and zeros.
    data.writeBigUInt64LE(i % 24 === 0 ? BASE + BigInt(i * 997) : BigInt(i % 7), i);
  }
  return { data: { addr: BASE + 0x1c00000n, bytes: data }, base: BASE, image: new Uint8Array(SIZE) };
}

function relocate(bytes: Buffer, slide: bigint): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i += 8) {
    const v = out.readBigUInt64LE(i);
    if (v >= BASE && v < BASE + BigInt(SIZE)) out.writeBigUInt64LE(v + slide, i);
  }
  return out;
}

describe("KASLR slide from relocated .data", () => {
  test("a relocated copy gives the slide", () => {
    const k = image();
    const r = slideFromData(k, relocate(k.data.bytes, 0x2e400000n));
    assert.equal(r.slide, 0x2e400000n);
    assert.equal(r.agreeing, r.compared);
  });

  test("the raw copy (not yet relocated) gives nothing", () => {
    const k = image();
    assert.equal(slideFromData(k, k.data.bytes).slide, undefined);
  });

  test("the kernel writing some pointers after relocation does not change the answer", () => {
    const k = image();
    const ram = relocate(k.data.bytes, 0x10000000n);
    for (let i = 0; i < 400; i += 24) ram.writeBigUInt64LE(0xffff888012345678n, i);
    assert.equal(slideFromData(k, ram).slide, 0x10000000n);
  });

  test("noise, a slide that is not 2 MiB aligned, or too few pointers give nothing", () => {
    const k = image();
    const noise = Buffer.alloc(4096, 0x5a);
    assert.equal(slideFromData(k, noise).slide, undefined);
    assert.equal(slideFromData(k, relocate(k.data.bytes, 0x1234000n)).slide, undefined);
    assert.equal(slideFromData(k, relocate(k.data.bytes, 0x200000n).subarray(0, 64)).slide, undefined);
  });

  test("findAll and the .data address of a banner copy", () => {
    assert.deepEqual(
      findAll(Buffer.from("xxLinux versionyyLinux version"), Buffer.from("Linux version")),
      [2, 17],
    );
    const k = {
      ...image(),
      bannerAddr: BASE + 0x1000000n,
      banner: new Uint8Array(),
      symbols: undefined as never,
    };
    assert.equal(dataPhysFor(k, 0x5000000n), 0x5000000n - 0x1000000n + 0x1c00000n);
  });
});
