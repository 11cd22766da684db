import { GuestDataError } from "../../util/errors.js";

/**
 * kallsyms_names is a run of [len][len token bytes] records. Since 6.1 a length with bit 7
 * set continues in a second byte (low 7 bits first), for Rust's long names; older kernels
 * never set that bit (names were under 128 bytes), so one reader fits all.
 */

/** Shared work budget, so hostile input cannot make the candidate search quadratic. */
export class Budget {
  constructor(private left: number) {}
  spend(n: number): void {
    this.left -= n;
    if (this.left < 0) {
      throw new GuestDataError("kallsyms: table search exceeded its work budget (hostile or corrupt image?)");
    }
  }
}

/**
 * Offset just past `count` records starting at `start`, all within [start, limit), or -1.
 * When `marks` is given, marks[k] receives the offset (relative to start) of record 256·k.
 */
export function walkNames(
  bytes: Uint8Array,
  start: number,
  count: number,
  limit: number,
  budget: Budget,
  marks?: Uint32Array,
): number {
  let p = start;
  let i = 0;
  for (; i < count; i++) {
    if (marks && (i & 0xff) === 0) marks[i >>> 8] = p - start;
    if (p >= limit) break;
    let len = bytes[p]!;
    let p2 = p + 1;
    if (len & 0x80) {
      if (p2 >= limit) break;
      len = (len & 0x7f) | (bytes[p2]! << 7);
      p2++;
    }
    // Every record holds at least the type letter.
    if (len === 0) break;
    p = p2 + len;
  }
  budget.spend(i + 1);
  return i === count && p <= limit ? p : -1;
}

export interface DecodedNames {
  /** The type letter of each symbol, as a char code. */
  readonly types: Uint8Array;
  /** Every name, back to back (one latin1 string, not 10^5 small ones). */
  readonly text: string;
  /** Name i is text.slice(starts[i], starts[i + 1]). */
  readonly starts: Uint32Array;
}

/**
 * Expands every record (already bounded by a successful walkNames) through the token table;
 * undefined if a name expands absurdly long or a token holds a line break. The expansions go
 * into one byte buffer decoded once, because building 10^5 strings by concatenation costs more
 * than the whole table search, and the symbol table and the kernel cache keep names that way.
 */
export function decodeNames(
  bytes: Uint8Array,
  start: number,
  count: number,
  tokens: readonly Uint8Array[],
  maxTotal = MAX_NAMES_BYTES,
): DecodedNames | undefined {
  const types = new Uint8Array(count);
  const starts = new Uint32Array(count + 1);
  let out: Uint8Array = new Uint8Array(Math.min(1 << 20, maxTotal + 1));
  let o = 0;
  let p = start;
  for (let i = 0; i < count; i++) {
    let len = bytes[p++]!;
    if (len & 0x80) len = (len & 0x7f) | (bytes[p++]! << 7);
    // The first expanded character is the type letter, not part of the name.
    let skip = 1;
    const nameStart = o;
    for (const end = p + len; p < end; p++) {
      const t = tokens[bytes[p]!]!;
      // Checked per token: one record of 32767 tokens of 256 bytes would expand to 8 MiB.
      if (o - nameStart + t.length - skip > MAX_NAME_LEN) return undefined;
      // The total counts one separator per name, as a line per symbol would.
      if (o + i + t.length + 1 > maxTotal) throw tooMuchText(count, maxTotal);
      if (o + t.length > out.length) out = grow(out, o, maxTotal);
      for (let k = 0; k < t.length; k++) {
        if (skip) {
          types[i] = t[k]!;
          skip = 0;
        } else out[o++] = t[k]!;
      }
    }
    starts[i + 1] = o;
  }
  const used = out.subarray(0, o);
  // A line break in a name would make it two lines wherever names are listed.
  if (used.includes(SEPARATOR)) return undefined;
  return { types, text: Buffer.from(used.buffer, 0, o).toString("latin1"), starts };
}

const SEPARATOR = 0x0a;
/** KSYM_NAME_LEN is 512 since 6.1 (128 before); longer expansions are not real names. */
const MAX_NAME_LEN = 1024;

/**
 * All names together: real kernels have a few MiB (2·10^5 names of ~25 bytes). Without a total
 * cap MAX_SYMS names of MAX_NAME_LEN bytes reach 2 GiB, past what one string can hold.
 */
export const MAX_NAMES_BYTES = 128 << 20;

function tooMuchText(count: number, maxTotal: number): GuestDataError {
  return new GuestDataError(
    `kallsyms: the ${count} symbol names expand to more than ${maxTotal >> 20} MiB (hostile or corrupt image?)`,
  );
}

function grow(out: Uint8Array, used: number, maxTotal: number): Uint8Array {
  const bigger = new Uint8Array(Math.min(out.length * 2, maxTotal));
  bigger.set(out.subarray(0, used));
  return bigger;
}
