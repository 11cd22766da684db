import type { BufferPhysicalMemory } from "../../memory/buffer.js";
import { type PhysAddr, pa } from "../../util/address.js";
import { VmsightError } from "../../util/errors.js";

/**
 * Builds x86 page tables in a BufferPhysicalMemory, for tests here and in higher layers that
 * need guest-virtual memory. Its geometry and bit values are written out from the Intel SDM
 * independently of formats.ts, so walker tests compare against a second source of truth.
 */
export type BuilderMode = "4-level" | "5-level" | "pae" | "32-bit";

interface Geometry {
  readonly entry: 4 | 8;
  /** Virtual-address shift of each level, top first. */
  readonly shifts: readonly number[];
  /** Index width of each level, top first. */
  readonly widths: readonly number[];
}

const GEOMETRY: Record<BuilderMode, Geometry> = {
  "4-level": { entry: 8, shifts: [39, 30, 21, 12], widths: [9, 9, 9, 9] },
  "5-level": { entry: 8, shifts: [48, 39, 30, 21, 12], widths: [9, 9, 9, 9, 9] },
  pae: { entry: 8, shifts: [30, 21, 12], widths: [2, 9, 9] },
  "32-bit": { entry: 4, shifts: [22, 12], widths: [10, 10] },
};

export const PTE_P = 0x1n;
export const PTE_RW = 0x2n;
export const PTE_US = 0x4n;
export const PTE_PS = 0x80n;
export const PTE_NX = 1n << 63n;

export interface LeafFlags {
  /** Default true. */
  readonly writable?: boolean;
  /** Default false (a kernel page). */
  readonly user?: boolean;
  /** Default false. Ignored in 32-bit mode, which has no NX bit. */
  readonly nx?: boolean;
}

export interface BuilderOptions {
  /** Where table pages are allocated (default 0x100000). */
  readonly tableBase?: bigint;
  /** Table pages available (default 64). */
  readonly maxTables?: number;
}

export class PageTableBuilder {
  readonly mode: BuilderMode;
  readonly root: PhysAddr;
  private readonly mem: BufferPhysicalMemory;
  private readonly g: Geometry;
  private readonly tableBase: bigint;
  private readonly maxTables: number;
  private used = 0;

  constructor(mem: BufferPhysicalMemory, mode: BuilderMode, opts: BuilderOptions = {}) {
    this.mem = mem;
    this.mode = mode;
    this.g = GEOMETRY[mode];
    this.tableBase = opts.tableBase ?? 0x100000n;
    this.maxTables = opts.maxTables ?? 64;
    mem.map(this.tableBase, this.maxTables * 4096, "page tables");
    this.root = this.allocTable();
  }

  /** A fresh zeroed table page. */
  allocTable(): PhysAddr {
    if (this.used >= this.maxTables) throw new VmsightError("E_BUILDER", "page-table builder out of tables");
    return pa(this.tableBase + BigInt(this.used++) * 4096n);
  }

  /** Maps [va, va+pageSize) to pa with a page of exactly pageSize; intermediate levels are P|RW|US. */
  map(vaddr: bigint, paddr: bigint, pageSize: number, flags: LeafFlags = {}): void {
    const depth = this.g.shifts.findIndex((s) => 2 ** s === pageSize);
    if (depth < 0) throw new VmsightError("E_BUILDER", `no ${pageSize}-byte pages in ${this.mode}`);
    if ((vaddr | paddr) % BigInt(pageSize) !== 0n) {
      throw new VmsightError("E_BUILDER", `0x${vaddr.toString(16)} or 0x${paddr.toString(16)} is misaligned`);
    }
    let table = this.root as bigint;
    for (let d = 0; d < depth; d++) {
      const at = this.slot(table, vaddr, d);
      let e = this.read(at);
      if ((e & PTE_P) === 0n) {
        // PAE PDPTEs have no RW/US bits (they are reserved there).
        e = this.allocTable() | (this.mode === "pae" && d === 0 ? PTE_P : PTE_P | PTE_RW | PTE_US);
        this.write(at, e);
      }
      table = e & 0x000ffffffffff000n;
    }
    this.write(this.slot(table, vaddr, depth), this.leaf(paddr, depth, flags));
  }

  /** Physical address of the entry at `depth` (0 = top) on the walk of `vaddr`. */
  entryAddress(vaddr: bigint, depth: number): PhysAddr {
    let table = this.root as bigint;
    for (let d = 0; d < depth; d++) {
      const e = this.read(this.slot(table, vaddr, d));
      if ((e & PTE_P) === 0n) throw new VmsightError("E_BUILDER", `no table at depth ${d + 1}`);
      table = e & 0x000ffffffffff000n;
    }
    return pa(this.slot(table, vaddr, depth));
  }

  readEntry(vaddr: bigint, depth: number): bigint {
    return this.read(this.entryAddress(vaddr, depth));
  }

  /** Rewrites one entry on the walk of `vaddr`, e.g. to clear P or RW at a chosen level. */
  updateEntry(vaddr: bigint, depth: number, change: (entry: bigint) => bigint): void {
    const at = this.entryAddress(vaddr, depth);
    this.write(at, change(this.read(at)));
  }

  private leaf(paddr: bigint, depth: number, f: LeafFlags): bigint {
    const last = depth === this.g.shifts.length - 1;
    let e = PTE_P | (f.writable === false ? 0n : PTE_RW) | (f.user ? PTE_US : 0n) | (last ? 0n : PTE_PS);
    if (f.nx && this.g.entry === 8) e |= PTE_NX;
    if (this.mode === "32-bit" && !last) {
      // PSE-36: physical bits 39:32 of a 4 MiB page live in entry bits 20:13.
      return e | (paddr & 0xffc00000n) | (((paddr >> 32n) & 0xffn) << 13n);
    }
    return e | paddr;
  }

  private slot(table: bigint, vaddr: bigint, depth: number): bigint {
    const index = (vaddr >> BigInt(this.g.shifts[depth]!)) & ((1n << BigInt(this.g.widths[depth]!)) - 1n);
    return table + index * BigInt(this.g.entry);
  }

  private read(at: bigint): bigint {
    const b = this.mem.read(pa(at), this.g.entry);
    return this.g.entry === 8 ? b.readBigUInt64LE(0) : BigInt(b.readUInt32LE(0));
  }

  private write(at: bigint, value: bigint): void {
    const b = Buffer.alloc(this.g.entry);
    if (this.g.entry === 8) b.writeBigUInt64LE(BigInt.asUintN(64, value));
    else b.writeUInt32LE(Number(BigInt.asUintN(32, value)));
    this.mem.write(pa(at), b);
  }
}
