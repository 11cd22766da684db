/**
 * How rows leave the process: the CLI's --json, the library and the server all use this one
 * encoding, so a program sees the same keys and values whichever way it reaches vmsight.
 */

/** A 64-bit quantity (usually an address) as it leaves the process: JSON has no 64-bit integers. */
export type Hex = `0x${string}`;

/** `T` as it reads after toWire: bigints become "0x…" strings, everything else stays. */
export type Wire<T> = T extends bigint
  ? Hex
  : T extends readonly (infer U)[]
    ? Wire<U>[]
    : T extends object
      ? { -readonly [K in keyof T]: Wire<T[K]> }
      : T;

/** A negative one (phys_base can be) is "-0x…", as people write it and Python's int(s, 16) reads it. */
const bigintText = (v: bigint) => (v < 0n ? `-0x${(-v).toString(16)}` : `0x${v.toString(16)}`);
const bigintAsHex = (_key: string, v: unknown) => (typeof v === "bigint" ? bigintText(v) : v);

/** The JSON text of `value`, bigints as "0x…" strings. */
export function toJson(value: unknown): string {
  // Most rows hold no bigint: JSON.stringify alone serves them without calling back into
  // JavaScript for every value (the replacer cost ~10 ms for a first `ps` of 1,000 rows, twice).
  // It throws a TypeError at the first bigint, and the replacer then does the whole.
  try {
    return JSON.stringify(value);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
  }
  return JSON.stringify(value, bigintAsHex);
}

/**
 * `value` exactly as the JSON text decodes: keys whose value is undefined are gone, bigints are
 * "0x…" strings. Going through the text itself keeps the library's rows and --json identical.
 */
export function toWire<T>(value: T): Wire<T> {
  return JSON.parse(toJson(value)) as Wire<T>;
}

/** A value for people: a bigint as "0x…", or the "0x…" string a row already carries. */
export function hexText(v: bigint | string): string {
  return typeof v === "string" ? v : bigintText(v);
}
