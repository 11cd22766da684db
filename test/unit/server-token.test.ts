/** The token a user's servers share: kept across restarts, private, remade when unreadable. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { userToken } from "../../src/server/token.js";

test("a restarted server takes the same token; a damaged file gets a new one", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-token-"));
  try {
    const first = userToken(dir);
    assert.match(first, /^[A-Za-z0-9_-]{32}$/);
    assert.equal(userToken(dir), first);
    assert.equal(statSync(join(dir, "serve-token")).mode & 0o777, 0o600);
    writeFileSync(join(dir, "serve-token"), "short");
    const second = userToken(dir);
    assert.notEqual(second, first);
    assert.match(second, /^[A-Za-z0-9_-]{32}$/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
