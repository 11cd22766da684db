import type { AddressSpace } from "../../arch/x86/address-space.js";
import type { StructLayout } from "../../symbols/layout.js";
import type { PhysAddr, VirtAddr } from "../../util/address.js";
import type { AddressBounds } from "./walk.js";

/** What the object model needs to know about a kernel symbol table. */
export interface Symbols {
  findAddress(name: string): bigint | undefined;
  getAddress(name: string): bigint;
}

/**
 * Everything the Linux object model reads guest structures with. Built by kernel discovery
 * (os/linux/kernel.ts) from a live target, or by tests from crafted memory.
 */
export interface KernelContext {
  /** The kernel's view of memory (kernel page tables): kernel text, data, direct map, vmalloc. */
  readonly kernel: AddressSpace;
  readonly layout: StructLayout;
  readonly symbols: Symbols;
  /** Where the kernel half starts under the paging mode of the kernel's page tables. */
  readonly bounds: AddressBounds;
  /** Randomised base of the direct map (`page_offset_base`): phys + this = kernel virtual. */
  readonly pageOffset: bigint;
  /** The address space of a process whose `mm->pgd` (a direct-map virtual address) is given. */
  userSpace(pgd: VirtAddr): AddressSpace;
  /** Per-CPU base of each possible CPU (`__per_cpu_offset[]`). */
  readonly perCpuOffsets: readonly bigint[];
  /** Direct-map virtual address to physical. */
  directToPhys(addr: VirtAddr): PhysAddr;
}
