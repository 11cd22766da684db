import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";

const u64 = () => fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
import { addToEach, isAscending } from "../../src/util/u64-column.js";

test("addToEach equals BigInt addition modulo 2^64, carries across the halves, and skips what keep excludes", () => {
  fc.assert(
    fc.property(fc.array(u64(), { maxLength: 50 }), u64(), (values, delta) => {
      const column = BigUint64Array.from(values);
      addToEach(column, delta, (i) => i % 3 !== 1);
      values.forEach((v, i) => {
        assert.equal(column[i], i % 3 === 1 ? v : BigInt.asUintN(64, v + delta));
      });
    }),
  );
  const edge = BigUint64Array.of(0xffff_ffffn, 0xffff_ffff_ffff_ffffn);
  addToEach(edge, 1n, () => true);
  assert.deepEqual([...edge], [0x1_0000_0000n, 0n]);
});

test("isAscending compares whole 64-bit values, high half first", () => {
  fc.assert(
    fc.property(fc.array(u64(), { maxLength: 50 }), (values) => {
      const expected = values.every((v, i) => i === 0 || values[i - 1]! <= v);
      assert.equal(isAscending(BigUint64Array.from(values)), expected);
    }),
  );
  assert.equal(isAscending(BigUint64Array.of(0xffff_ffffn, 0x1_0000_0000n)), true);
  assert.equal(isAscending(BigUint64Array.of(0x1_0000_0000n, 0xffff_ffffn)), false);
  assert.equal(isAscending(BigUint64Array.of(5n, 5n)), true);
});
