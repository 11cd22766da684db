/**
 * Guest strings (comm, command lines, environments, paths, module names) are bytes: the kernel
 * promises no encoding, truncates comm in the middle of a character, and a process may name
 * itself anything but NUL. vmsight shows them as the guest's own `ps` shows them in a UTF-8
 * terminal, made unambiguous and safe to print:
 *
 *   - a well-formed UTF-8 sequence of a printable character is that character;
 *   - a backslash is `\\`, so that every backslash in the output starts an escape;
 *   - every other byte is `\xNN` (two lower-case hex digits): bytes that are not part of a
 *     well-formed UTF-8 sequence, and the control characters C0 (0x00–0x1f), DEL (0x7f) and C1
 *     (U+0080–U+009F, escaped byte by byte), which would otherwise move a terminal's cursor.
 *
 * Text and JSON output use the same string. It maps back to exactly the guest's bytes: `\\` is a
 * backslash, `\xNN` the byte NN, and any other character its UTF-8 encoding.
 */
export function decodeGuestBytes(bytes: Uint8Array): string {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (plainAscii(b)) return b.toString("latin1");
  let out = "";
  let clean = 0;
  for (let i = 0; i < b.length; ) {
    const n = sequenceLength(b, i);
    if (n > 0 && printable(b, i)) {
      i += n;
      continue;
    }
    out += b.toString("utf8", clean, i);
    out += b[i] === 0x5c ? "\\\\" : escapeByte(b[i]!);
    i += 1;
    clean = i;
  }
  return out + b.toString("utf8", clean);
}

/**
 * Printable ASCII and no backslash, the bytes of nearly every name and command line: the string
 * is the bytes. One plain loop, where the general one calls two functions a byte (a listing's
 * first run, before the JIT has compiled them, spent ~7 ms there for 1,000 processes).
 */
function plainAscii(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!;
    if (c < 0x20 || c > 0x7e || c === 0x5c) return false;
  }
  return true;
}

function escapeByte(byte: number): string {
  return `\\x${byte.toString(16).padStart(2, "0")}`;
}

/** Not a backslash and not a control character (C0, DEL, or C1 as its two UTF-8 bytes). */
function printable(b: Buffer, i: number): boolean {
  const c = b[i]!;
  if (c < 0x20 || c === 0x7f || c === 0x5c) return false;
  return !(c === 0xc2 && b[i + 1]! < 0xa0);
}

/**
 * The length of the well-formed UTF-8 sequence starting at `i` (Unicode table 3-7: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or 0 when there is none.
 */
function sequenceLength(b: Buffer, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  let n: number;
  let lo = 0x80;
  let hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    if (c === 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    if (c === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + n > b.length) return 0;
  const second = b[i + 1]!;
  if (second < lo || second > hi) return 0;
  for (let k = 2; k < n; k++) {
    const cont = b[i + k]!;
    if (cont < 0x80 || cont > 0xbf) return 0;
  }
  return n;
}

/** Splits at NUL bytes and decodes each piece; a final NUL ends the last piece rather than starting one. */
export function decodeGuestStrings(bytes: Uint8Array): string[] {
  if (bytes.length === 0) return [];
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i === bytes.length || bytes[i] === 0) {
      if (i < bytes.length || start < bytes.length) out.push(decodeGuestBytes(bytes.subarray(start, i)));
      start = i + 1;
    }
  }
  return out;
}
