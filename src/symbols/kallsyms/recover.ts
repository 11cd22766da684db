import { hex } from "../../util/address.js";
import { GuestDataError } from "../../util/errors.js";
import { ImageReader } from "./bytes.js";
import { buildNameIndex } from "./name-index.js";
import { Budget, type DecodedNames, decodeNames, walkNames } from "./names.js";
import { type SymbolArrays, SymbolTable } from "./table.js";
import { type TokenTables, findTokenTables } from "./tokens.js";

/**
 * Recovers the kernel's own symbol table (the kallsyms tables scripts/kallsyms.c links into
 * .rodata) from a raw image, with no System.map. The tables carry no header and no pointers to
 * each other, so they are found by shape:
 *
 *  1. kallsyms_token_table, anchored on its digit tokens, confirmed by kallsyms_token_index;
 *  2. walking back from it, the u32 kallsyms_num_syms whose kallsyms_names records end exactly
 *     where kallsyms_markers (one offset per 256 names, checked one by one) and, in kernels
 *     that put it there, kallsyms_seqs_of_names (3 bytes per symbol) end at the token table;
 *  3. the addresses, tried where each kernel generation puts them: kallsyms_offsets +
 *     kallsyms_relative_base before num_syms (≤ 6.1 order) or after token_index (6.12 order),
 *     or absolute kallsyms_addresses before num_syms (pre-BASE_RELATIVE kernels).
 *
 * Every label in the generated assembly is 8-byte aligned, which pins each step down.
 */

export interface KallsymsLayout {
  readonly numSyms: number;
  readonly numSymsAddr: bigint;
  readonly namesAddr: bigint;
  readonly markersAddr: bigint;
  readonly markerSize: 4 | 8;
  readonly seqsOfNamesAddr: bigint | undefined;
  readonly tokenTableAddr: bigint;
  readonly tokenIndexAddr: bigint;
  /**
   * "relative": relative_base + (u32)offset. "relative-absolute-percpu" (x86-64 SMP through
   * at least 6.12): offset ≥ 0 is an absolute per-CPU offset, offset < 0 means
   * relative_base − 1 − offset. "absolute": u64 addresses.
   */
  readonly addressing: "relative" | "relative-absolute-percpu" | "absolute";
  readonly offsetsAddr: bigint | undefined;
  readonly relativeBaseAddr: bigint | undefined;
  readonly relativeBase: bigint | undefined;
  readonly addressesAddr: bigint | undefined;
  /** The tables in address order, by their kernel names without the kallsyms_ prefix. */
  readonly order: readonly string[];
}

export interface RecoverOptions {
  /**
   * Added to per-CPU symbols stored as absolute offsets (ABSOLUTE_PERCPU): pass a CPU's
   * per-CPU area to get real addresses. Default 0: the offsets, as /proc/kallsyms shows them.
   */
  readonly percpuBase?: bigint;
  /** The parts of the image that were read ([from, to) offsets): the rest is not searched. */
  readonly within?: readonly (readonly [number, number])[];
}

export const MAX_SYMS = 2_000_000;
/** Enough for a few full walks of the largest plausible table plus the false starts. */
const WORK_BUDGET = 64 * MAX_SYMS;
/** num_syms … token_table: MAX_SYMS names of ~20 bytes, their markers and seqs fit well inside. */
const MAX_TABLES_SPAN = 64 << 20;
/** Real tables are fully sorted; tolerate a little disorder from odd toolchains. */
const MAX_DESCENT_FRACTION = 0.01;
/** Type letters are letters (T, t, D, A, ...); a handful of odd ones would be suspicious, many fatal. */
const MIN_LETTER_FRACTION = 0.99;

interface NamesFound {
  readonly numSymsAt: number;
  readonly n: number;
  readonly names: number;
  readonly markers: number;
  readonly markerSize: 4 | 8;
  readonly seqs: number | undefined;
}

interface AddressesFound {
  readonly addressing: KallsymsLayout["addressing"];
  readonly values: BigUint64Array;
  /** 1 where the value is a per-CPU offset rather than an address. */
  readonly absolute: Uint8Array;
  readonly offsets?: number;
  readonly relativeBaseAt?: number;
  readonly relativeBase?: bigint;
  readonly addresses?: number;
  readonly seqs?: number;
}

