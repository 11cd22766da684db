import { type PhysAddr, pa } from "../../util/address.js";

/**
 * x86 page-table formats as data (the memflow habit): the walker in walk.ts knows nothing about
 * 4-level vs PAE, it only follows these tables. Bit positions are from the Intel SDM vol. 3A,
 * chapter 4 ("Paging").
 */

/** What a set PS bit means at a level. */
export type LeafRule =
  /** The last level: every present entry maps a page. */
  | "always"
  /** PS (bit 7) set makes the entry map a large page, clear makes it point at the next table. */
  | "ps"
  /** PS must be 0; a set PS bit is a reserved-bit fault (e.g. PML4E, PML5E). */
  | "ps-reserved"
  /** PS is ignored (32-bit paging with CR4.PSE clear). */
  | "ps-ignored";

export interface PagingLevel {
  /** Entry name used in fault messages ("PDE not present"). */
  readonly name: string;
  /** Lowest virtual-address bit indexed by this level; also log2 of the page a leaf here maps. */
  readonly shift: number;
  /** Width of the index (9 for 64-bit tables, 10 for 32-bit, 2 for the PAE PDPT). */
  readonly bits: number;
  readonly leaf: LeafRule;
  /** False where R/W, U/S and XD are reserved rather than meaningful (PAE PDPTEs). */
  readonly permissions: boolean;
  /**
   * PSE-36: a 4 MiB PDE carries physical bits 39:32 in entry bits 20:13. `from` is the first
   * entry bit, `width` the count, `to` the physical bit they land on.
   */
  readonly leafHighBits?: { readonly from: number; readonly width: number; readonly to: number };
}

export interface PagingFlags {
  readonly present: bigint;
  readonly writable: bigint;
  readonly user: bigint;
  readonly pageSize: bigint;
  /** Execute-disable; undefined where the entry format has none (32-bit paging). */
  readonly nx: bigint | undefined;
}

export interface PagingFormat {
  /** Used as the FaultError layer, e.g. "x86-64 4-level". */
  readonly name: string;
  readonly entrySize: 4 | 8;
  /** Width of the virtual address space. */
  readonly vaBits: number;
  /** 64-bit modes: bits above vaBits-1 must copy bit vaBits-1. 32-bit modes: must be zero. */
  readonly signExtended: boolean;
  /** Top level first. */
  readonly levels: readonly PagingLevel[];
  /** Physical-address bits of a table entry (next table, or 4 KiB page). */
  readonly addrMask: bigint;
  /** Physical-address bits of CR3 (PAE's PDPT is only 32-byte aligned). */
  readonly rootMask: bigint;
  readonly flags: PagingFlags;
}

const bit = (n: number): bigint => 1n << BigInt(n);
/** Bits hi..lo inclusive. */
const bits = (hi: number, lo: number): bigint => ((1n << BigInt(hi - lo + 1)) - 1n) << BigInt(lo);

const FLAGS_64: PagingFlags = {
  present: bit(0),
  writable: bit(1),
  user: bit(2),
  pageSize: bit(7),
  nx: bit(63),
};

/** MAXPHYADDR is at most 52; bits 62:52 are ignored or protection keys, 63 is XD. */
const ADDR_64 = bits(51, 12);

const level = (name: string, shift: number, leaf: LeafRule, nbits = 9): PagingLevel => ({
  name,
  shift,
  bits: nbits,
  leaf,
  permissions: true,
});

export const X86_64_4LEVEL: PagingFormat = {
  name: "x86-64 4-level",
  entrySize: 8,
  vaBits: 48,
  signExtended: true,
  levels: [
    level("PML4E", 39, "ps-reserved"),
    level("PDPTE", 30, "ps"),
    level("PDE", 21, "ps"),
    level("PTE", 12, "always"),
  ],
  addrMask: ADDR_64,
  rootMask: ADDR_64,
  flags: FLAGS_64,
};

export const X86_64_5LEVEL: PagingFormat = {
  ...X86_64_4LEVEL,
  name: "x86-64 5-level",
  vaBits: 57,
  levels: [level("PML5E", 48, "ps-reserved"), ...X86_64_4LEVEL.levels],
};

