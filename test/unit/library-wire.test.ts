/**
 * The library hands out rows as the CLI's --json prints them, and the CLI's text renderers take
 * those rows: both must read the same as from the rows before encoding.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type KernelReport, describeKernel } from "../../src/commands/linux.js";
import { type TranslationReport, describeTranslation } from "../../src/commands/machine.js";
import { toJson, toWire } from "../../src/commands/wire.js";
import { pa } from "../../src/util/address.js";

const report: KernelReport = {
  version: "6.12.0",
  banner: "Linux version 6.12.0",
  slide: 0x1e000000n,
  text: 0xffffffff9f000000n,
  physBase: -0x1000000n,
  pageOffsetBase: 0xffff888000000000n,
  vmallocBase: undefined,
  vmemmapBase: 0xffffea0000000000n,
  pagingLevels: 4,
  cpus: 2,
  symbols: 100,
  types: 200,
  typesFrom: "BTF",
};

test("toWire is the JSON text decoded: bigints as 0x strings, undefined keys gone", () => {
  const nested = { a: [1n, { b: 0xffffffffffffffffn, c: undefined }], d: null, e: "x" };
  assert.deepEqual(toWire(nested), JSON.parse(toJson(nested)));
  assert.deepEqual(toWire(nested), { a: ["0x1", { b: "0xffffffffffffffff" }], d: null, e: "x" });
  assert.equal(toWire(report).physBase, "-0x1000000");
  assert.equal("vmallocBase" in toWire(report), false);
});

test("toJson: the same text whether the value holds a bigint or not, and a cycle is still an error", () => {
  const plain = { pid: 1, comm: "init", warnings: ["x"], gone: undefined, nested: [{ n: null }] };
  assert.equal(toJson(plain), '{"pid":1,"comm":"init","warnings":["x"],"nested":[{"n":null}]}');
  // A bigint after plain values: the text is made again, whole, with it as hex.
  const late = [{ pid: 1 }, { pid: 2, addr: 0xffffffff81000000n }];
  assert.equal(toJson(late), '[{"pid":1},{"pid":2,"addr":"0xffffffff81000000"}]');
  const cycle: Record<string, unknown> = { a: 1n };
  cycle.self = cycle;
  assert.throws(() => toJson(cycle), TypeError);
});

test("kernel text reads the same from the report and from the library's row", () => {
  const text = describeKernel(report);
  assert.equal(describeKernel(toWire(report)), text);
  assert.match(text, /^phys_base {10}-0x1000000$/m);
  assert.match(text, /^vmalloc_base {7}-$/m);
});

test("translate text reads the same from the report and from the library's row", () => {
  const t: TranslationReport = {
    phys: pa(0x1234000n),
    pageSize: 2 << 20,
    writable: true,
    user: false,
    executable: false,
    level: 2,
    virtual: 0xffffffff81000000n,
    cr3: 0x5000n,
    paging: "4-level",
  } as unknown as TranslationReport;
  assert.equal(describeTranslation(toWire(t)), describeTranslation(t));
  assert.match(describeTranslation(t), /^0xffffffff81000000 -> 0x1234000 {2}\(2 MiB page/);
});
