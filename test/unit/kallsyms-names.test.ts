import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_NAMES_BYTES, decodeNames } from "../../src/symbols/kallsyms/names.js";
import { GuestDataError } from "../../src/util/errors.js";

/** Every token is 256 bytes: "T" then 255 "a"s, so four make one 1023-byte name. */
const TOKENS = Array.from({ length: 256 }, () => Uint8Array.from([0x54, ...new Array(255).fill(0x61)]));

/** `count` records of `perName` tokens each. */
function records(count: number, perName: number): Uint8Array {
  const out = new Uint8Array(count * (perName + 1));
  for (let i = 0; i < count; i++) out[i * (perName + 1)] = perName;
  return out;
}

describe("kallsyms name expansion bounds", () => {
  test("names that fit decode in full", () => {
    const d = decodeNames(records(3, 4), 0, 3, TOKENS, 4096);
    assert.ok(d);
    assert.deepEqual([...d.starts], [0, 1023, 2046, 3069]);
    assert.equal(String.fromCharCode(...d.types), "TTT");
  });

  test("past the total cap is a typed error, not an internal one", () => {
    assert.throws(() => decodeNames(records(5, 4), 0, 5, TOKENS, 4096), GuestDataError);
  });

  test("the default cap holds for names that would otherwise total gigabytes", () => {
    // MAX_SYMS names of 1023 bytes are within every per-name bound; the total is not.
    const count = Math.floor(MAX_NAMES_BYTES / 1024) + 1;
    assert.throws(
      () => decodeNames(records(count, 4), 0, count, TOKENS),
      (e: unknown) => e instanceof GuestDataError && /MiB/.test(e.message),
    );
  });

  test("one name longer than any kernel's is rejected without expanding it whole", () => {
    // 32767 tokens of 256 bytes: 8 MiB for a single name.
    const rec = new Uint8Array(2 + 32767);
    rec[0] = 0xff;
    rec[1] = 0xff;
    assert.equal(decodeNames(rec, 0, 1, TOKENS), undefined);
  });
});