export const X86_PAE: PagingFormat = {
  name: "x86 PAE",
  entrySize: 8,
  vaBits: 32,
  signExtended: false,
  levels: [
    // PDPTEs are loaded into registers at MOV CR3 and carry no access rights.
    { name: "PDPTE", shift: 30, bits: 2, leaf: "ps-reserved", permissions: false },
    level("PDE", 21, "ps"),
    level("PTE", 12, "always"),
  ],
  addrMask: ADDR_64,
  rootMask: bits(31, 5),
  flags: FLAGS_64,
};

export const X86_32: PagingFormat = {
  name: "x86 32-bit",
  entrySize: 4,
  vaBits: 32,
  signExtended: false,
  levels: [
    { ...level("PDE", 22, "ps", 10), leafHighBits: { from: 13, width: 8, to: 32 } },
    level("PTE", 12, "always", 10),
  ],
  addrMask: bits(31, 12),
  rootMask: bits(31, 12),
  flags: { ...FLAGS_64, nx: undefined },
};

/** 32-bit paging with CR4.PSE clear: the PDE's PS bit is ignored, so there are no 4 MiB pages. */
export const X86_32_NO_PSE: PagingFormat = {
  ...X86_32,
  name: "x86 32-bit (no PSE)",
  levels: [{ ...level("PDE", 22, "ps-ignored", 10) }, level("PTE", 12, "always", 10)],
};

export const PAGING_FORMATS: readonly PagingFormat[] = [X86_64_4LEVEL, X86_64_5LEVEL, X86_PAE, X86_32];

const CR0_PG = bit(31);
const CR4_PSE = bit(4);
const CR4_PAE = bit(5);
const CR4_LA57 = bit(12);
const EFER_LMA = bit(10);

export interface ControlRegisters {
  readonly cr0: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
}

/**
 * The format the CPU is using. undefined means paging is off: virtual equals physical (use
 * `AddressSpace.identity`).
 */
export function formatFromControlRegisters(regs: ControlRegisters): PagingFormat | undefined {
  if ((regs.cr0 & CR0_PG) === 0n) return undefined;
  if ((regs.efer & EFER_LMA) !== 0n) return (regs.cr4 & CR4_LA57) !== 0n ? X86_64_5LEVEL : X86_64_4LEVEL;
  if ((regs.cr4 & CR4_PAE) !== 0n) return X86_PAE;
  return (regs.cr4 & CR4_PSE) !== 0n ? X86_32 : X86_32_NO_PSE;
}

const CR3_PCID = bits(11, 0);
const CR3_NOFLUSH = bit(63);
/** With KPTI the user PGD is the kernel PGD + 4 KiB (Linux allocates them as an 8 KiB pair). */
export const CR3_KPTI_USER = bit(12);
const CR4_PCIDE = bit(17);

export interface RootOptions {
  /** CR4.PCIDE (bit 17): CR3 bits 11:0 are a PCID rather than PWT/PCD. */
  readonly pcide: boolean;
  readonly format: PagingFormat;
  /** Clear bit 12 to reach the kernel half of a KPTI PGD pair from a user-mode CR3. */
  readonly kptiKernel?: boolean;
}

/** The physical address of the top-level table that a CR3 value selects. */
export function rootFromCr3(cr3: bigint, opts: RootOptions): PhysAddr {
  let v = BigInt.asUintN(64, cr3) & ~CR3_NOFLUSH;
  if (opts.pcide) v &= ~CR3_PCID;
  if (opts.kptiKernel) v &= ~CR3_KPTI_USER;
  return pa(v & opts.format.rootMask);
}

/** `rootFromCr3` with PCID handling taken from the CPU's own CR4, as every live caller wants. */
export function rootFromRegisters(
  regs: { readonly cr3: bigint; readonly cr4: bigint },
  format: PagingFormat,
  kptiKernel = false,
): PhysAddr {
  return rootFromCr3(regs.cr3, { pcide: (regs.cr4 & CR4_PCIDE) !== 0n, format, kptiKernel });
}
