import type { PhysicalMemory } from "../../memory/types.js";
import { type PhysAddr, pa } from "../../util/address.js";

const BANNER = Buffer.from("Linux version ");
const CHUNK = 16 << 20;

/**
 * Finds the kernel's `linux_banner` in guest-physical memory: the first "Linux version "
 * followed by a printable line. Reads in large chunks (with overlap) because the scan may
 * cover all of RAM on a cold attach.
 */
export function findBannerPhys(mem: PhysicalMemory): { addr: PhysAddr; text: string } | undefined {
  for (const range of mem.ranges()) {
    if (!range.writable) continue;
    for (let off = 0n; off < range.size; off += BigInt(CHUNK)) {
      const len = Number(range.size - off < BigInt(CHUNK + 256) ? range.size - off : BigInt(CHUNK + 256));
      const chunk = mem.read(pa(range.start + off), len);
      for (let i = chunk.indexOf(BANNER); i >= 0 && i < CHUNK; i = chunk.indexOf(BANNER, i + 1)) {
        const end = chunk.indexOf(0x0a, i);
        const text = chunk.subarray(i, end < 0 ? i + 200 : end).toString("latin1");
        if (/^Linux version \d+\.\d+\S* \(/.test(text))
          return { addr: pa(range.start + off + BigInt(i)), text };
      }
    }
  }
  return undefined;
}
