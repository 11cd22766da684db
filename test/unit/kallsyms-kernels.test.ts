import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import {
  type KallsymsLayout,
  type SymbolTable,
  kallsymsSpan,
  layoutElfImage,
  recoverKallsyms,
  recoverKallsymsWithLayout,
} from "../../src/symbols/kallsyms/index.js";
import { type Elf64, PT_LOAD, parseElf64 } from "../../src/util/elf.js";
import { GuestDataError } from "../../src/util/errors.js";

/**
 * Ground truth independent of kallsyms: the export table (__ksymtab, __ksymtab_gpl). On x86-64
 * with HAVE_ARCH_PREL32_RELOCATIONS each entry is `.long sym - .`, `.long __kstrtab_sym - .`,
 * `.long __kstrtabns_sym - .` (include/linux/export.h in 6.1, export-internal.h in 6.12), so
 * value = &entry.value_offset + value_offset and name = &entry.name_offset + name_offset.
 */
function exportedSymbols(elf: Elf64, bytes: Buffer): { name: string; value: bigint }[] {
  const strings = elf.section("__ksymtab_strings");
  assert.ok(strings, "no __ksymtab_strings");
  const out: { name: string; value: bigint }[] = [];
  for (const [tab, crcs] of [
    ["__ksymtab", "__kcrctab"],
    ["__ksymtab_gpl", "__kcrctab_gpl"],
  ] as const) {
    const s = elf.section(tab);
    const c = elf.section(crcs);
    assert.ok(s && c, `no ${tab}/${crcs}`);
    const count = c.size / 4; // one u32 CRC per export (MODVERSIONS)
    const entry = s.size / count;
    assert.ok(entry === 12 || entry === 16, `${tab} entry size ${entry}`);
    for (let i = 0; i < count; i++) {
      const off = s.offset + i * entry;
      const va = s.addr + BigInt(i * entry);
      const value = BigInt.asUintN(64, va + BigInt(bytes.readInt32LE(off)));
      const nameVa = BigInt.asUintN(64, va + 4n + BigInt(bytes.readInt32LE(off + 4)));
      assert.ok(
        nameVa >= strings.addr && nameVa < strings.addr + BigInt(strings.size),
        "name outside strings",
      );
      const at = strings.offset + Number(nameVa - strings.addr);
      out.push({ name: bytes.toString("latin1", at, bytes.indexOf(0, at)), value });
    }
  }
  return out;
}

const EXPECTED: Record<string, { order: string[]; min: number; max: number }> = {
  "6.1": {
    order: [
      "offsets",
      "relative_base",
      "num_syms",
      "names",
      "markers",
      "seqs_of_names",
      "token_table",
      "token_index",
    ],
    min: 85_000,
    max: 105_000,
  },
  "6.12": {
    order: [
      "num_syms",
      "names",
      "markers",
      "token_table",
      "token_index",
      "offsets",
      "relative_base",
      "seqs_of_names",
    ],
    min: 145_000,
    max: 180_000,
  },
};

