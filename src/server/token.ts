/** serve's TCP secret: a random token, compared in constant time. */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { privateDir } from "../util/private-dir.js";

export function newToken(): string {
  return randomBytes(24).toString("base64url");
}

/** Constant-time, and hashing first makes the lengths equal so length does not leak either. */
export function tokenMatches(given: string | null, token: string): boolean {
  if (given === null) return false;
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(token).digest();
  return timingSafeEqual(a, b);
}

const TOKEN_FILE = "serve-token";
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{32}$/;

/**
 * The token a user's servers share, kept in vmsight's private directory (0600): a restarted
 * `vmsight serve` takes the same one, so an open dashboard reconnects by itself and a script's
 * URL stays good. Remove the file to have a new one made.
 */
export function userToken(dir = privateDir()): string {
  const path = join(dir, TOKEN_FILE);
  try {
    const kept = readFileSync(path, "utf8").trim();
    if (TOKEN_SHAPE.test(kept)) return kept;
  } catch {
    // none yet: made below
  }
  const token = newToken();
  writeFileSync(`${path}.tmp`, token, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
  return token;
}
