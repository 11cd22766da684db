import type { PhysicalMemory } from "../../memory/types.js";
import { type PhysAddr, type VirtAddr, pa } from "../../util/address.js";
import type { PagingFormat } from "./formats.js";
import { isLeaf, leafBase } from "./walk.js";

/** A run of pages, contiguous both virtually and physically, with the same rights and page size. */
export interface Mapping {
  readonly start: VirtAddr;
  /** Exclusive; 2^64 for a run that ends at the top of the address space. */
  end: VirtAddr;
  readonly phys: PhysAddr;
  readonly writable: boolean;
  readonly user: boolean;
  readonly executable: boolean;
  readonly pageSize: number;
}

export interface EnumerateOptions {
  /** Inclusive lower bound (canonical virtual address). */
  readonly start?: VirtAddr;
  /** Exclusive upper bound; may be 2^64. */
  readonly end?: bigint;
  /** Present entries to visit before giving up (default 2^20); bounds time and memory. */
  readonly maxEntries?: number;
}

/** Mappings in ascending virtual order, plus how the walk went. */
export interface MappingList {
  readonly mappings: Mapping[];
  /** True if maxEntries was reached: `mappings` is a prefix of the real list. */
  readonly truncated: boolean;
  /** Present entries examined, at every level. */
  readonly entriesVisited: number;
  /** Tables whose physical page could not be read (skipped, as the CPU would fault there). */
  readonly unreadableTables: number;
}

export const DEFAULT_MAX_ENTRIES = 1 << 20;

interface Rights {
  readonly writable: boolean;
  readonly user: boolean;
  readonly executable: boolean;
}

interface Walk {
  readonly mem: PhysicalMemory;
  readonly format: PagingFormat;
  readonly start: bigint;
  readonly end: bigint;
  readonly maxEntries: number;
  readonly out: Mapping[];
  visited: number;
  unreadable: number;
  truncated: boolean;
}

/**
 * Every present leaf under `root`, merged into runs. Bounded by `maxEntries` so a table that
 * points at itself, or an enormous tree, ends with `truncated` set instead of hanging.
 */
export function enumerateMappings(
  mem: PhysicalMemory,
  format: PagingFormat,
  root: PhysAddr,
  opts: EnumerateOptions = {},
): MappingList {
  const w: Walk = {
    mem,
    format,
    start: opts.start ?? 0n,
    end: opts.end ?? (format.signExtended ? 1n << 64n : 1n << BigInt(format.vaBits)),
    maxEntries: Math.max(0, opts.maxEntries ?? DEFAULT_MAX_ENTRIES),
    out: [],
    visited: 0,
    unreadable: 0,
    truncated: false,
  };
  visitTable(w, 0, root, 0n, { writable: true, user: true, executable: true });
  return {
    mappings: w.out,
    truncated: w.truncated,
    entriesVisited: w.visited,
    unreadableTables: w.unreadable,
  };
}

/** Raw (unsigned, vaBits wide) virtual address to the canonical 64-bit one. */
function canonical(format: PagingFormat, raw: bigint): bigint {
  if (!format.signExtended) return raw;
  const sign = 1n << BigInt(format.vaBits - 1);
  return raw & sign ? raw + (1n << 64n) - (1n << BigInt(format.vaBits)) : raw;
}

function readTable(w: Walk, table: bigint, entries: number): Buffer | undefined {
  try {
    return w.mem.read(pa(table), entries * w.format.entrySize);
  } catch {
    w.unreadable++;
    return undefined;
  }
}

function visitTable(w: Walk, depth: number, table: bigint, rawBase: bigint, rights: Rights): void {
  const { format } = w;
  const lvl = format.levels[depth]!;
  const entries = 1 << lvl.bits;
  const buf = readTable(w, table, entries);
  if (!buf) return;
  const span = 1n << BigInt(lvl.shift);
  const wide = format.entrySize === 8;
  const present = Number(format.flags.present);
  for (let i = 0; i < entries; i++) {
    // Test the present bit on the low word first: most entries of a sparse table are empty.
    if ((buf.readUInt32LE(i * format.entrySize) & present) === 0) continue;
    const raw = rawBase + BigInt(i) * span;
    const start = canonical(format, raw);
    if (start + span <= w.start || start >= w.end) continue;
    if (w.visited >= w.maxEntries) {
      w.truncated = true;
      return;
    }
    w.visited++;
    const entry = wide ? buf.readBigUInt64LE(i * 8) : BigInt(buf.readUInt32LE(i * 4));
    const r = combine(format, lvl.permissions, rights, entry);
    const leaf = isLeaf(format, lvl, entry);
    if (leaf === "reserved") continue;
    if (leaf) emit(w, start, span, leafBase(format, lvl, entry), r);
    else visitTable(w, depth + 1, entry & format.addrMask, raw, r);
    if (w.truncated) return;
  }
}

function combine(format: PagingFormat, applies: boolean, r: Rights, entry: bigint): Rights {
  if (!applies) return r;
  const { flags } = format;
  return {
    writable: r.writable && (entry & flags.writable) !== 0n,
    user: r.user && (entry & flags.user) !== 0n,
    executable: r.executable && (flags.nx === undefined || (entry & flags.nx) === 0n),
  };
}

/** Adds one leaf, clipped to the requested range, merging it into the previous run if it can. */
function emit(w: Walk, start: bigint, span: bigint, phys: bigint, r: Rights): void {
  const lo = start < w.start ? w.start : start;
  const hi = start + span > w.end ? w.end : start + span;
  const p = phys + (lo - start);
  const last = w.out[w.out.length - 1];
  if (
    last &&
    last.end === lo &&
    last.phys + (last.end - last.start) === p &&
    last.pageSize === Number(span) &&
    last.writable === r.writable &&
    last.user === r.user &&
    last.executable === r.executable
  ) {
    last.end = hi as VirtAddr;
    return;
  }
  w.out.push({ start: lo as VirtAddr, end: hi as VirtAddr, phys: pa(p), ...r, pageSize: Number(span) });
}
