import type { KernelImage } from "./kernel-image.js";

/**
 * KASLR slide from guest RAM while the decompressor runs, before the kernel executes anything.
 *
 * The decompressor writes the kernel twice: first the raw ELF file (its words equal the file's),
 * then the segments at their load address, where `handle_relocations()` adds the virtual slide to
 * every absolute kernel pointer. So at each place linux_banner appears in RAM, the .data words
 * that are pointers into the image in the file either still equal the file (not yet relocated,
 * or the raw copy) or differ by one common value: the slide. Relocation only ever adds that one
 * delta, so a clear majority of equal non-zero differences cannot happen by accident.
 */
export interface SlideEvidence {
  /** The slide, once a relocated copy is seen. */
  readonly slide: bigint | undefined;
  /** Guest-physical addresses where the banner was found. */
  readonly bannerAt: readonly bigint[];
  /** Pointer words compared and how many agreed on the slide. */
  readonly compared: number;
  readonly agreeing: number;
}

/** KASLR moves the kernel in CONFIG_PHYSICAL_ALIGN (2 MiB) steps inside a 1 GiB window. */
export const SLIDE_ALIGN = 0x200000n;
const MAX_SLIDE = 1n << 30n;

export function plausibleSlide(slide: bigint): boolean {
  return slide > 0n && slide < MAX_SLIDE && slide % SLIDE_ALIGN === 0n;
}
/** Pointer words sampled from .data: plenty to out-vote any coincidence, cheap to read. */
export const SAMPLE_BYTES = 256 * 1024;
const MIN_POINTERS = 32;

/** Byte offsets where `needle` occurs in `hay` (at most `max`). */
export function findAll(hay: Uint8Array, needle: Uint8Array, max = 16): number[] {
  const h = Buffer.from(hay.buffer, hay.byteOffset, hay.byteLength);
  const out: number[] = [];
  for (let at = h.indexOf(needle); at >= 0 && out.length < max; at = h.indexOf(needle, at + 1)) out.push(at);
  return out;
}

/**
 * Compares one candidate copy's .data sample (as read from RAM) with the file's. Returns the
 * dominant non-zero difference among words that are image pointers in the file, if it is a
 * plausible slide and most such words agree on it.
 */
export function slideFromData(
  k: Pick<KernelImage, "data" | "base" | "image">,
  ram: Uint8Array,
): { slide: bigint | undefined; compared: number; agreeing: number } {
  const file = k.data.bytes;
  const n = Math.min(file.length, ram.length) & ~7;
  const fv = new DataView(file.buffer, file.byteOffset, n);
  const rv = new DataView(ram.buffer, ram.byteOffset, n);
  const end = k.base + BigInt(k.image.length);
  const votes = new Map<bigint, number>();
  let compared = 0;
  for (let i = 0; i < n; i += 8) {
    const f = fv.getBigUint64(i, true);
    if (f < k.base || f >= end) continue;
    compared++;
    const d = BigInt.asUintN(64, rv.getBigUint64(i, true) - f);
    votes.set(d, (votes.get(d) ?? 0) + 1);
  }
  let best = 0n;
  let agreeing = 0;
  for (const [d, c] of votes) {
    if (c > agreeing) {
      best = d;
      agreeing = c;
    }
  }
  const plausible = plausibleSlide(best);
  const decisive = compared >= MIN_POINTERS && agreeing * 2 > compared;
  return { slide: plausible && decisive ? best : undefined, compared, agreeing };
}

/** Where the file's .data sample sits in RAM for a copy whose banner is at `bannerPhys`. */
export function dataPhysFor(k: KernelImage, bannerPhys: bigint): bigint {
  return bannerPhys - (k.bannerAddr - k.base) + (k.data.addr - k.base);
}

/** /proc/<pid>/pagemap: one u64 per page; bit 63 present, bit 62 swapped. */
const PM_PRESENT = 1n << 63n;
const PM_SWAPPED = 1n << 62n;

/**
 * Runs of resident pages, from the pagemap entries of a RAM region that starts at guest-physical
 * `start`: [start, start+size) pairs. The decompressed kernel can only be in pages the guest has
 * written, and reading only those keeps the poll from touching (and zero-filling) the rest of RAM.
 */
export function residentRuns(
  pagemap: Uint8Array,
  start: bigint,
  pageSize = 4096,
): { start: bigint; size: number }[] {
  const view = new DataView(pagemap.buffer, pagemap.byteOffset, pagemap.byteLength & ~7);
  const out: { start: bigint; size: number }[] = [];
  let run: { start: bigint; size: number } | undefined;
  for (let i = 0; i < view.byteLength / 8; i++) {
    const e = view.getBigUint64(i * 8, true);
    if ((e & (PM_PRESENT | PM_SWAPPED)) !== 0n) {
      if (run) run.size += pageSize;
      else {
        run = { start: start + BigInt(i * pageSize), size: pageSize };
        out.push(run);
      }
    } else run = undefined;
  }
  return out;
}
