import { type PhysicalMemory, type ReadRequest, readPacked } from "../../memory/types.js";
import { type PhysAddr, type VirtAddr, hex, pa } from "../../util/address.js";
import { FaultError } from "../../util/errors.js";
import type { PagingFormat, PagingLevel } from "./formats.js";

/** Where a virtual address lands and what the combined access rights of its walk are. */
export interface Translation {
  readonly phys: PhysAddr;
  /** Size of the page that maps the address (4096, 2 MiB, 4 MiB, 1 GiB). */
  readonly pageSize: number;
  /** Only if every level along the walk is writable. */
  readonly writable: boolean;
  /** Only if every level along the walk allows user mode. */
  readonly user: boolean;
  /** Unless any level along the walk sets XD/NX. */
  readonly executable: boolean;
  /** Intel's numbering of the level holding the leaf: 1 = PTE, 2 = PDE, 3 = PDPTE, 4 = PML4E. */
  readonly level: number;
}

interface Fault {
  readonly fault: string;
  readonly cause?: unknown;
}

/** Whether the address fits the format's virtual address space; a fault message if not. */
export function checkAddress(format: PagingFormat, addr: bigint): string | undefined {
  const { shift, ones } = canonicalBits(format);
  const high = addr >> shift;
  if (format.signExtended) return high === 0n || high === ones ? undefined : "non-canonical address";
  return high >> 1n === 0n ? undefined : `address beyond the ${format.vaBits}-bit virtual space`;
}

const canonical = new WeakMap<PagingFormat, { shift: bigint; ones: bigint }>();

/** checkAddress's constants, made once per format: every walk of a batch checks its address. */
function canonicalBits(format: PagingFormat): { shift: bigint; ones: bigint } {
  let bits = canonical.get(format);
  if (!bits) {
    bits = { shift: BigInt(format.vaBits - 1), ones: (1n << BigInt(65 - format.vaBits)) - 1n };
    canonical.set(format, bits);
  }
  return bits;
}

function readEntry(mem: PhysicalMemory, format: PagingFormat, at: bigint): bigint {
  const b = mem.peek ? mem.peek(pa(at), format.entrySize) : mem.read(pa(at), format.entrySize);
  return format.entrySize === 8 ? b.readBigUInt64LE(0) : BigInt(b.readUInt32LE(0));
}

/** Does a present entry at this level map a page rather than point at a table? */
export function isLeaf(format: PagingFormat, lvl: PagingLevel, entry: bigint): boolean | "reserved" {
  return leafRule(lvl, (entry & format.flags.pageSize) !== 0n);
}

/** isLeaf for a present entry whose PS bit is `ps`. */
function leafRule(lvl: PagingLevel, ps: boolean): boolean | "reserved" {
  if (lvl.leaf === "always") return true;
  if (!ps || lvl.leaf === "ps-ignored") return false;
  return lvl.leaf === "ps" ? true : "reserved";
}

/** Physical base of the page a leaf entry maps. */
export function leafBase(format: PagingFormat, lvl: PagingLevel, entry: bigint): bigint {
  // Large pages keep PAT in bit 12, so their base uses only the bits above the page offset.
  let base = entry & format.addrMask & ~((1n << BigInt(lvl.shift)) - 1n);
  const hi = lvl.leafHighBits;
  if (hi) base |= ((entry >> BigInt(hi.from)) & ((1n << BigInt(hi.width)) - 1n)) << BigInt(hi.to);
  return base;
}

/** BigInt constants of a level, computed once per format rather than on every step of every walk. */
interface Step {
  readonly lvl: PagingLevel;
  readonly shift: bigint;
  readonly indexMask: bigint;
  readonly offsetMask: bigint;
}

const compiled = new WeakMap<PagingFormat, readonly Step[]>();

function stepsOf(format: PagingFormat): readonly Step[] {
  let steps = compiled.get(format);
  if (!steps) {
    steps = format.levels.map((lvl) => ({
      lvl,
      shift: BigInt(lvl.shift),
      indexMask: (1n << BigInt(lvl.bits)) - 1n,
      offsetMask: (1n << BigInt(lvl.shift)) - 1n,
    }));
    compiled.set(format, steps);
  }
  return steps;
}

function walk(mem: PhysicalMemory, format: PagingFormat, root: bigint, addr: bigint): Translation | Fault {
  const bad = checkAddress(format, addr);
  if (bad) return { fault: bad };
  const { flags } = format;
  const steps = stepsOf(format);
  const entrySize = BigInt(format.entrySize);
  let table = root;
  let writable = true;
  let user = true;
  let executable = true;
  for (let i = 0; i < steps.length; i++) {
    const { lvl, shift, indexMask, offsetMask } = steps[i]!;
    const at = table + ((addr >> shift) & indexMask) * entrySize;
    let entry: bigint;
    try {
      entry = readEntry(mem, format, at);
    } catch (cause) {
      return { fault: `${lvl.name} at physical ${hex(at)} unreadable`, cause };
    }
    if ((entry & flags.present) === 0n) return { fault: `${lvl.name} not present` };
    if (lvl.permissions) {
      writable &&= (entry & flags.writable) !== 0n;
      user &&= (entry & flags.user) !== 0n;
      if (flags.nx !== undefined) executable &&= (entry & flags.nx) === 0n;
    }
    const leaf = isLeaf(format, lvl, entry);
    if (leaf === "reserved") return { fault: `${lvl.name} has the reserved PS bit set` };
    if (leaf) {
      const phys = pa(leafBase(format, lvl, entry) | (addr & offsetMask));
      return { phys, pageSize: 2 ** lvl.shift, writable, user, executable, level: steps.length - i };
    }
    table = entry & format.addrMask;
  }
  // Unreachable with a well-formed format: the last level is always a leaf.
  return { fault: "page walk ran past the last level" };
}

