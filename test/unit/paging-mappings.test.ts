import assert from "node:assert/strict";
import { test } from "node:test";
import {
  X86_32,
  X86_64_4LEVEL,
  X86_64_5LEVEL,
  X86_PAE,
  enumerateMappings,
} from "../../src/arch/x86/index.js";
import { PTE_P, PTE_RW, PTE_US, PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { pa, va } from "../../src/util/address.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

type Row = [start: bigint, end: bigint, phys: bigint, rights: string, pageSize: number];

/** Mappings as compact rows; rights are "w", "u", "x" or "-". */
function rows(list: ReturnType<typeof enumerateMappings>): Row[] {
  return list.mappings.map((m) => [
    m.start,
    m.end,
    m.phys,
    `${m.writable ? "w" : "-"}${m.user ? "u" : "-"}${m.executable ? "x" : "-"}`,
    m.pageSize,
  ]);
}

function fourLevel() {
  const mem = new BufferPhysicalMemory();
  const pt = new PageTableBuilder(mem, "4-level");
  // Three user pages, contiguous both ways: one run.
  for (let i = 0n; i < 3n; i++) pt.map(0x400000n + i * 0x1000n, 0x10000n + i * 0x1000n, 4096, { user: true });
  // Virtually next, physically elsewhere: a new run.
  pt.map(0x403000n, 0x20000n, 4096, { user: true });
  // Contiguous both ways with the previous one but read-only: a new run.
  pt.map(0x404000n, 0x21000n, 4096, { user: true, writable: false });
  // Contiguous but NX: a new run.
  pt.map(0x405000n, 0x22000n, 4096, { user: true, writable: false, nx: true });
  // A 4 KiB page followed, in both spaces, by a 2 MiB page: page sizes differ, so two runs.
  pt.map(0x7f00_001f_f000n, 0x1ff000n, 4096);
  pt.map(0x7f00_0020_0000n, 0x200000n, 2 * MiB);
  // Kernel direct map: two 2 MiB pages merge; then a 1 GiB page continues physically but has another size.
  pt.map(0xffff_8880_0000_0000n, 0x0n, 2 * MiB, { nx: true });
  pt.map(0xffff_8880_0020_0000n, 0x20_0000n, 2 * MiB, { nx: true });
  pt.map(0xffff_8880_4000_0000n, 0x4000_0000n, GiB, { nx: true });
  // The very last page of the address space.
  pt.map(0xffff_ffff_ffff_f000n, 0x30000n, 4096, { writable: false });
  return { mem, pt };
}

test("4-level: runs merge only when contiguous in both spaces with equal rights and page size", () => {
  const { mem, pt } = fourLevel();
  const list = enumerateMappings(mem, X86_64_4LEVEL, pt.root);
  assert.equal(list.truncated, false);
  assert.deepEqual(rows(list), [
    [0x400000n, 0x403000n, 0x10000n, "wux", 4096],
    [0x403000n, 0x404000n, 0x20000n, "wux", 4096],
    [0x404000n, 0x405000n, 0x21000n, "-ux", 4096],
    [0x405000n, 0x406000n, 0x22000n, "-u-", 4096],
    [0x7f00_001f_f000n, 0x7f00_0020_0000n, 0x1ff000n, "w-x", 4096],
    [0x7f00_0020_0000n, 0x7f00_0040_0000n, 0x200000n, "w-x", 2 * MiB],
    [0xffff_8880_0000_0000n, 0xffff_8880_0040_0000n, 0x0n, "w--", 2 * MiB],
    [0xffff_8880_4000_0000n, 0xffff_8880_8000_0000n, 0x4000_0000n, "w--", GiB],
    [0xffff_ffff_ffff_f000n, 1n << 64n, 0x30000n, "--x", 4096],
  ]);
});

test("rights are combined across levels while enumerating", () => {
  const { mem, pt } = fourLevel();
  // A read-only PDE above the user pages makes all of them read-only.
  pt.updateEntry(0x400000n, 2, (e) => e & ~PTE_RW);
  const list = enumerateMappings(mem, X86_64_4LEVEL, pt.root, { end: va(0x406000n) });
  assert.deepEqual(rows(list), [
    [0x400000n, 0x403000n, 0x10000n, "-ux", 4096],
    // Now equally read-only, 0x403000 and 0x404000 join into one run.
    [0x403000n, 0x405000n, 0x20000n, "-ux", 4096],
    [0x405000n, 0x406000n, 0x22000n, "-u-", 4096],
  ]);
});

test("start/end select and clip the range", () => {
  const { mem, pt } = fourLevel();
  const list = enumerateMappings(mem, X86_64_4LEVEL, pt.root, { start: va(0x401000n), end: 0x403800n });
  assert.deepEqual(rows(list), [
    [0x401000n, 0x403000n, 0x11000n, "wux", 4096],
    [0x403000n, 0x403800n, 0x20000n, "wux", 4096],
  ]);
  const kernel = enumerateMappings(mem, X86_64_4LEVEL, pt.root, { start: va(0xffff_8880_0030_0000n) });
  assert.deepEqual(rows(kernel)[0], [
    0xffff_8880_0030_0000n,
    0xffff_8880_0040_0000n,
    0x30_0000n,
    "w--",
    2 * MiB,
  ]);
  assert.equal(kernel.mappings.length, 3);
});

test("non-present and unreadable tables are skipped", () => {
  const { mem, pt } = fourLevel();
  pt.updateEntry(0x403000n, 3, (e) => e & ~PTE_P);
  pt.updateEntry(0xffff_ffff_ffff_f000n, 2, () => 0x7700_0000n | PTE_P | PTE_RW);
  const list = enumerateMappings(mem, X86_64_4LEVEL, pt.root);
  assert.equal(list.unreadableTables, 1);
  assert.deepEqual(
    rows(list).map((r) => r[0]),
    [
      0x400000n,
      0x404000n,
      0x405000n,
      0x7f00_001f_f000n,
      0x7f00_0020_0000n,
      0xffff_8880_0000_0000n,
      0xffff_8880_4000_0000n,
    ],
  );
});

test("5-level, PAE and 32-bit trees enumerate with their own page sizes", () => {
  const m5 = new BufferPhysicalMemory();
  const p5 = new PageTableBuilder(m5, "5-level");
  p5.map(0xff11_0000_0000_0000n, 0x0n, GiB);
  p5.map(0x00ff_0000_0000_0000n, 0x5000n, 4096, { user: true });
  assert.deepEqual(rows(enumerateMappings(m5, X86_64_5LEVEL, p5.root)), [
    [0x00ff_0000_0000_0000n, 0x00ff_0000_0000_1000n, 0x5000n, "wux", 4096],
    [0xff11_0000_0000_0000n, 0xff11_0000_4000_0000n, 0x0n, "w-x", GiB],
  ]);

  const mp = new BufferPhysicalMemory();
  const pp = new PageTableBuilder(mp, "pae");
  pp.map(0xc000_0000n, 0x1_0000_0000n, 2 * MiB);
  pp.map(0xc020_0000n, 0x1_0020_0000n, 2 * MiB);
  pp.map(0xffff_f000n, 0x9000n, 4096, { nx: true });
  assert.deepEqual(rows(enumerateMappings(mp, X86_PAE, pp.root)), [
    [0xc000_0000n, 0xc040_0000n, 0x1_0000_0000n, "w-x", 2 * MiB],
    [0xffff_f000n, 0x1_0000_0000n, 0x9000n, "w--", 4096],
  ]);

  const m32 = new BufferPhysicalMemory();
  const p32 = new PageTableBuilder(m32, "32-bit");
  p32.map(0xc000_0000n, 0x0n, 4 * MiB);
  p32.map(0x0804_8000n, 0x40_0000n, 4096, { user: true, writable: false });
  assert.deepEqual(rows(enumerateMappings(m32, X86_32, p32.root)), [
    [0x0804_8000n, 0x0804_9000n, 0x40_0000n, "-ux", 4096],
    [0xc000_0000n, 0xc040_0000n, 0x0n, "w-x", 4 * MiB],
  ]);
});

test("a page table that points at itself is bounded by maxEntries", () => {
  const mem = new BufferPhysicalMemory();
  const root = 0x1000n;
  const ram = mem.map(0, 0x3000);
  // Every PML4E points back at the PML4: as PDPT, PD and PT it is the same page again.
  for (let i = 0; i < 512; i++) ram.writeBigUInt64LE(root | PTE_P | PTE_RW | PTE_US, 0x1000 + i * 8);
  const t0 = Date.now();
  const small = enumerateMappings(mem, X86_64_4LEVEL, pa(root), { maxEntries: 5000 });
  assert.equal(small.truncated, true);
  assert.equal(small.entriesVisited, 5000);
  // The first leaves: VA 0, 0x1000, ... all backed by the PML4 page itself.
  assert.deepEqual(rows(small).slice(0, 2), [
    [0x0n, 0x1000n, root, "wux", 4096],
    [0x1000n, 0x2000n, root, "wux", 4096],
  ]);
  const full = enumerateMappings(mem, X86_64_4LEVEL, pa(root));
  assert.equal(full.truncated, true);
  assert.equal(full.entriesVisited, 1 << 20);
  console.log(`self-referencing PML4: default cap (2^20 entries) reached in ${Date.now() - t0} ms`);
});
