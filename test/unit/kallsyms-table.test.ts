import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, test } from "node:test";
import { type KernelSymbol, SymbolTable, parseSystemMap } from "../../src/symbols/kallsyms/index.js";
import { buildNameIndex } from "../../src/symbols/kallsyms/name-index.js";
import type { SymbolArrays } from "../../src/symbols/kallsyms/table.js";
import { VmsightError } from "../../src/util/errors.js";

const fixtures = resolve(import.meta.dirname, "../../../test/fixtures/kallsyms");
const fixture = (name: string) => readFileSync(resolve(fixtures, name), "utf8");

/** Arrays in the list's own order, as kallsyms recovery makes them. */
function arraysOf(list: readonly KernelSymbol[]): SymbolArrays {
  const starts = new Uint32Array(list.length + 1);
  list.forEach((s, i) => {
    starts[i + 1] = starts[i]! + s.name.length;
  });
  return {
    count: list.length,
    addresses: BigUint64Array.from(list, (s) => s.address),
    absolute: Uint8Array.from(list, (s) => (s.absolute ? 1 : 0)),
    types: Uint8Array.from(list, (s) => s.type.charCodeAt(0)),
    names: list.map((s) => s.name).join(""),
    starts,
    byName: buildNameIndex(list.length, (i) => list[i]!.name),
  };
}

describe("SymbolTable", () => {
  const list: KernelSymbol[] = [
    { name: "c", address: 0x3000n, type: "T" },
    { name: "a", address: 0x1000n, type: "T" },
    { name: "a_alias", address: 0x1000n, type: "t" },
    { name: "dup", address: 0x2000n, type: "t" },
    { name: "dup", address: 0x2800n, type: "t" },
    { name: "pcpu", address: 0x10n, type: "A", absolute: true },
  ];
  const table = new SymbolTable(list);

  test("a table over arrays answers as the list it was made from", () => {
    const arrays = table.toArrays();
    const over = SymbolTable.fromArrays(arrays);
    assert.deepEqual(over.symbols, table.symbols);
    assert.equal(over.toArrays(), arrays, "its arrays are kept as they are");
    assert.equal(over.findAddress("dup"), 0x2000n);
    assert.equal(over.findAddress("pcpu"), 0x10n);
    assert.deepEqual(over.symbolize(0x2900n), { name: "dup", offset: 0x100n });
  });

  test("arrays out of address order are sorted as a list is, aliases in their order", () => {
    const over = SymbolTable.fromArrays(arraysOf(list));
    assert.deepEqual(over.symbols, table.symbols);
    assert.deepEqual(over.toArrays(), table.toArrays());
  });

  test("sorts by address and keeps duplicates", () => {
    assert.deepEqual(
      table.symbols.map((s) => s.name),
      ["pcpu", "a", "a_alias", "dup", "dup", "c"],
    );
    assert.equal(table.size, 6);
    assert.equal(table.findAddress("dup"), 0x2000n);
    assert.equal(table.findAll("dup").length, 2);
    assert.equal(table.findAddress("nope"), undefined);
  });

  test("getAddress throws E_SYMBOL_UNKNOWN with a hint", () => {
    assert.equal(table.getAddress("c"), 0x3000n);
    assert.throws(
      () => table.getAddress("nope"),
      (e: unknown) => e instanceof VmsightError && e.code === "E_SYMBOL_UNKNOWN" && (e.hint ?? "").length > 0,
    );
  });

  test("symbolize finds the covering symbol, first alias first", () => {
    assert.deepEqual(table.symbolize(0x1000n), { name: "a", offset: 0n });
    assert.deepEqual(table.symbolize(0x1fffn), { name: "a", offset: 0xfffn });
    assert.deepEqual(table.symbolize(0x2900n), { name: "dup", offset: 0x100n });
    assert.deepEqual(table.symbolize(0x3000n), { name: "c", offset: 0n });
    assert.equal(table.symbolize(0x5n), undefined);
    assert.equal(table.symbolize(0x3001n), undefined);
    assert.equal(table.format(0x1010n), "a+0x10");
    assert.equal(table.format(0x1n), "0x1");
  });

  test("rebase moves everything but absolute symbols, modulo 2^64", () => {
    const moved = table.rebase(0x1_0000n);
    assert.equal(moved.findAddress("a"), 0x1_1000n);
    assert.equal(moved.findAddress("pcpu"), 0x10n);
    const wrapped = new SymbolTable([{ name: "x", address: 0xffff_ffff_ffff_f000n, type: "T" }]).rebase(
      0x2000n,
    );
    assert.equal(wrapped.findAddress("x"), 0x1000n);
    assert.equal(table.findAddress("a"), 0x1000n, "the original is unchanged");
  });

  test("an empty table answers nothing", () => {
    const empty = new SymbolTable([]);
    assert.equal(empty.size, 0);
    assert.equal(empty.symbolize(0x1000n), undefined);
  });
});

describe("parseSystemMap", () => {
  test("System.map: skips malformed lines, keeps duplicates, marks per-CPU offsets", () => {
    const t = parseSystemMap(fixture("system-map-sample.txt"));
    assert.equal(t.size, 12);
    assert.equal(t.getAddress("_text"), 0xffffffff81000000n);
    assert.equal(t.getAddress("static_helper"), 0xffffffff81001000n);
    assert.equal(t.findAll("static_helper").length, 2);
    assert.equal(t.findAddress("bad_hex"), undefined);
    assert.deepEqual(t.symbolize(0xffffffff81002345n), { name: "do_one_initcall", offset: 5n });
    const slid = t.rebase(0x2000_0000n);
    assert.equal(slid.getAddress("init_task"), 0xffffffffa2a1aa40n);
    assert.equal(slid.getAddress("current_task"), 0x1fb80n);
  });

  test("/proc/kallsyms: module column and type A", () => {
    const t = parseSystemMap(fixture("proc-kallsyms-sample.txt"));
    assert.equal(t.size, 8);
    const setup = t.symbols.find((s) => s.name === "dummy_setup");
    assert.deepEqual(setup, {
      name: "dummy_setup",
      address: 0xffffffffc0a01000n,
      type: "t",
      module: "dummy",
    });
    assert.equal(t.symbols.find((s) => s.name === "_text")?.module, undefined);
    assert.equal(t.symbols.find((s) => s.name === "current_task")?.absolute, true);
  });

  test("accepts CRLF line ends and surrounding blanks", () => {
    const t = parseSystemMap("ffffffff81000000 T _text\r\n  \r\nffffffff81000010 t foo\r\n");
    assert.equal(t.getAddress("foo"), 0xffffffff81000010n);
  });

  test("rejects text with no symbol line, and a kptr_restrict'ed kallsyms", () => {
    const isMapError = (e: unknown) => e instanceof VmsightError && e.code === "E_SYMBOL_MAP";
    assert.throws(() => parseSystemMap(""), isMapError);
    assert.throws(
      () => parseSystemMap("The real System.map is in the linux-image-6.1.0-50-amd64-dbg package\n"),
      isMapError,
    );
    assert.throws(() => parseSystemMap("1ffffffff81000000 T too_wide\n"), isMapError);
    assert.throws(() => parseSystemMap("0000000000000000 T _text\n0000000000000000 T _stext\n"), isMapError);
  });
});
