/**
 * Instructions a breakpoint can be stepped over by moving RIP alone. Under TCG every
 * single-step stop costs a stop of its own (plus a re-translation), and removing and
 * re-inserting the breakpoint around it costs more; at kernel function entries the first
 * instruction is nearly always a NOP (the patched-out `call __fentry__`, a sealed ENDBR) or an
 * ENDBR64, which have no effect with CET off — so "executing" them is `rip += length`.
 */

const ENDBR64 = [0xf3, 0x0f, 0x1e, 0xfa];
const ENDBR32 = [0xf3, 0x0f, 0x1e, 0xfb];

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/** Length of the ModRM-addressed operand bytes after the ModRM byte at `at`, or undefined. */
function modrmTail(bytes: Uint8Array, at: number): number | undefined {
  const modrm = bytes[at];
  if (modrm === undefined) return undefined;
  const mod = modrm >> 6;
  const rm = modrm & 7;
  if (mod === 3) return 0;
  let len = 0;
  if (rm === 4) {
    const sib = bytes[at + 1];
    if (sib === undefined) return undefined;
    len += 1;
    if (mod === 0 && (sib & 7) === 5) len += 4;
  } else if (mod === 0 && rm === 5) {
    len += 4; // RIP-relative disp32: a NOP reads nothing through it
  }
  if (mod === 1) len += 1;
  if (mod === 2) len += 4;
  return len;
}

/**
 * Length of the instruction at the start of `bytes` if it is one with no architectural effect
 * besides advancing RIP (NOP, multi-byte `0f 1f /0` NOPs with operand-size prefixes, ENDBR),
 * else undefined. `bytes` must be the original text (not a software breakpoint's int3).
 */
export function skippableLength(bytes: Uint8Array): number | undefined {
  if (startsWith(bytes, ENDBR64) || startsWith(bytes, ENDBR32)) return 4;
  let i = 0;
  // Operand-size prefixes pad long NOPs (`66 66 2e 0f 1f 84 ...` also uses a CS override).
  while (i < 8 && (bytes[i] === 0x66 || bytes[i] === 0x2e)) i++;
  if (bytes[i] === 0x90) return bytes[0] === 0x2e ? undefined : i + 1; // 90, 66 90 (xchg ax,ax)
  if (bytes[i] !== 0x0f || bytes[i + 1] !== 0x1f) return undefined;
  const modrm = bytes[i + 2];
  if (modrm === undefined || ((modrm >> 3) & 7) !== 0) return undefined; // only /0 is NOP
  const tail = modrmTail(bytes, i + 2);
  if (tail === undefined) return undefined;
  const length = i + 3 + tail;
  return length <= 15 && length <= bytes.length ? length : undefined;
}

/**
 * Like skippableLength, and also a direct `call rel32` (at `address`) to one of `onlyReturn`,
 * functions that do nothing but return: a kernel built with ftrace starts each function with
 * `call __fentry__` until ftrace patches the call into a NOP early in boot, and __fentry__ is a
 * bare `ret` while nothing is traced. Passing over such a call leaves only the return address
 * it would have pushed unwritten below RSP.
 */
export function skippableAt(
  bytes: Uint8Array,
  address: bigint,
  onlyReturn: readonly bigint[],
): number | undefined {
  const n = skippableLength(bytes);
  if (n !== undefined || bytes[0] !== 0xe8 || bytes.length < 5) return n;
  const rel = new DataView(bytes.buffer, bytes.byteOffset, 5).getInt32(1, true);
  const target = BigInt.asUintN(64, address + 5n + BigInt(rel));
  return onlyReturn.includes(target) ? 5 : undefined;
}