export function recoverKallsyms(
  image: Uint8Array,
  imageBase: bigint,
  opts: RecoverOptions = {},
): SymbolTable {
  return recoverKallsymsWithLayout(image, imageBase, opts).table;
}

export function locateKallsyms(image: Uint8Array, imageBase: bigint): KallsymsLayout {
  return recoverKallsymsWithLayout(image, imageBase).layout;
}

export function recoverKallsymsWithLayout(
  image: Uint8Array,
  imageBase: bigint,
  opts: RecoverOptions = {},
): { table: SymbolTable; layout: KallsymsLayout } {
  const r = new ImageReader(image, imageBase);
  const budget = new Budget(WORK_BUDGET);
  const misses: string[] = [];
  for (const tt of findTokenTables(r, opts.within)) {
    const found = fromTokenTable(r, tt, budget, opts);
    if (typeof found !== "string") return found;
    misses.push(found);
  }
  const why =
    misses.length > 0 ? `: ${misses.slice(0, 3).join("; ")}` : ": no kallsyms token table in the image";
  throw new GuestDataError(`kallsyms: no valid symbol table found${why}`);
}

/**
 * The tables that belong to one token table (found by findTokenTables on the same bytes), for
 * images holding several copies of the kernel, such as guest RAM while the decompressor runs.
 */
export function recoverKallsymsAt(
  image: Uint8Array,
  imageBase: bigint,
  tt: TokenTables,
  opts: RecoverOptions = {},
): { table: SymbolTable; layout: KallsymsLayout } {
  const r = new ImageReader(image, imageBase);
  const found = fromTokenTable(r, tt, new Budget(WORK_BUDGET), opts);
  if (typeof found === "string") throw new GuestDataError(`kallsyms: ${found}`);
  return found;
}

/** The symbol table anchored on `tt`, or why there is none. */
function fromTokenTable(
  r: ImageReader,
  tt: TokenTables,
  budget: Budget,
  opts: RecoverOptions,
): { table: SymbolTable; layout: KallsymsLayout } | string {
  const names = findNames(r, tt, budget);
  if (!names) return `token table at ${hex(r.va(tt.table))} has no num_syms/names/markers before it`;
  const decoded = decodeNames(r.bytes, names.names, names.n, tt.tokens);
  if (!decoded || letterFraction(decoded.types) < MIN_LETTER_FRACTION) {
    return `names before ${hex(r.va(tt.table))} do not decode to typed symbol names`;
  }
  const addrs = findAddresses(r, tt, names);
  if (!addrs) return `no address table fits the ${names.n} names at ${hex(r.va(names.names))}`;
  const table = SymbolTable.fromArrays(symbolArrays(decoded, addrs, opts.percpuBase ?? 0n));
  return { table, layout: describe(r, tt, names, addrs) };
}

/**
 * The decoded columns as they are, with no object per symbol: the table and the kernel cache
 * keep them so (an object, a BigInt and a string for each of ~10^5 symbols cost tens of MB).
 */
function symbolArrays(decoded: DecodedNames, addrs: AddressesFound, percpuBase: bigint): SymbolArrays {
  const { values, absolute } = addrs;
  if (percpuBase !== 0n) {
    for (let i = 0; i < values.length; i++) if (absolute[i] === 1) values[i] = values[i]! + percpuBase;
  }
  const { text, starts } = decoded;
  const byName = buildNameIndex(values.length, (i) => text.slice(starts[i]!, starts[i + 1]!));
  return {
    count: values.length,
    addresses: values,
    absolute,
    types: decoded.types,
    names: text,
    starts,
    byName,
  };
}

function letterFraction(types: Uint8Array): number {
  let letters = 0;
  for (const c of types) if ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) letters++;
  return types.length === 0 ? 0 : letters / types.length;
}

