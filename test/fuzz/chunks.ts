/**
 * Cuts a stream into chunks at points derived from its bytes, so a stream decoder sees the
 * splits a socket could make, the same ones on every replay of the same input.
 */
export function chunks(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let x = bytes.length * 2654435761;
  for (let at = 0; at < bytes.length; ) {
    x = (Math.imul(x ^ bytes[at]!, 1103515245) + 12345) >>> 0;
    const n = 1 + (x % (x & 1 ? 7 : 300));
    out.push(bytes.subarray(at, at + n));
    at += n;
  }
  return out;
}
