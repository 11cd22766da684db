/** serve's TCP secret: a random token, compared in constant time. */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

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
