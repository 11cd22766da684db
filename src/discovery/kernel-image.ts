import { parseBanner } from "../os/linux/banner.js";
import { extractVmlinux } from "../os/linux/bzimage.js";
import { layoutElfImage } from "../symbols/kallsyms/elf-image.js";
import { recoverKallsyms } from "../symbols/kallsyms/recover.js";
import type { SymbolTable } from "../symbols/kallsyms/table.js";
import { type Elf64, parseElf64 } from "../util/elf.js";
import { GuestDataError, VmsightError } from "../util/errors.js";

/**
 * What boot-time discovery knows before the guest runs: the kernel's own symbol table at its
 * link-time (unrelocated) addresses, recovered from the kallsyms tables inside the image file, and
 * the bytes the slide detector compares guest RAM against. No System.map, no debug info.
 */
export interface KernelImage {
  readonly symbols: SymbolTable;
  /** The PT_LOAD segments laid out by virtual address, starting at `base`. */
  readonly image: Uint8Array;
  readonly base: bigint;
  /** linux_banner as the file holds it: found in RAM to locate the decompressed kernel. */
  readonly banner: Uint8Array;
  readonly bannerAddr: bigint;
  /** .data: its pointers are what relocation changes, by exactly the KASLR slide. */
  readonly data: { readonly addr: bigint; readonly bytes: Uint8Array };
}

const ELF_MAGIC = 0x7f454c46;
/** Enough of "Linux version <release> (<builder>) ..." to be unique in RAM. */
const BANNER_PROBE = 64;

/** Accepts a bzImage (decompressed on the host) or an already decompressed vmlinux ELF. */
export function kernelImageFromFile(bytes: Buffer): KernelImage {
  const elfBytes = bytes.length >= 4 && bytes.readUInt32BE(0) === ELF_MAGIC ? bytes : extractVmlinux(bytes);
  return kernelImageFromElf(parseElf64(elfBytes), elfBytes);
}

export function kernelImageFromElf(elf: Elf64, bytes: Uint8Array): KernelImage {
  const { image, base } = layoutElfImage(elf, bytes);
  const symbols = recoverKallsyms(image, base);
  const bannerAddr = symbols.findAddress("linux_banner");
  if (bannerAddr === undefined) throw new GuestDataError("kernel image: kallsyms has no linux_banner");
  const at = Number(bannerAddr - base);
  const banner = image.subarray(at, at + BANNER_PROBE);
  if (!parseBanner(Buffer.from(banner).toString("latin1"))) {
    throw new GuestDataError('kernel image: linux_banner does not start with "Linux version"');
  }
  const data = elf.section(".data");
  if (!data || data.addr < base || data.size === 0) {
    throw new VmsightError(
      "E_KERNEL_FORMAT",
      "kernel image: no .data section to compare relocations against",
    );
  }
  const from = Number(data.addr - base);
  return {
    symbols,
    image,
    base,
    banner,
    bannerAddr,
    data: { addr: data.addr, bytes: image.subarray(from, from + data.size) },
  };
}
