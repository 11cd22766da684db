/** The offsets profile `vmsight discover` writes, as a StructLayout for the object model. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseOffsetsProfile, profileLayout } from "../../src/symbols/profile-layout.js";
import { VmsightError } from "../../src/util/errors.js";

const TEXT = JSON.stringify({
  "task_struct.pid": 2432,
  "task_struct.thread_info.flags": 0,
  "task_struct.comm": 2976,
});

describe("offsets profile layout", () => {
  test("members in the profile have their offsets; dotted paths are keys as written", () => {
    const l = profileLayout(parseOffsetsProfile(TEXT, "p.json"), "p.json");
    assert.equal(l.offsetof("task_struct", "pid"), 2432);
    assert.equal(l.findOffset("task_struct", "thread_info.flags"), 0);
    assert.equal(l.memberSize("task_struct", "comm"), 16);
    assert.match(l.source, /p\.json/);
  });

  test("a member the profile lacks is absent, and offsetof names it", () => {
    const l = profileLayout(parseOffsetsProfile(TEXT, "p.json"), "p.json");
    assert.equal(l.findOffset("task_struct", "tgid"), undefined);
    assert.equal(l.findSize("task_struct"), undefined);
    assert.equal(l.findEnumValue("MOD_TEXT"), undefined);
    assert.throws(
      () => l.offsetof("task_struct", "tgid"),
      (e: unknown) =>
        e instanceof VmsightError && /task_struct\.tgid/.test(e.message) && /lacks it/.test(e.hint ?? ""),
    );
  });

  test("malformed profiles are refused with E_PROFILE", () => {
    for (const bad of [
      "[1]",
      "{",
      '{"pid": 1}',
      '{"task_struct.pid": -4}',
      '{"task_struct.pid": "8"}',
      '{"a.b": 1.5}',
    ]) {
      assert.throws(
        () => parseOffsetsProfile(bad, "x"),
        (e: unknown) => e instanceof VmsightError && e.code === "E_PROFILE",
        bad,
      );
    }
  });
});
