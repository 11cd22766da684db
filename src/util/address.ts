/**
 * Guest addresses are 64-bit and above 2^53, so they are bigints everywhere. The brands keep
 * guest-physical and guest-virtual addresses from being mixed up; arithmetic drops the brand on
 * purpose, so re-brand with `pa()`/`va()` where a computed value becomes an address again.
 */
export type PhysAddr = bigint & { readonly __space: "phys" };
export type VirtAddr = bigint & { readonly __space: "virt" };

export const pa = (x: bigint | number): PhysAddr => BigInt(x) as PhysAddr;
export const va = (x: bigint | number): VirtAddr => BigInt.asUintN(64, BigInt(x)) as VirtAddr;

export const hex = (x: bigint | number): string => `0x${x.toString(16)}`;

/** Parses "0x1f", "1f" (hex only when prefixed or containing a-f), or decimal; undefined if neither. */
export function parseAddress(text: string): bigint | undefined {
  const t = text.trim().toLowerCase().replace(/_/g, "");
  if (/^0x[0-9a-f]+$/.test(t)) return BigInt(t);
  if (/^[0-9]+$/.test(t)) return BigInt(t);
  if (/^[0-9a-f]+$/.test(t)) return BigInt(`0x${t}`);
  return undefined;
}

export const PAGE_SIZE = 4096;
