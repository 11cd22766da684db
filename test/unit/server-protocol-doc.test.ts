/** docs/protocol.md is what the schema generates, so it cannot drift from what the server checks. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { protocolDoc } from "../../src/server/docs.js";
import { EVENT_TYPES, METHODS } from "../../src/server/schema.js";
import { ERROR_CODES } from "../../src/util/errors.js";

const root = join(import.meta.dirname, "..", "..", "..");

test("docs/protocol.md equals the document generated from the schema", () => {
  const onDisk = readFileSync(join(root, "docs", "protocol.md"), "utf8");
  assert.equal(onDisk, protocolDoc(), "regenerate with: node dist/src/server/docs.js");
});

test("the document names every method, event type and error code", () => {
  const doc = protocolDoc();
  for (const m of Object.keys(METHODS)) assert.ok(doc.includes(`### ${m}\n`), m);
  for (const e of EVENT_TYPES) assert.ok(doc.includes(`| ${e} |`), e);
  for (const c of ERROR_CODES) assert.ok(doc.includes(`\`${c}\``), c);
});
