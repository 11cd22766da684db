import assert from "node:assert/strict";
import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { PAGING_FORMATS, type PagingFormat } from "../../src/arch/x86/formats.js";
import { enumerateMappings } from "../../src/arch/x86/mappings.js";
import { type BuilderMode, PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { findTranslation } from "../../src/arch/x86/walk.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { pa, va } from "../../src/util/address.js";
import { fuzzTargets } from "./harness.js";
import { pointerInto } from "./mutate.js";
import { typed } from "./typed.js";

/** Physical memory of the fuzzed inputs: page tables and the pages they map, from address 0. */
const PAGES = 24;
const MAX_ENTRIES = 4096;
/** Addresses the seeds map, and their neighbours, as walk targets in every input. */
const PROBES = [
  0x400000n,
  0x401ff8n,
  0x7fff_ffff_f000n,
  0xffff_8880_0000_0000n,
  0xffff_ffff_ffff_f000n,
  0xc000_0000n,
];

function seed(mode: BuilderMode): Uint8Array {
  const mem = new BufferPhysicalMemory();
  const pt = new PageTableBuilder(mem, mode, { tableBase: 0n, maxTables: PAGES - 2 });
  const data = BigInt((PAGES - 2) * 4096);
  mem.map(data, 2 * 4096, "data");
  const wide = mode === "4-level" || mode === "5-level";
  pt.map(0x400000n, data, 4096, { user: true });
  pt.map(0x401000n, data + 0x1000n, 4096, { user: true, nx: true });
  pt.map(0xc000_0000n, 0n, mode === "32-bit" ? 4 << 20 : 2 << 20);
  if (wide) {
    pt.map(0x7fff_ffff_f000n, data, 4096, { user: true, writable: false });
    pt.map(0xffff_8880_0000_0000n, 0n, 1 << 30, { nx: true });
    pt.map(0xffff_ffff_ffff_f000n, data + 0x1000n, 4096);
  }
  return new Uint8Array(mem.read(pa(0n), PAGES * 4096));
}

function walkAll(bytes: Uint8Array, format: PagingFormat): void {
  const mem = new BufferPhysicalMemory();
  mem.map(0n, Buffer.from(bytes));
  const root = pa(0n);
  const list = typed(() => enumerateMappings(mem, format, root, { maxEntries: MAX_ENTRIES }));
  if (list) {
    assert.ok(list.entriesVisited <= MAX_ENTRIES + 1, `${list.entriesVisited} entries visited`);
    assert.ok(list.mappings.length <= list.entriesVisited, "more mappings than entries");
    for (let i = 1; i < list.mappings.length; i++) {
      assert.ok(list.mappings[i]!.start >= list.mappings[i - 1]!.end, "mappings overlap or go backwards");
    }
  }
  const space = new AddressSpace(mem, format, root);
  for (const probe of PROBES) {
    for (const addr of [probe, probe + 0xff8n, probe - 8n]) {
      typed(() => findTranslation(mem, format, root, va(BigInt.asUintN(64, addr))));
      typed(() => space.read(va(BigInt.asUintN(64, addr)), 16));
    }
  }
}

const MODES: BuilderMode[] = ["4-level", "5-level", "pae", "32-bit"];

fuzzTargets(import.meta.url, [
  {
    name: "page-tables",
    seeds: () => MODES.map(seed),
    run: (bytes) => {
      for (const format of PAGING_FORMATS) walkAll(bytes, format);
    },
    runs: 1000,
    maxRandomBytes: PAGES * 4096,
    // Entries pointing at other pages of the input, present, some with PS: loops and odd leaves.
    mutations: () => [pointerInto(0n, PAGES * 4096, [0x7n, 0x87n, 0x1n, 0x8000_0000_0000_0007n])],
  },
]);
