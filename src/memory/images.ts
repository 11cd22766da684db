import { closeSync, fstatSync, openSync, readSync, writeSync } from "node:fs";
import { type PhysAddr, hex, pa } from "../util/address.js";
import { GuestDataError, VmsightError } from "../util/errors.js";
import { FdPhysicalMemory, type FdRegion, mapFileRegions } from "./fd-memory.js";
import type { PhysRange, PhysicalMemory } from "./types.js";

/**
 * Memory images other than QEMU's ELF: LiME (the Linux Memory Extractor's format: a 32-byte
 * header before each range of RAM) and raw (guest-physical address = file offset, holes zero).
 * Neither records vCPU registers.
 */
export const LIME_MAGIC = 0x4c694d45;
export const LIME_HEADER = 32;
const LIME_VERSION = 1;
const MAX_LIME_RANGES = 1 << 16;

export interface ImageRange {
  readonly start: PhysAddr;
  readonly size: bigint;
  /** Where the range's bytes start in the file. */
  readonly offset: bigint;
}

export function isLime(head: Buffer): boolean {
  return head.length >= 4 && head.readUInt32LE(0) === LIME_MAGIC;
}

/**
 * The ranges of a LiME file of `size` bytes, read through `readAt`: each header (magic, version
 * 1, start, inclusive end, reserved) is followed by end - start + 1 bytes. Ranges must ascend
 * without overlapping and fit the file; anything else is a GuestDataError.
 */
export function parseLime(readAt: (offset: number, length: number) => Buffer, size: number): ImageRange[] {
  const out: ImageRange[] = [];
  let offset = 0;
  let lastEnd = -1n;
  while (offset < size) {
    if (out.length >= MAX_LIME_RANGES) throw new GuestDataError(`more than ${MAX_LIME_RANGES} LiME ranges`);
    if (offset + LIME_HEADER > size)
      throw new GuestDataError(`a LiME header at offset ${offset} runs past the end of the file`);
    const h = readAt(offset, LIME_HEADER);
    const magic = h.readUInt32LE(0);
    if (magic !== LIME_MAGIC)
      throw new GuestDataError(`no LiME magic at offset ${offset} (found 0x${magic.toString(16)})`);
    const version = h.readUInt32LE(4);
    if (version !== LIME_VERSION)
      throw new GuestDataError(`LiME version ${version} at offset ${offset}, not 1`);
    const start = h.readBigUInt64LE(8);
    const end = h.readBigUInt64LE(16);
    if (end < start) throw new GuestDataError(`LiME range ${hex(start)}-${hex(end)} ends before it starts`);
    if (start <= lastEnd)
      throw new GuestDataError(`LiME range at ${hex(start)} overlaps or precedes the one before`);
    const length = end - start + 1n;
    const dataAt = BigInt(offset + LIME_HEADER);
    if (dataAt + length > BigInt(size))
      throw new GuestDataError(`LiME range ${hex(start)}-${hex(end)} runs past the end of the file`);
    out.push({ start: pa(start), size: length, offset: dataAt });
    offset = Number(dataAt + length);
    lastEnd = end;
  }
  if (out.length === 0) throw new GuestDataError("the LiME file holds no ranges");
  return out;
}

/** Guest-physical memory served by an image file's ranges (read-only). */
export function imageMemory(
  description: string,
  fd: number,
  ranges: readonly ImageRange[],
): FdPhysicalMemory {
  const regions: FdRegion[] = ranges.map((r) => ({
    start: r.start,
    size: r.size,
    name: description,
    writable: false,
    fd,
    fdOffset: r.offset,
  }));
  return new FdPhysicalMemory(description, mapFileRegions(regions));
}

/** Opens a LiME file: its memory, or one VmsightError saying what is wrong with the file. */
export function openLime(path: string): FdPhysicalMemory {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const readAt = (offset: number, length: number) => {
      const b = Buffer.alloc(length);
      if (readSync(fd, b, 0, length, offset) !== length)
        throw new GuestDataError(`short read at offset ${offset}`);
      return b;
    };
    return imageMemory(`LiME ${path}`, fd, parseLime(readAt, size));
  } catch (error) {
    closeSync(fd);
    if (error instanceof GuestDataError)
      throw new VmsightError("E_DUMP", `${path}: ${error.message}`, {
        hint: "the file is truncated or not a LiME image; `vmsight dump --format lime` writes one",
        cause: error,
      });
    throw error;
  }
}

