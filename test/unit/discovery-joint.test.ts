/** The one joint filter of discovery's rules: two members judged by a relation between them. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Candidates } from "../../src/discovery/candidates.js";
import { keepAgreeing } from "../../src/discovery/rules/joint.js";

const A = { key: "a", rule: "rule on a" };
const B = { key: "b", rule: "rule on b" };

function sets(a: number[], b: number[]): Candidates {
  const c = new Candidates();
  c.define("a", a);
  c.define("b", b);
  return c;
}

describe("keepAgreeing", () => {
  test("keeps exactly the candidates that some candidate of the other member agrees with", () => {
    const c = sets([0, 8, 16, 24], [4, 12, 20, 28, 36]);
    // b must sit 4 after a, and only these two pairs also hold the same value in the guest.
    const ok = new Set(["8:12", "24:28"]);
    assert.equal(
      keepAgreeing(c, A, B, (a, b) => ok.has(`${a}:${b}`)),
      true,
    );
    assert.deepEqual(c.get("a"), [8, 24]);
    assert.deepEqual(c.get("b"), [12, 28]);
    assert.equal(c.status("a").history.removedBy["rule on a"], 2);
    assert.equal(c.status("b").history.removedBy["rule on b"], 3);
  });

  test("judges the second member against the first member's survivors only", () => {
    const c = sets([0, 8, 16], [100, 200]);
    // Which a each call used, once a has been narrowed (its set replaced after its filter).
    const afterNarrowing: number[] = [];
    keepAgreeing(c, A, B, (a) => {
      if (c.get("a").length === 1) afterNarrowing.push(a);
      return a === 8;
    });
    assert.deepEqual(c.get("a"), [8]);
    assert.deepEqual(c.get("b"), [100, 200]);
    assert.ok(afterNarrowing.length > 0);
    assert.deepEqual(new Set(afterNarrowing), new Set([8]), "only the first member's survivor is used");
  });

  test("is skipped, changing nothing, when more pairs than allowed would be judged", () => {
    const c = sets([0, 8, 16], [1, 2, 3]);
    let calls = 0;
    const applied = keepAgreeing(
      c,
      A,
      B,
      () => {
        calls++;
        return false;
      },
      8,
    );
    assert.equal(applied, false);
    assert.equal(calls, 0);
    assert.deepEqual(c.get("a"), [0, 8, 16]);
    assert.deepEqual(c.get("b"), [1, 2, 3]);
  });

  test("does not re-check a converged member, but narrows the other against it", () => {
    const c = sets([8], [1, 2, 3]);
    keepAgreeing(c, A, B, (a, b) => a === 8 && b === 2);
    assert.deepEqual(c.get("a"), [8]);
    assert.deepEqual(c.get("b"), [2]);
    const d = sets([8], [1, 2, 3]);
    keepAgreeing(d, A, B, () => false);
    assert.deepEqual(d.get("a"), [8], "a converged member keeps its offset");
    assert.deepEqual(d.get("b"), []);
  });
});