for (const id of ["6.1", "6.12"] as const) {
  describe(`kallsyms recovered from the Debian ${id} vmlinux`, { timeout: 120_000 }, () => {
    let bytes: Buffer;
    let elf: Elf64;
    let image: Uint8Array;
    let base: bigint;
    let table: SymbolTable;
    let layout: KallsymsLayout;

    before(() => {
      const k = ensureKernel(id);
      bytes = readFileSync(k.vmlinux);
      elf = parseElf64(bytes);
      ({ image, base } = layoutElfImage(elf, bytes));
      const t0 = performance.now();
      ({ table, layout } = recoverKallsymsWithLayout(image, base));
      const ms = performance.now() - t0;
      console.log(
        `${id} (${k.release}): ${table.size} symbols in ${ms.toFixed(0)} ms from a ${(image.length / 2 ** 20).toFixed(1)} MiB image; ` +
          `${layout.addressing}, order ${layout.order.join(" ")}`,
      );
    });

    test("every exported symbol is there at its export-table address", () => {
      const exported = exportedSymbols(elf, bytes);
      assert.ok(exported.length > 5000, `only ${exported.length} exports parsed`);
      const byName = new Map<string, bigint[]>();
      for (const s of table.symbols) {
        const list = byName.get(s.name);
        if (list) list.push(s.address);
        else byName.set(s.name, [s.address]);
      }
      const wrong: string[] = [];
      for (const { name, value } of exported) {
        if (!byName.get(name)?.includes(value)) wrong.push(`${name}@${value.toString(16)}`);
      }
      assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of ${exported.length} exports wrong`);
      console.log(`${id}: ${exported.length} exported symbols all match`);
    });

    test("__start_BTF/__stop_BTF bound the .BTF section", () => {
      const btf = elf.section(".BTF");
      assert.ok(btf);
      assert.equal(table.getAddress("__start_BTF"), btf.addr);
      assert.equal(table.getAddress("__stop_BTF"), btf.addr + BigInt(btf.size));
    });

    test("_text is the first PT_LOAD, _stext the start of .text", () => {
      const first = elf.segments.find((s) => s.type === PT_LOAD);
      assert.equal(table.getAddress("_text"), first?.vaddr);
      assert.equal(table.getAddress("_stext"), elf.section(".text")?.addr);
    });

    test("the symbol count and table order are the ones measured on this kernel", () => {
      const want = EXPECTED[id]!;
      assert.ok(table.size >= want.min && table.size <= want.max, `${table.size} symbols`);
      assert.equal(layout.numSyms, table.size);
      assert.deepEqual(layout.order, want.order);
      assert.equal(layout.addressing, "relative-absolute-percpu");
    });

    test("kallsymsSpan runs from the first kallsyms table to the end of the last", () => {
      const span = kallsymsSpan(layout);
      assert.ok(span);
      const end = span.start + BigInt(span.size);
      // 6.1 ends with token_index (256 u16), 6.12 with seqs_of_names (3 bytes a symbol).
      const last =
        id === "6.1"
          ? { at: layout.tokenIndexAddr, size: 512n }
          : { at: layout.seqsOfNamesAddr!, size: 3n * BigInt(table.size) };
      assert.equal(layout.order.at(-1), id === "6.1" ? "token_index" : "seqs_of_names");
      assert.equal(end, last.at + last.size);
      const starts = [layout.numSymsAddr, layout.namesAddr, layout.markersAddr, layout.tokenTableAddr];
      assert.equal(
        span.start,
        starts.concat(layout.offsetsAddr!).reduce((a, b) => (a < b ? a : b)),
      );
      // The recovered table's own bytes: the names decode to it, so they lie in the span too.
      for (const at of starts) assert.ok(at >= span.start && at < end);
    });

    test("per-CPU variables keep their offsets; the rest slide with rebase", () => {
      // __per_cpu_start opens the zero-based per-CPU segment; the ELF's percpu section says so too.
      assert.equal(table.getAddress("__per_cpu_start"), elf.section(".data..percpu")?.addr);
      const slide = 0x1e00_0000n;
      const moved = table.rebase(slide);
      assert.equal(moved.getAddress("_text"), table.getAddress("_text") + slide);
      assert.equal(moved.getAddress("__per_cpu_start"), 0n);
      assert.equal(moved.size, table.size);
    });

    test("symbolize maps an address inside a function back to it", () => {
      const text = table.getAddress("_text");
      const fn = table.symbols.find((s) => s.type === "T" && s.address > text + 0x10000n)!;
      const next = table.symbols.find((s) => s.address > fn.address)!;
      const inside = fn.address + (next.address - fn.address) / 2n;
      const hit = table.symbolize(inside);
      assert.ok(hit);
      assert.equal(inside - hit.offset, fn.address);
    });

    test("a relocated copy (as in RAM after KASLR) recovers to the rebased table", () => {
      const slide = 0x2400_0000n;
      const moved = image.slice();
      const at = Number(layout.relativeBaseAddr! - base);
      new DataView(moved.buffer).setBigUint64(at, layout.relativeBase! + slide, true);
      const t = recoverKallsyms(moved, base + slide);
      const want = table.rebase(slide);
      for (const name of ["_text", "init_task", "__start_BTF", "__per_cpu_start", "linux_banner"]) {
        assert.equal(t.findAddress(name), want.findAddress(name), name);
      }
    });

    test("hostile copies fail with GuestDataError", () => {
      const numSymsAt = Number(layout.numSymsAddr - base);
      const absurd = image.slice();
      new DataView(absurd.buffer).setUint32(numSymsAt, 0xffff_ffff, true);
      assert.throws(() => recoverKallsyms(absurd, base), GuestDataError);
      // Cut in the middle of kallsyms_names: the token table is gone with the rest.
      const namesAt = Number(layout.namesAddr - base);
      assert.throws(() => recoverKallsyms(image.subarray(0, namesAt + 100_000), base), GuestDataError);
      // Cut before it: the token table is there, num_syms and the first names are not.
      const from = namesAt + 1000;
      assert.throws(() => recoverKallsyms(image.subarray(from), base + BigInt(from)), GuestDataError);
    });
  });
}
