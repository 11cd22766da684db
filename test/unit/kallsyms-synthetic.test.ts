import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_SYMS, recoverKallsymsWithLayout } from "../../src/symbols/kallsyms/index.js";
import { GuestDataError } from "../../src/util/errors.js";

import { BASE, type Order, type Sym, TEXT, build, sampleSymbols } from "../fixtures/kallsyms/builder.js";

function expectSame(got: ReturnType<typeof recoverKallsymsWithLayout>["table"], want: Sym[]): void {
  assert.equal(got.size, want.length);
  got.symbols.forEach((s, i) => {
    const w = want[i]!;
    assert.deepEqual([s.name, s.type, s.address], [w.name, w.type, w.address], `symbol ${i}`);
  });
}

describe("kallsyms recovery on hand-built tables", () => {
  for (const order of ["6.1", "6.12"] as const) {
    test(`${order} order, ABSOLUTE_PERCPU offsets`, () => {
      const syms = sampleSymbols();
      const { image, at } = build(syms, order, BASE, TEXT);
      const { table, layout } = recoverKallsymsWithLayout(image, BASE);
      expectSame(table, syms);
      assert.equal(layout.addressing, "relative-absolute-percpu");
      assert.equal(layout.numSymsAddr, BASE + BigInt(at.num_syms!));
      assert.equal(layout.tokenTableAddr, BASE + BigInt(at.token_table!));
      assert.equal(layout.offsetsAddr, BASE + BigInt(at.offsets!));
      assert.equal(layout.seqsOfNamesAddr, BASE + BigInt(at.seqs_of_names!));
      assert.equal(layout.relativeBase, TEXT);
      assert.deepEqual(
        table.symbols.filter((s) => s.absolute).map((s) => s.name),
        ["fixed_percpu_data", "__per_cpu_start", "cpu_number"],
      );
      assert.equal(table.findAddress("dup_static"), TEXT + 0x1000n + 5n * 0x40n);
      assert.equal(table.symbols.filter((s) => s.name === "dup_static").length, 8);
    });
  }

  test("percpuBase moves only the per-CPU offsets", () => {
    const syms = sampleSymbols();
    const { image } = build(syms, "6.12", BASE, TEXT);
    const { table } = recoverKallsymsWithLayout(image, BASE, { percpuBase: 0xffff888000000000n });
    assert.equal(table.findAddress("cpu_number"), 0xffff8880000001f0n);
    assert.equal(table.findAddress("_text"), TEXT);
  });

  test("5.x order with absolute u64 addresses and u64 markers", () => {
    const syms = sampleSymbols().filter((s) => !s.percpu);
    const { image, at } = build(syms, "5.x-absolute", BASE, TEXT);
    const { table, layout } = recoverKallsymsWithLayout(image, BASE);
    expectSame(table, syms);
    assert.equal(layout.addressing, "absolute");
    assert.equal(layout.markerSize, 8);
    assert.equal(layout.addressesAddr, BASE + BigInt(at.addresses!));
    assert.equal(layout.seqsOfNamesAddr, undefined);
  });
});

describe("kallsyms recovery on hostile tables", { timeout: 10_000 }, () => {
  const syms = sampleSymbols();
  const { image, at } = build(syms, "6.1", BASE, TEXT);
  const patched = (off: number, v: number) => {
    const copy = image.slice();
    new DataView(copy.buffer).setUint32(off, v, true);
    return copy;
  };

  test("absurd or wrong num_syms", () => {
    assert.throws(() => recoverKallsymsWithLayout(patched(at.num_syms!, 0xffff_ffff), BASE), GuestDataError);
    assert.throws(() => recoverKallsymsWithLayout(patched(at.num_syms!, MAX_SYMS + 1), BASE), GuestDataError);
    assert.throws(
      () => recoverKallsymsWithLayout(patched(at.num_syms!, syms.length + 1), BASE),
      GuestDataError,
    );
    assert.throws(
      () => recoverKallsymsWithLayout(patched(at.num_syms!, syms.length - 1), BASE),
      GuestDataError,
    );
  });

  test("a wrong marker", () => {
    assert.throws(() => recoverKallsymsWithLayout(patched(at.markers! + 4, 12345), BASE), GuestDataError);
  });

  test("a token index that disagrees with the token table", () => {
    const copy = image.slice();
    copy[at.token_index! + 2 * 0x61] = copy[at.token_index! + 2 * 0x61]! + 1;
    assert.throws(() => recoverKallsymsWithLayout(copy, BASE), GuestDataError);
  });

  test("truncated tables", () => {
    for (const end of [at.names! + 50, at.token_table! + 300, at.token_index! + 100]) {
      assert.throws(
        () => recoverKallsymsWithLayout(image.subarray(0, end), BASE),
        GuestDataError,
        `cut at ${end}`,
      );
    }
  });

  test("a name whose length runs past the token table", () => {
    const copy = image.slice();
    copy[at.names!] = 0xff;
    copy[at.names! + 1] = 0xff;
    assert.throws(() => recoverKallsymsWithLayout(copy, BASE), GuestDataError);
  });

  test("no table at all: empty, random, or a flood of fake anchors", () => {
    assert.throws(() => recoverKallsymsWithLayout(new Uint8Array(0), BASE), GuestDataError);
    const random = new Uint8Array(8 << 20);
    let x = 1;
    for (let i = 0; i < random.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      random[i] = x >>> 24;
    }
    assert.throws(() => recoverKallsymsWithLayout(random, BASE), GuestDataError);
    const anchors = Buffer.alloc(8 << 20);
    const digits = Buffer.from("0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00", "latin1");
    for (let p = 0; p + digits.length <= anchors.length; p += 64) digits.copy(anchors, p);
    assert.throws(() => recoverKallsymsWithLayout(anchors, BASE), GuestDataError);
  });
});