/**
 * Opens a raw image: the file is guest-physical memory from address 0, or, when `ranges` say
 * where RAM was (vmsight's sidecar), only those ranges (the zero-filled holes then fault as
 * they did in the guest).
 */
export function openRaw(path: string, ranges?: readonly PhysRange[]): FdPhysicalMemory {
  const fd = openSync(path, "r");
  const size = BigInt(fstatSync(fd).size);
  const wanted = ranges ?? [{ start: pa(0n), size }];
  const inFile = wanted
    .filter((r) => r.start < size)
    .map((r) => ({
      start: r.start,
      size: r.start + r.size > size ? size - r.start : r.size,
      offset: r.start,
    }));
  if (inFile.length === 0 || size === 0n) {
    closeSync(fd);
    throw new VmsightError("E_DUMP", `${path} is empty or shorter than the RAM it should hold`);
  }
  return imageMemory(`raw ${path}`, fd, inFile);
}

// ---- writers ---------------------------------------------------------------------------------

const CHUNK = 4 << 20;

/** Told the bytes of guest RAM copied so far, and the total to copy. */
export type WriteProgress = (done: bigint, total: bigint) => void;

/** Copies every range of `mem` into `fd` at `offsetOf(range)`, reporting progress per chunk. */
function copyRanges(
  mem: PhysicalMemory,
  fd: number,
  ranges: readonly PhysRange[],
  before: (r: PhysRange, fileOffset: number) => number,
  progress: WriteProgress,
): void {
  const total = ranges.reduce((s, r) => s + r.size, 0n);
  const buf = Buffer.allocUnsafe(CHUNK);
  let done = 0n;
  let fileOffset = 0;
  for (const r of ranges) {
    fileOffset = before(r, fileOffset);
    for (let at = 0n; at < r.size; ) {
      const n = Number(r.size - at < BigInt(CHUNK) ? r.size - at : BigInt(CHUNK));
      const view = buf.subarray(0, n);
      mem.readInto(pa(r.start + at), view);
      writeAll(fd, view, fileOffset);
      fileOffset += n;
      at += BigInt(n);
      done += BigInt(n);
      progress(done, total);
    }
  }
}

function writeAll(fd: number, data: Uint8Array, at: number): void {
  for (let put = 0; put < data.length; ) put += writeSync(fd, data, put, data.length - put, at + put);
}

/**
 * RAM ranges in address order: the writable ones, and read-only ones that adjoin them (shadowed
 * ROM inside low RAM). A lone read-only range (the firmware ROM under 4 GiB) is not RAM and
 * would make a raw image span the whole 32-bit space.
 */
export function ramRanges(mem: PhysicalMemory): PhysRange[] {
  const all = [...mem.ranges()].sort((a, b) => (a.start < b.start ? -1 : 1));
  const touches = (a: PhysRange, b: PhysRange) =>
    a.start + a.size === b.start || b.start + b.size === a.start;
  return all.filter((r) => r.writable || all.some((o) => o.writable && touches(r, o)));
}

/** A LiME image of `mem` at `path`: one header and the bytes for each RAM range. */
export function writeLime(mem: PhysicalMemory, path: string, progress: WriteProgress = () => {}): void {
  const fd = openSync(path, "w");
  try {
    copyRanges(
      mem,
      fd,
      ramRanges(mem),
      (r, at) => {
        const h = Buffer.alloc(LIME_HEADER);
        h.writeUInt32LE(LIME_MAGIC, 0);
        h.writeUInt32LE(LIME_VERSION, 4);
        h.writeBigUInt64LE(r.start, 8);
        h.writeBigUInt64LE(r.start + r.size - 1n, 16);
        writeAll(fd, h, at);
        return at + LIME_HEADER;
      },
      progress,
    );
  } finally {
    closeSync(fd);
  }
}

/** A raw image of `mem` at `path`: file offset = guest-physical address, holes left as zeros. */
export function writeRaw(mem: PhysicalMemory, path: string, progress: WriteProgress = () => {}): void {
  const fd = openSync(path, "w");
  try {
    // A hole is never written: the file system leaves it sparse, and it reads as zeros.
    copyRanges(mem, fd, ramRanges(mem), (r) => Number(r.start), progress);
  } finally {
    closeSync(fd);
  }
}
