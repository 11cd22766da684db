import assert from "node:assert/strict";
import { test } from "node:test";
import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { imageMappings } from "../../src/os/linux/kernel.js";

const WINDOW = 0xffffffff80000000n;
const TEXT = 0xffffffff81000000n;

function kernelTables() {
  const mem = new BufferPhysicalMemory();
  mem.map(0, 64 << 20);
  const b = new PageTableBuilder(mem, "4-level", { tableBase: 0x3000000n });
  b.map(TEXT, 0x1000000n, 2 << 20);
  b.map(TEXT + 0x200000n, 0x1200000n, 2 << 20);
  return { mem, b, kernel: () => new AddressSpace(mem, X86_64_4LEVEL, b.root) };
}

test("the image base from the first path down equals the first of the full list", () => {
  const { mem, kernel } = kernelTables();
  const first = imageMappings(mem, kernel(), X86_64_4LEVEL, { firstOnly: true });
  assert.equal(first.base, TEXT);
  assert.equal(first.base, imageMappings(mem, kernel(), X86_64_4LEVEL).base);
});

test("page tables with nothing present before the image do not hide the image", () => {
  const { mem, b, kernel } = kernelTables();
  // PTs for the window's first two 2 MiB blocks whose only entries are then cleared: the walk
  // spends an entry of its budget on each.
  for (const at of [WINDOW, WINDOW + 0x200000n]) {
    b.map(at, 0x800000n, 4096);
    b.updateEntry(at, 3, () => 0n);
  }
  assert.equal(imageMappings(mem, kernel(), X86_64_4LEVEL, { firstOnly: true }).base, TEXT);
});
