import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { layerViolations, readmeOmissions } from "../../scripts/check-layers.js";

const repoSrc = resolve(import.meta.dirname, "../../../src");

test("src/ respects the one-way layering", () => {
  assert.deepEqual(layerViolations(repoSrc), []);
});

test("the layer check catches an upward import", () => {
  const root = mkdtempSync(join(tmpdir(), "layers-"));
  mkdirSync(join(root, "memory"));
  mkdirSync(join(root, "os"));
  writeFileSync(join(root, "os", "a.ts"), "export const a = 1;\n");
  writeFileSync(join(root, "memory", "b.ts"), 'import { a } from "../os/a.js";\nexport const b = a;\n');
  assert.equal(layerViolations(root).length, 1);
});

test("a folder outside the layer list is itself a violation", () => {
  const root = mkdtempSync(join(tmpdir(), "layers-"));
  mkdirSync(join(root, "target"));
  assert.match(layerViolations(root).join("\n"), /target\/ is not in the layer list/);
});

test("the README's layout names every src/ folder", () => {
  const readme = readFileSync(resolve(repoSrc, "..", "README.md"), "utf8");
  assert.deepEqual(readmeOmissions(repoSrc, readme), []);
  assert.equal(readmeOmissions(repoSrc, "src/os/ only").length > 0, true);
});
