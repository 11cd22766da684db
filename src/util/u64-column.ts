/**
 * Whole-column operations on BigUint64Arrays done in 32-bit halves: reading an element of a
 * BigUint64Array makes a BigInt, so a loop over a kernel's 100,000 symbol addresses costs
 * milliseconds that a loop over numbers does not. The halves are read in the host's byte order.
 */
import { endianness } from "node:os";

const LITTLE = endianness() === "LE";
const LO = LITTLE ? 0 : 1;
const HI = LITTLE ? 1 : 0;

function halves(column: BigUint64Array): Uint32Array {
  return new Uint32Array(column.buffer, column.byteOffset, column.length * 2);
}

/** Each element in ascending (non-decreasing) order. */
export function isAscending(column: BigUint64Array): boolean {
  const w = halves(column);
  for (let i = 2; i < w.length; i += 2) {
    const prevHi = w[i - 2 + HI]!;
    const hi = w[i + HI]!;
    if (prevHi > hi || (prevHi === hi && w[i - 2 + LO]! > w[i + LO]!)) return false;
  }
  return true;
}

/** Adds `delta` modulo 2^64 to every element `keep(i)` does not exclude, in place. */
export function addToEach(column: BigUint64Array, delta: bigint, keep: (i: number) => boolean): void {
  const d = BigInt.asUintN(64, delta);
  const dLo = Number(d & 0xffff_ffffn);
  const dHi = Number(d >> 32n);
  const w = halves(column);
  for (let i = 0; i < column.length; i++) {
    if (!keep(i)) continue;
    const lo = w[2 * i + LO]! + dLo;
    w[2 * i + LO] = lo >>> 0;
    w[2 * i + HI] = (w[2 * i + HI]! + dHi + (lo > 0xffff_ffff ? 1 : 0)) >>> 0;
  }
}