/** Translates a virtual address, or throws FaultError naming the level that stopped the walk. */
export function translate(
  mem: PhysicalMemory,
  format: PagingFormat,
  root: PhysAddr,
  addr: VirtAddr,
): Translation {
  const a = BigInt.asUintN(64, addr);
  const r = walk(mem, format, root, a);
  if ("fault" in r) throw new FaultError(format.name, a, r.fault, { cause: r.cause });
  return r;
}

/** Like `translate`, but undefined for an unmapped or malformed address. */
export function findTranslation(
  mem: PhysicalMemory,
  format: PagingFormat,
  root: PhysAddr,
  addr: VirtAddr,
): Translation | undefined {
  const r = walk(mem, format, root, BigInt.asUintN(64, addr));
  return "fault" in r ? undefined : r;
}

/** Where a walk of translateMany landed, and the bytes there (undefined when they could not be read). */
export interface Landed {
  readonly phys: PhysAddr;
  readonly bytes: Buffer | undefined;
}

/**
 * Translates many (root, addr) pairs one level at a time for all of them together, reading each
 * level's entries, then the `length` bytes each address lands on (cut at its page's end), as one
 * batch (PhysicalMemory.readPacked, then readMany: one native call on memory read by system
 * calls): a thousand processes' walks cost one batch per level instead of one read per entry.
 * Returns where each address lands with the bytes there, or undefined for a walk that faulted:
 * translating that address alone says why.
 * Table addresses and entries are numbers here (physical addresses stay below 2^52; an entry is
 * read as two 32-bit halves): a batch allocates no bigint per entry.
 */
export function translateMany(
  mem: PhysicalMemory,
  format: PagingFormat,
  walks: readonly { readonly root: bigint; readonly addr: bigint; readonly length: number }[],
): (Landed | undefined)[] {
  const landed: (PhysAddr | undefined)[] = new Array(walks.length).fill(undefined);
  const bits = entryBits(format);
  const lo = new Uint32Array(walks.length);
  const hi = new Uint32Array(walks.length);
  let live: { table: number; k: number }[] = [];
  walks.forEach((w, k) => {
    if (checkAddress(format, w.addr) !== undefined) return;
    lo[k] = Number(w.addr & 0xffffffffn);
    hi[k] = Number((w.addr >> 32n) & 0xffffffffn);
    live.push({ table: Number(w.root), k });
  });
  const leaves: ReadRequest[] = [];
  // Walks end at different levels (a large page ends one early): where each one's leaf read is.
  const leafOf = new Int32Array(walks.length);
  for (const step of stepsOf(format)) {
    const { lvl } = step;
    const size = format.entrySize;
    const addrs = new Float64Array(live.length);
    for (let i = 0; i < live.length; i++) {
      const { table, k } = live[i]!;
      addrs[i] = table + indexAt(lo[k]!, hi[k]!, lvl) * size;
    }
    const { out, ok } = readPacked(mem, addrs, size);
    const next: typeof live = [];
    for (let i = 0; i < live.length; i++) {
      if (ok[i] !== 1) continue;
      const k = live[i]!.k;
      const eLo = out.readUInt32LE(i * size);
      const eHi = size === 8 ? out.readUInt32LE(i * size + 4) : 0;
      if ((eLo & bits.present) === 0) continue;
      const leaf = leafRule(lvl, (eLo & bits.pageSize) !== 0);
      if (leaf === "reserved") continue;
      if (!leaf) {
        next.push({ table: (eHi & bits.addrHi) * 2 ** 32 + ((eLo & bits.addrLo) >>> 0), k });
        continue;
      }
      const w = walks[k]!;
      // A 4 KiB page's base is the entry's address bits as they are: no bigint for the usual case.
      landed[k] =
        lvl.shift === 12 && !lvl.leafHighBits
          ? pa(BigInt((eHi & bits.addrHi) * 2 ** 32 + ((eLo & bits.addrLo) >>> 0) + (lo[k]! & 0xfff)))
          : pa(leafBase(format, lvl, (BigInt(eHi) << 32n) | BigInt(eLo)) | (w.addr & step.offsetMask));
      leafOf[k] =
        leaves.push({ addr: landed[k]!, length: Math.min(w.length, 4096 - Number(w.addr & 0xfffn)) }) - 1;
    }
    live = next;
  }
  const got = mem.readMany(leaves);
  return landed.map((phys, k) => {
    if (phys === undefined) return undefined;
    const r = got[leafOf[k]!]!;
    return { phys, bytes: r.ok ? r.data : undefined };
  });
}

/** A format's entry bits as 32-bit numbers: the present and PS flags, and the table address. */
function entryBits(format: PagingFormat): {
  present: number;
  pageSize: number;
  addrLo: number;
  addrHi: number;
} {
  return {
    present: Number(format.flags.present),
    pageSize: Number(format.flags.pageSize),
    addrLo: Number(format.addrMask & 0xffffffffn),
    addrHi: Number((format.addrMask >> 32n) & 0xffffffffn),
  };
}

/** The level's table index: bits [shift, shift+bits) of the address given as two 32-bit halves. */
function indexAt(lo: number, hi: number, lvl: PagingLevel): number {
  const mask = (1 << lvl.bits) - 1;
  if (lvl.shift >= 32) return (hi >>> (lvl.shift - 32)) & mask;
  return ((lo >>> lvl.shift) | (lvl.shift === 0 ? 0 : hi << (32 - lvl.shift))) & mask;
}