/** Walks back from the token table to the num_syms whose names and markers end right at it. */
function findNames(r: ImageReader, tt: TokenTables, budget: Budget): NamesFound | undefined {
  const stop = Math.max(0, tt.table - MAX_TABLES_SPAN);
  for (let at = r.alignDown8(tt.table - 8); at >= stop; at -= 8) {
    const n = r.u32(at)!;
    // num_syms is a 4-byte value padded to the 8-byte-aligned names label.
    if (n === 0 || n > MAX_SYMS || r.u32(at + 4) !== 0) continue;
    const names = at + 8;
    const end = walkNames(r.bytes, names, n, tt.table, budget);
    if (end < 0) continue;
    const found = matchMarkers(r, tt, at, names, end, n, budget);
    if (found) return found;
  }
  return undefined;
}

function matchMarkers(
  r: ImageReader,
  tt: TokenTables,
  numSymsAt: number,
  names: number,
  end: number,
  n: number,
  budget: Budget,
): NamesFound | undefined {
  const m = Math.ceil(n / 256);
  const markers = r.alignUp8(end);
  for (const markerSize of [4, 8] as const) {
    const after = r.alignUp8(markers + markerSize * m);
    let seqs: number | undefined;
    if (after === tt.table) seqs = undefined;
    else if (r.alignUp8(after + 3 * n) === tt.table) seqs = after;
    else continue;
    const marks = new Uint32Array(m);
    walkNames(r.bytes, names, n, end, budget, marks);
    let ok = true;
    for (let k = 0; k < m && ok; k++) {
      const v = markerSize === 4 ? r.u32(markers + 4 * k) : Number(r.u64(markers + 8 * k));
      ok = v === marks[k];
    }
    if (ok && (seqs === undefined || seqsValid(r, seqs, n))) {
      return { numSymsAt, n, names, markers, markerSize, seqs };
    }
  }
  return undefined;
}

/** kallsyms_seqs_of_names: n big-endian 3-byte symbol indexes (sorted by name). */
function seqsValid(r: ImageReader, at: number, n: number): boolean {
  if (at < 0 || at + 3 * n > r.length) return false;
  const b = r.bytes;
  for (let i = 0, p = at; i < n; i++, p += 3) {
    if (((b[p]! << 16) | (b[p + 1]! << 8) | b[p + 2]!) >= n) return false;
  }
  return true;
}

function findAddresses(r: ImageReader, tt: TokenTables, nf: NamesFound): AddressesFound | undefined {
  const n = nf.n;
  const before = () => {
    const relBase = nf.numSymsAt - 8;
    return relative(r, r.alignDown8(relBase - 4 * n), relBase, n);
  };
  const after = () => {
    const offsets = r.alignUp8(tt.index + 512);
    const relBase = r.alignUp8(offsets + 4 * n);
    const found = relative(r, offsets, relBase, n);
    const seqs = r.alignUp8(relBase + 8);
    return found && nf.seqs === undefined && seqsValid(r, seqs, n) ? { ...found, seqs } : found;
  };
  const absolute = () => absoluteAddresses(r, nf.numSymsAt - 8 * n, n);
  // Kernels with seqs_of_names in front of the token table keep the addresses first (6.1);
  // the others keep them after token_index (6.12) or first (5.x). Try the likely one first.
  const tries = nf.seqs !== undefined ? [before, after, absolute] : [after, before, absolute];
  for (const t of tries) {
    const found = t();
    if (found) return found;
  }
  return undefined;
}

function relative(r: ImageReader, offsets: number, relBaseAt: number, n: number): AddressesFound | undefined {
  const relativeBase = r.u64(relBaseAt);
  if (relativeBase === undefined || relativeBase === 0n || offsets < 0 || offsets + 4 * n > r.length) {
    return undefined;
  }
  let negatives = 0;
  for (let i = 0; i < n; i++) if (r.i32At(offsets + 4 * i) < 0) negatives++;
  // With ABSOLUTE_PERCPU every ordinary symbol is stored negated; without it, only a kernel
  // over 2 GiB could produce offsets with the top bit set.
  const percpu = negatives > n / 2;
  const values = new BigUint64Array(n);
  const absolute = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const off = r.i32At(offsets + 4 * i);
    if (!percpu) values[i] = BigInt.asUintN(64, relativeBase + BigInt(off >>> 0));
    else if (off >= 0) {
      values[i] = BigInt(off);
      absolute[i] = 1;
    } else values[i] = BigInt.asUintN(64, relativeBase - 1n - BigInt(off));
  }
  if (!mostlySorted(values)) return undefined;
  return {
    addressing: percpu ? "relative-absolute-percpu" : "relative",
    values,
    absolute,
    offsets,
    relativeBaseAt: relBaseAt,
    relativeBase,
  };
}

