import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type BuildIdentity, type BuildPlace, KernelCache } from "../../src/os/linux/kernel-cache.js";
import { type KernelSymbol, SymbolTable } from "../../src/symbols/kallsyms/table.js";
import type { StructLayout } from "../../src/symbols/layout.js";
import { recordedLayout } from "../../src/symbols/recorded-layout.js";

const root = mkdtempSync(join(tmpdir(), "vmsight-cache-test-"));
after(() => rmSync(root, { recursive: true, force: true }));

const BASE = 0xffffffff8a000000n;
const place: BuildPlace = {
  bannerOffset: 0x1200000n,
  btfOffset: 0x2400000n,
  btfSize: 4,
  kallsymsOffset: 0x1800000n,
  kallsymsSize: 0x40000,
};
const identity: BuildIdentity = {
  banner: "Linux version 6.1.0-50-amd64 (x) #1 SMP",
  btf: Uint8Array.of(1, 2, 3, 4),
  kallsymsSha256: () => "k".repeat(64),
};
const symbols: KernelSymbol[] = [
  { name: "fixed_percpu_data", address: 0n, type: "A", absolute: true },
  { name: "_text", address: BASE, type: "T" },
  { name: "zz_static", address: BASE + 0x100n, type: "t" },
  { name: "zz_static", address: BASE + 0x200n, type: "t" },
  { name: "init_task", address: BASE + 0x1a00000n, type: "D" },
];

let n = 0;
function storedCache(): KernelCache {
  const cache = new KernelCache(join(root, `c${n++}`));
  cache.store(BASE, place, identity, new SymbolTable(symbols), 42);
  return cache;
}

describe("KernelCache", () => {
  test("the same banner and BTF at the recorded place hit, symbols moved to the new base", () => {
    const cache = storedCache();
    const seen: BuildPlace[] = [];
    const slid = BASE + 0x200000n;
    const hit = cache.find(slid, (p) => {
      seen.push(p);
      return identity;
    });
    assert.ok(hit);
    assert.deepEqual(seen, [place]);
    assert.equal(hit.typeCount, 42);
    assert.deepEqual(
      hit.symbols.symbols.map((s) => [s.name, s.address, s.type, s.absolute === true]),
      [
        ["fixed_percpu_data", 0n, "A", true],
        ["_text", slid, "T", false],
        ["zz_static", slid + 0x100n, "t", false],
        ["zz_static", slid + 0x200n, "t", false],
        ["init_task", slid + 0x1a00000n, "D", false],
      ],
    );
    assert.equal(hit.symbols.findAddress("init_task"), slid + 0x1a00000n);
    assert.equal(hit.symbols.findAddress("zz_static"), slid + 0x100n, "the first in address order");
    assert.equal(hit.symbols.findAll("zz_static").length, 2);
    assert.equal(hit.symbols.findAddress("nope"), undefined);
    assert.equal(hit.symbols.format(slid + 0x208n), "zz_static+0x8");
    assert.equal(statSync(cache.dir).mode & 0o777, 0o700);
  });

  test("a symbol name outside ASCII comes back as it was stored", () => {
    const cache = new KernelCache(join(root, `c${n++}`));
    const odd = [...symbols, { name: "größe_ø", address: BASE + 0x300n, type: "t" }];
    cache.store(BASE, place, identity, new SymbolTable(odd), 42);
    const hit = cache.find(BASE, () => identity);
    assert.ok(hit);
    assert.equal(hit.symbols.findAddress("größe_ø"), BASE + 0x300n);
    assert.equal(hit.symbols.findAddress("init_task"), BASE + 0x1a00000n);
  });

  test("a changed banner misses", () => {
    const cache = storedCache();
    assert.equal(
      cache.find(BASE, () => ({ ...identity, banner: `${identity.banner} (rebuilt)` })),
      undefined,
    );
  });

  test("changed BTF bytes (same size) miss", () => {
    const cache = storedCache();
    assert.equal(
      cache.find(BASE, () => ({ ...identity, btf: Uint8Array.of(1, 2, 3, 5) })),
      undefined,
    );
  });

  test("changed kallsyms bytes miss: a damaged dump or a rewritten table is not the build kept", () => {
    const cache = storedCache();
    assert.equal(
      cache.find(BASE, () => ({ ...identity, kallsymsSha256: () => "d".repeat(64) })),
      undefined,
    );
    assert.ok(cache.find(BASE, () => identity));
  });

  test("an unreadable place misses, and clear() forgets every build", () => {
    const cache = storedCache();
    assert.equal(
      cache.find(BASE, () => undefined),
      undefined,
    );
    assert.ok(cache.find(BASE, () => identity));
    cache.clear();
    assert.equal(
      cache.find(BASE, () => identity),
      undefined,
    );
  });

  test("a cache directory others may write is not read, and the parents of a new one are made", () => {
    const cache = new KernelCache(join(root, `c${n++}`, "deeper", "kernels-seen"));
    cache.store(BASE, place, identity, new SymbolTable(symbols), 42);
    assert.ok(cache.find(BASE, () => identity));
    chmodSync(cache.dir, 0o777);
    assert.equal(
      cache.find(BASE, () => identity),
      undefined,
    );
  });

  test("layout answers saved with a build come back with it", () => {
    const cache = new KernelCache(join(root, `c${n++}`));
    const save = cache.store(BASE, place, identity, new SymbolTable(symbols), 42);
    save({ "off\0task_struct\0pid": 2416 });
    assert.deepEqual(cache.find(BASE, () => identity)?.answers, { "off\0task_struct\0pid": 2416 });
  });
});

describe("recordedLayout", () => {
  const real: StructLayout = {
    source: "test",
    findOffset: (s, p) => (s === "task_struct" && p === "pid" ? 2416 : undefined),
    offsetof: (s, p) => {
      if (s === "task_struct" && p === "pid") return 2416;
      throw new Error(`no ${s}.${p}`);
    },
    findSize: (s) => (s === "task_struct" ? 9000 : undefined),
    sizeof: (s) => {
      if (s === "task_struct") return 9000;
      throw new Error(`no ${s}`);
    },
    memberSize: () => 4,
    findEnumValue: (n) => (n === "TASK_COMM_LEN" ? 16n : undefined),
  };

  test("asks the real layout once per question, and not at all for a recorded answer", () => {
    let built = 0;
    const build = () => {
      built++;
      return real;
    };
    const first = recordedLayout(build, {}, "test");
    assert.equal(first.layout.offsetof("task_struct", "pid"), 2416);
    assert.equal(first.layout.findOffset("task_struct", "nope"), undefined);
    assert.equal(first.layout.findEnumValue("TASK_COMM_LEN"), 16n);
    assert.equal(first.changed(), true);
    assert.equal(built, 1);
    const again = recordedLayout(build, JSON.parse(JSON.stringify(first.answers)), "test");
    assert.equal(again.layout.offsetof("task_struct", "pid"), 2416);
    assert.equal(again.layout.findOffset("task_struct", "nope"), undefined);
    assert.equal(again.layout.findEnumValue("TASK_COMM_LEN"), 16n);
    assert.equal(again.changed(), false);
    assert.equal(built, 1);
  });

  test("an unknown member still throws the real layout's error", () => {
    const known = { "off\0task_struct\0nope": null };
    const layout = recordedLayout(() => real, known, "test").layout;
    assert.throws(() => layout.offsetof("task_struct", "nope"), /no task_struct\.nope/);
  });
});
