import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { buildNameIndex, lookupName } from "../../src/symbols/kallsyms/name-index.js";

describe("name index", () => {
  const names = ["_text", "dup", "init_task", "dup", "", "ü_name"];
  const nameAt = (i: number) => names[i]!;
  const table = buildNameIndex(names.length, nameAt);

  test("finds every name at its first index, and nothing for an unknown name", () => {
    for (const [i, name] of names.entries())
      assert.equal(lookupName(table, names.length, nameAt, name), names.indexOf(name), `${name} at ${i}`);
    assert.equal(lookupName(table, names.length, nameAt, "nope"), undefined);
  });

  test("a damaged table (full, out of range, wrong size) answers undefined, never loops", () => {
    assert.equal(lookupName(new Uint32Array(16).fill(1), names.length, nameAt, "nope"), undefined);
    assert.equal(lookupName(new Uint32Array(16).fill(99), names.length, nameAt, "dup"), undefined);
    assert.equal(lookupName(new Uint32Array(15), names.length, nameAt, "dup"), undefined);
  });
});
