import assert from "node:assert/strict";
import { test } from "node:test";
import { REQUIRE_ALL, skipUnless } from "../support/skip.js";

function withRequireAll<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env[REQUIRE_ALL];
  if (value === undefined) Reflect.deleteProperty(process.env, REQUIRE_ALL);
  else process.env[REQUIRE_ALL] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) Reflect.deleteProperty(process.env, REQUIRE_ALL);
    else process.env[REQUIRE_ALL] = saved;
  }
}

test("skipUnless: runs what the host can run, skips what it cannot, fails it under VMSIGHT_REQUIRE_ALL=1", () => {
  withRequireAll(undefined, () => {
    assert.equal(skipUnless(true, "no QEMU"), false);
    assert.equal(skipUnless(false, "no QEMU"), "no QEMU");
  });
  withRequireAll("1", () => {
    assert.equal(skipUnless(true, "no QEMU"), false);
    assert.throws(() => skipUnless(false, "no QEMU"), /VMSIGHT_REQUIRE_ALL=1 .*no QEMU/);
  });
});
