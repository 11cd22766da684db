import { type Elf64, PT_LOAD } from "../../util/elf.js";
import { GuestDataError } from "../../util/errors.js";

/** A kernel image is tens of MiB; anything past this is a broken or hostile header. */
const MAX_IMAGE_SPAN = 1 << 30;

/**
 * Lays a vmlinux's PT_LOAD segments out by virtual address, the way the kernel sits in memory
 * before relocation, so the same recovery code serves a file and a guest's RAM. The per-CPU
 * segment is linked at address 0 (its symbols are offsets into each CPU's area), so it is left
 * out; bytes past a segment's file size (.bss) and gaps between segments read as zero.
 */
export function layoutElfImage(elf: Elf64, bytes: Uint8Array): { image: Uint8Array; base: bigint } {
  const loads = elf.segments.filter((s) => s.type === PT_LOAD && s.vaddr !== 0n && s.memSize > 0);
  if (loads.length === 0) throw new GuestDataError("ELF: no PT_LOAD segment with a non-zero address");
  let base = loads[0]!.vaddr;
  let end = 0n;
  for (const s of loads) {
    if (s.vaddr < base) base = s.vaddr;
    const e = s.vaddr + BigInt(s.memSize);
    if (e > end) end = e;
  }
  if (end - base > BigInt(MAX_IMAGE_SPAN)) {
    throw new GuestDataError(`ELF: PT_LOAD segments span ${end - base} bytes, more than a kernel image`);
  }
  const image = new Uint8Array(Number(end - base));
  for (const s of loads) {
    if (s.fileSize > s.memSize) throw new GuestDataError("ELF: segment file size exceeds its memory size");
    if (s.offset < 0 || s.offset + s.fileSize > bytes.length) {
      throw new GuestDataError("ELF: segment lies past the end of the file");
    }
    image.set(bytes.subarray(s.offset, s.offset + s.fileSize), Number(s.vaddr - base));
  }
  return { image, base };
}
