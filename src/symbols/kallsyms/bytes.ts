/**
 * Bounded little-endian reads over an image whose byte 0 sits at virtual address `base`.
 * Reads past either end return undefined so the scanners can reject a candidate instead of
 * throwing a RangeError.
 */
export class ImageReader {
  readonly bytes: Uint8Array;
  readonly base: bigint;
  readonly length: number;
  private readonly view: DataView;
  private readonly baseMod8: number;

  constructor(bytes: Uint8Array, base: bigint) {
    this.bytes = bytes;
    this.base = base;
    this.length = bytes.length;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.baseMod8 = Number(BigInt.asUintN(64, base) % 8n);
  }

  u16(off: number): number | undefined {
    return off >= 0 && off + 2 <= this.length ? this.view.getUint16(off, true) : undefined;
  }
  u32(off: number): number | undefined {
    return off >= 0 && off + 4 <= this.length ? this.view.getUint32(off, true) : undefined;
  }
  i32(off: number): number | undefined {
    return off >= 0 && off + 4 <= this.length ? this.view.getInt32(off, true) : undefined;
  }
  u64(off: number): bigint | undefined {
    return off >= 0 && off + 8 <= this.length ? this.view.getBigUint64(off, true) : undefined;
  }

  /** Unchecked: the caller has bounded `off` already (hot loops). */
  i32At(off: number): number {
    return this.view.getInt32(off, true);
  }
  u64At(off: number): bigint {
    return this.view.getBigUint64(off, true);
  }

  /** The table generator aligns every label to 8 bytes of *virtual address*, not of image offset. */
  alignUp8(off: number): number {
    return off + ((8 - this.mod8(off)) % 8);
  }
  alignDown8(off: number): number {
    return off - this.mod8(off);
  }
  private mod8(off: number): number {
    return (((this.baseMod8 + off) % 8) + 8) % 8;
  }

  va(off: number): bigint {
    return BigInt.asUintN(64, this.base + BigInt(off));
  }
}
