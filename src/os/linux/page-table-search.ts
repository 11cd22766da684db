import type { PhysicalMemory } from "../../memory/types.js";
import { pa } from "../../util/address.js";
import { FaultError } from "../../util/errors.js";
import type { CpuRegisters } from "./kernel.js";

/**
 * Control registers for reading a memory image that recorded none (LiME, raw): the page-table
 * roots in RAM that map an x86-64 Linux kernel, found by their shape. Linux maps its image at
 * -2 GiB: top-level entry 511 leads (through one more level under 5-level paging) to a PDPT
 * whose entry 510 is present. Every process's tables share the kernel half, so any root found
 * reads the kernel; roots with an empty user half (init_top_pgt itself) come first.
 */
const PRESENT = 1n;
const LARGE = 0x80n;
const ADDR_MASK = 0x000ffffffffff000n;
const PAGE = 4096;
const CHUNK = 4 << 20;
const MAX_CANDIDATES = 16;
/** PG, WP, NE, ET, MP, PE: what a running x86-64 kernel has. */
const CR0 = 0x80050033n;
const CR4_PAE = 0x20n;
const CR4_LA57 = 0x1000n;
/** EFER.LME | EFER.LMA. */
const EFER = 0x500n;

export function pageTableCandidates(mem: PhysicalMemory): CpuRegisters[] {
  const ranges = mem.ranges();
  const inRam = (p: bigint) => ranges.some((r) => p >= r.start && p + BigInt(PAGE) <= r.start + r.size);
  const entry = (table: bigint, i: number): bigint | undefined => {
    if (!inRam(table)) return undefined;
    try {
      return mem.read(pa(table + BigInt(i * 8)), 8).readBigUInt64LE(0);
    } catch (error) {
      if (error instanceof FaultError) return undefined;
      throw error;
    }
  };
  /** The table an entry points to, when it is present, not a large page, and in RAM. */
  const next = (e: bigint | undefined): bigint | undefined =>
    e !== undefined && (e & PRESENT) !== 0n && (e & LARGE) === 0n && inRam(e & ADDR_MASK)
      ? e & ADDR_MASK
      : undefined;
  const mapsImage = (pdpt: bigint | undefined) =>
    pdpt !== undefined && ((entry(pdpt, 510) ?? 0n) & PRESENT) !== 0n;

  const kernelOnly: CpuRegisters[] = [];
  const withUser: CpuRegisters[] = [];
  const buf = Buffer.allocUnsafe(CHUNK);
  for (const r of ranges) {
    for (let at = 0n; at + BigInt(PAGE) <= r.size; at += BigInt(CHUNK)) {
      const n = Number(r.size - at < BigInt(CHUNK) ? r.size - at : BigInt(CHUNK)) & ~(PAGE - 1);
      const view = buf.subarray(0, n);
      try {
        mem.readInto(pa(r.start + at), view);
      } catch (error) {
        if (error instanceof FaultError) continue;
        throw error;
      }
      for (let off = 0; off < n; off += PAGE) {
        const top = next(view.readBigUInt64LE(off + 511 * 8));
        if (top === undefined) continue;
        const root = r.start + at + BigInt(off);
        let cr4: bigint | undefined;
        if (mapsImage(top)) cr4 = CR4_PAE;
        else if (mapsImage(next(entry(top, 511)))) cr4 = CR4_PAE | CR4_LA57;
        if (cr4 === undefined) continue;
        let user = false;
        for (let i = 0; i < 256 && !user; i++) user = view.readBigUInt64LE(off + i * 8) !== 0n;
        (user ? withUser : kernelOnly).push({ cr0: CR0, cr3: root, cr4, efer: EFER });
        if (kernelOnly.length >= MAX_CANDIDATES) return kernelOnly;
      }
    }
  }
  return [...kernelOnly, ...withUser].slice(0, MAX_CANDIDATES);
}
