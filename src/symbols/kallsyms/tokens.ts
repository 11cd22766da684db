import type { ImageReader } from "./bytes.js";

export interface TokenTables {
  /** Image offset of kallsyms_token_table. */
  readonly table: number;
  /** Image offset of kallsyms_token_index (256 u16 offsets into the table). */
  readonly index: number;
  /** The 256 tokens (without their NUL). */
  readonly tokens: readonly Uint8Array[];
}

/**
 * scripts/kallsyms keeps a single-character token for every character still used in some
 * symbol, at the index equal to that character; digits always are, so "0\0" … "9\0" sits at
 * tokens 0x30–0x39, back to back. That 20-byte run is the anchor.
 */
const ANCHOR = Buffer.from("0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00", "latin1");
const FIRST_DIGIT = 0x30;
/** Tokens are merged pairs of pairs…; real ones are well under this. */
const MAX_TOKEN_LEN = 256;
/** Stop after this many anchor hits: a real image has a handful, hostile input may have millions. */
const MAX_ANCHOR_HITS = 4096;
/** Each confirmed table costs a scan back through the image; a real image has one. */
const MAX_TABLES = 16;

/**
 * Every (token_table, token_index) pair in the image that checks out exactly, in image order,
 * looking for the anchor only in `within` ([from, to) offsets; default all of it): an image read
 * in part is zeros elsewhere, and scanning those touches pages for nothing.
 */
export function* findTokenTables(
  r: ImageReader,
  within: readonly (readonly [number, number])[] = [[0, r.length]],
): Generator<TokenTables> {
  const buf = Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
  let hits = 0;
  let tables = 0;
  for (const [from, to] of within) {
    const part = buf.subarray(from, to);
    for (let at = part.indexOf(ANCHOR); at >= 0; at = part.indexOf(ANCHOR, at + 2)) {
      if (++hits > MAX_ANCHOR_HITS) return;
      const found = checkAnchor(r, from + at);
      if (!found) continue;
      yield found;
      if (++tables >= MAX_TABLES) return;
    }
  }
}

/** Offset just past `count` NUL-terminated non-empty tokens starting at `off`, or -1. */
function skipTokens(bytes: Uint8Array, off: number, count: number): number {
  let p = off;
  for (let i = 0; i < count; i++) {
    const limit = Math.min(bytes.length, p + MAX_TOKEN_LEN + 1);
    let q = p;
    while (q < limit && bytes[q] !== 0) q++;
    if (q === p || q >= limit) return -1;
    p = q + 1;
  }
  return p;
}

function checkAnchor(r: ImageReader, digitsAt: number): TokenTables | undefined {
  const end = skipTokens(r.bytes, digitsAt, 256 - FIRST_DIGIT);
  if (end < 0) return undefined;
  // token_index follows the table at the next 8-byte boundary; accept any even gap up to 8
  // in case a toolchain aligned differently.
  for (let index = end + (end % 2); index <= end + 8; index += 2) {
    const t = checkIndex(r, index, digitsAt, end);
    if (t) return t;
  }
  return undefined;
}

function checkIndex(r: ImageReader, index: number, digitsAt: number, end: number): TokenTables | undefined {
  if (r.u16(index) !== 0 || r.u16(index + 510) === undefined) return undefined;
  const zero = r.u16(index + 2 * FIRST_DIGIT)!;
  for (let d = 1; d < 10; d++) {
    if (r.u16(index + 2 * (FIRST_DIGIT + d)) !== zero + 2 * d) return undefined;
  }
  const table = digitsAt - zero;
  if (table < 0) return undefined;
  // The strong check: walking all 256 tokens from the table start must land on exactly the
  // offsets the index claims and end where the anchor walk ended.
  const tokens: Uint8Array[] = [];
  let p = table;
  for (let i = 0; i < 256; i++) {
    if (r.u16(index + 2 * i) !== p - table) return undefined;
    const next = skipTokens(r.bytes, p, 1);
    if (next < 0) return undefined;
    tokens.push(r.bytes.slice(p, next - 1));
    p = next;
  }
  return p === end ? { table, index, tokens } : undefined;
}
