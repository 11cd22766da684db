/**
 * Virtual-to-physical translation on a crafted 4-level table (no guest needed): the cached
 * address space against its peer, the same walker with no cache, measured in the same run.
 */
import { AddressSpace, X86_64_4LEVEL } from "../src/arch/x86/index.js";
import { PageTableBuilder } from "../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../src/memory/buffer.js";
import { va } from "../src/util/address.js";

const PAGES = 4096;

function main(): void {
  const mem = new BufferPhysicalMemory();
  const pt = new PageTableBuilder(mem, "4-level", { maxTables: 128 });
  const base = 0xffff_c900_0000_0000n;
  for (let i = 0; i < PAGES; i++)
    pt.map(base + BigInt(i) * 0x1000n, 0x1000_0000n + BigInt(i) * 0x1000n, 4096);
  // Scattered pages, as a task-list walk touches them.
  const addrs = Array.from({ length: 1024 }, (_, i) =>
    va(base + BigInt((i * 2654435761) % PAGES) * 0x1000n + 8n),
  );
  const rate = (space: AddressSpace, n: number): number => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) space.translate(addrs[i & 1023]!);
    return n / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  const uncached = new AddressSpace(mem, X86_64_4LEVEL, pt.root, { cacheSize: 0 });
  const cached = new AddressSpace(mem, X86_64_4LEVEL, pt.root);
  if (cached.translate(addrs[5]!).phys !== uncached.translate(addrs[5]!).phys) {
    throw new Error("the cached and uncached walks disagree: nothing to measure");
  }
  rate(uncached, 20_000); // warm-up: let the JIT settle
  rate(cached, 20_000);
  const u = rate(uncached, 200_000);
  const c = rate(cached, 1_000_000);
  const per = (r: number) => `${Math.round(r).toLocaleString("en").padStart(12)}/s`;
  console.log("benchmark                          vmsight (cached)   peer (uncached walk)   ratio");
  console.log(`translate, 4-level, 4 KiB pages   ${per(c)}     ${per(u)}         ${(c / u).toFixed(1)}x`);
}

main();
