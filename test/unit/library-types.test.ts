/**
 * The published API as a consumer sees it: test/types/consumer.ts imports "vmsight" (resolved
 * through package.json's `exports` to the emitted .d.ts) and must type-check, its
 * @ts-expect-error lines included; and the JS entry point loads under the package's own name.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { test } from "node:test";

const ROOT = resolve(import.meta.dirname, "../../..");

test("a consumer of the public API type-checks against the emitted declarations", () => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const r = spawnSync(process.execPath, [tsc, "-p", resolve(ROOT, "test/types")], { encoding: "utf8" });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
});

test("the package's own name resolves to the library entry point", async () => {
  // Not a literal: the build that emits the declarations must not need them already.
  const name = "vmsight";
  const lib = (await import(name)) as typeof import("../../src/lib/index.js");
  assert.equal(typeof lib.attach, "function");
  assert.equal(typeof lib.openDump, "function");
  assert.ok(lib.ERROR_CODES.includes("E_NOT_LIVE"));
  assert.equal(new lib.VmsightError("E_NOT_LIVE", "x").code, "E_NOT_LIVE");
});