function absoluteAddresses(r: ImageReader, at: number, n: number): AddressesFound | undefined {
  if (at < 0 || at + 8 * n > r.length) return undefined;
  const values = new BigUint64Array(n);
  let high = 0;
  for (let i = 0; i < n; i++) {
    values[i] = r.u64At(at + 8 * i);
    if (values[i]! >= 1n << 63n) high++;
  }
  if (!mostlySorted(values)) return undefined;
  // In a kernel living in the top half, values below 4 GiB are per-CPU offsets.
  const absolute = new Uint8Array(n);
  if (high > n / 2) for (let i = 0; i < n; i++) if (values[i]! < 1n << 32n) absolute[i] = 1;
  return { addressing: "absolute", values, absolute, addresses: at };
}

function mostlySorted(values: BigUint64Array): boolean {
  let descents = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! < values[i - 1]!) descents++;
  return descents <= values.length * MAX_DESCENT_FRACTION && values[values.length - 1]! > values[0]!;
}

function describe(r: ImageReader, tt: TokenTables, nf: NamesFound, a: AddressesFound): KallsymsLayout {
  const opt = (off: number | undefined) => (off === undefined ? undefined : r.va(off));
  const seqs = nf.seqs ?? a.seqs;
  const tables: [string, number | undefined][] = [
    ["num_syms", nf.numSymsAt],
    ["names", nf.names],
    ["markers", nf.markers],
    ["seqs_of_names", seqs],
    ["token_table", tt.table],
    ["token_index", tt.index],
    ["offsets", a.offsets],
    ["relative_base", a.relativeBaseAt],
    ["addresses", a.addresses],
  ];
  const order = tables
    .filter((t): t is [string, number] => t[1] !== undefined)
    .sort((x, y) => x[1] - y[1])
    .map((t) => t[0]);
  return {
    numSyms: nf.n,
    numSymsAddr: r.va(nf.numSymsAt),
    namesAddr: r.va(nf.names),
    markersAddr: r.va(nf.markers),
    markerSize: nf.markerSize,
    seqsOfNamesAddr: opt(seqs),
    tokenTableAddr: r.va(tt.table),
    tokenIndexAddr: r.va(tt.index),
    addressing: a.addressing,
    offsetsAddr: opt(a.offsets),
    relativeBaseAddr: opt(a.relativeBaseAt),
    relativeBase: a.relativeBase,
    addressesAddr: opt(a.addresses),
    order,
  };
}

/**
 * Where the kallsyms tables lie, from the first to the end of the last, or undefined when the
 * last is one whose length the layout does not give (names, token_table: neither ends a table
 * set any kernel has built). A kept symbol table is trusted only while these bytes are the same.
 */
export function kallsymsSpan(layout: KallsymsLayout): { start: bigint; size: number } | undefined {
  const n = layout.numSyms;
  const tables: [bigint | undefined, number | undefined][] = [
    [layout.numSymsAddr, 4],
    [layout.namesAddr, undefined],
    [layout.markersAddr, ((n + 255) >> 8) * layout.markerSize],
    [layout.seqsOfNamesAddr, 3 * n],
    [layout.tokenTableAddr, undefined],
    [layout.tokenIndexAddr, 256 * 2],
    [layout.offsetsAddr, 4 * n],
    [layout.relativeBaseAddr, 8],
    [layout.addressesAddr, 8 * n],
  ];
  const present = tables.filter((t): t is [bigint, number | undefined] => t[0] !== undefined);
  const start = present.reduce((lo, [at]) => (at < lo ? at : lo), present[0]![0]);
  const [lastAt, lastSize] = present.reduce((hi, t) => (t[0] > hi[0] ? t : hi));
  if (lastSize === undefined) return undefined;
  return { start, size: Number(lastAt - start) + lastSize };
}
