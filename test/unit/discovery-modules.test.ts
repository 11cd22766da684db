/**
 * The module rules on crafted struct modules laid out as 6.1 (struct module_layout) and 6.12
 * (struct module_memory per region type) declare them, with module loads as the only events
 * and no executable text seen: the layout alone must place the text size and base.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { OffsetDiscovery } from "../../src/discovery/constraints.js";
import type { GuestView, KernelFacts } from "../../src/discovery/types.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import { noise } from "../support/noise.js";

const HEAD = 0xffffffff82030000n;
const TASK = 0xffff888000100000n;
const MOD_AREA = 0xffffffffc0000000n;

class Memory implements GuestView {
  readonly bounds = addressBounds(X86_64_4LEVEL);
  private readonly regions: { addr: bigint; bytes: Buffer }[] = [];
  alloc(addr: bigint, bytes: Buffer): Buffer {
    this.regions.push({ addr, bytes });
    return bytes;
  }
  private at(addr: bigint, n: number): { b: Buffer; o: number } {
    const r = this.regions.find((x) => addr >= x.addr && addr + BigInt(n) <= x.addr + BigInt(x.bytes.length));
    if (!r) throw new Error(`unmapped ${addr.toString(16)}`);
    return { b: r.bytes, o: Number(addr - r.addr) };
  }
  read(addr: bigint, n: number): Buffer | undefined {
    try {
      const { b, o } = this.at(addr, n);
      return Buffer.from(b.subarray(o, o + n));
    } catch {
      return undefined;
    }
  }
  u64(addr: bigint, v: bigint): void {
    const { b, o } = this.at(addr, 8);
    b.writeBigUInt64LE(v, o);
  }
  bytes(addr: bigint, v: Buffer): void {
    const { b, o } = this.at(addr, v.length);
    v.copy(b, o);
  }
  u32(addr: bigint, v: number): void {
    const { b, o } = this.at(addr, 4);
    b.writeUInt32LE(v, o);
  }
  translate(): bigint | undefined {
    return undefined;
  }
  kernelPage() {
    return undefined;
  }
  userPage() {
    return undefined;
  }
  userRuns() {
    return undefined;
  }
  readUser(): Buffer | undefined {
    return undefined;
  }
}

/** One region of a module: its base, size, and (6.1) the nested sizes inside it. */
interface Region {
  readonly base: bigint;
  readonly size: number;
}

/** Writes a layout's regions into struct module `mod` once the module is in the module tree. */
type Layout = (m: Memory, mod: bigint, regions: Region[], inTree: boolean) => void;

/** 6.1: core_layout at 320 and init_layout at 384 { base; size, text_size, ro_size, ro_after_init_size; mtn }. */
const layout61: Layout = (m, mod, [text, ro, roAfterInit, whole], inTree) => {
  for (const [at, init] of [
    [320n, false],
    [384n, true],
  ] as const) {
    const scale = init ? 0 : 1;
    m.u64(mod + at, init ? 0n : text!.base);
    m.u32(mod + at + 8n, whole!.size * scale);
    m.u32(mod + at + 12n, text!.size * scale);
    m.u32(mod + at + 16n, ro!.size * scale);
    m.u32(mod + at + 20n, roAfterInit!.size * scale);
    m.u64(mod + at + 24n, inTree ? mod : 0n);
  }
};
const TRUTH_61 = { size: 332 - 8, base: 320 - 8 };

/** 6.12: mem[MOD_TEXT..MOD_INIT_RODATA] at 320, 56 bytes each { base; size; mtn }. */
const layout612: Layout = (m, mod, regions, inTree) => {
  regions.forEach((r, i) => {
    const at = mod + 320n + BigInt(56 * i);
    m.u64(at, r.base);
    m.u32(at + 8n, r.size);
    m.u32(at + 12n, 0);
    m.u64(at + 16n, inTree ? mod : 0n);
  });
};
const TRUTH_612 = { size: 328 - 8, base: 320 - 8 };

function load(layout: Layout, regionsOf: (i: number) => Region[], count: number): OffsetDiscovery {
  const m = new Memory();
  m.alloc(TASK, noise(2048, 1));
  m.alloc(HEAD, Buffer.alloc(16));
  m.u64(HEAD, HEAD);
  m.u64(HEAD + 8n, HEAD);
  const facts: KernelFacts = { initTask: TASK, initMm: 0n, modulesHead: HEAD, taskSize: 2048 };
  const d = new OffsetDiscovery(facts, { groups: ["module"] });
  const mods: bigint[] = [];
  for (let i = 0; i < count; i++) {
    const mod = MOD_AREA + 0x100000n * BigInt(i + 1);
    m.alloc(mod, noise(4096, 10 + i));
    m.u32(mod, 3); // UNFORMED
    m.bytes(mod + 24n, Buffer.from(`mod${i}`.padEnd(56, "\0"), "latin1"));
    layout(m, mod, regionsOf(i), false);
    const first = m.read(HEAD, 8)!.readBigUInt64LE(0);
    m.u64(mod + 8n, first);
    m.u64(mod + 16n, HEAD);
    m.u64(first + 8n, mod + 8n);
    m.u64(HEAD, mod + 8n);
    d.observe({
      index: i,
      kind: "module",
      current: TASK,
      cr3Root: 0n,
      processCount: undefined,
      threadCount: 1,
      pointers: [],
      view: m,
    });
    // mod_tree_insert() right after the listing; the load completes before the next one.
    layout(m, mod, regionsOf(i), true);
    m.u32(mod, 0);
    mods.push(mod);
  }
  return d;
}

const member = (d: OffsetDiscovery, k: string) => d.status().find((s) => s.key === k)!;

describe("module text size and base from the module layout", () => {
  test("6.1 module_layout: text_size is the one the nested sizes and the base 12 bytes before fit", () => {
    const pages = (n: number) => n * 4096;
    const d = load(
      layout61,
      (i) => {
        const base = MOD_AREA + 0x1000000n * BigInt(i + 1);
        return [pages(1 + i), pages(2 + i), pages(2 + i), pages(4 + i)].map((size) => ({ base, size }));
      },
      3,
    );
    assert.deepEqual(member(d, "module.core_text_size").candidates, [TRUTH_61.size]);
    assert.deepEqual(member(d, "module.core_base").candidates, [TRUTH_61.base]);
    // Its neighbours, whole pages too (size, ro_size, ro_after_init_size), fail the shape.
    assert.ok(
      (member(d, "module.core_text_size").history.removedBy["a module layout's text size"] ?? 0) >= 3,
    );
  });

  test("6.12 module_memory: of the regions' sizes, MOD_TEXT's, the first declared, is taken and said so", () => {
    const d = load(
      layout612,
      (i) =>
        [3, 2, 1, 0, 0, 0, 0].map((n, t) => ({
          base: n === 0 ? 0n : MOD_AREA + 0x1000000n * BigInt(i + 1) + 0x100000n * BigInt(t),
          size: (n + i) * 4096 * (n === 0 ? 0 : 1),
        })),
      2,
    );
    const size = member(d, "module.core_text_size");
    assert.deepEqual(size.candidates, [TRUTH_612.size]);
    assert.match(size.note ?? "", /core text is declared first/);
    assert.deepEqual(member(d, "module.core_base").candidates, [TRUTH_612.base]);
    assert.equal(d.profile()["module.core_text_size"], TRUTH_612.size + 8);
  });

  test("one module is enough for its name: the array is zero-padded after the NUL", () => {
    const d = load(
      layout61,
      () => [1, 2, 2, 3].map((n) => ({ base: MOD_AREA + 0x1000000n, size: n * 4096 })),
      1,
    );
    assert.deepEqual(member(d, "module.name").candidates, [24 - 8]);
  });

  test("a layout that fits neither shape leaves the rule unused, not every candidate removed", () => {
    const d = load(
      (m, mod, [r], inTree) => {
        m.u64(mod + 320n, r!.base);
        m.u32(mod + 340n, r!.size);
        m.u64(mod + 360n, inTree ? mod : 0n);
      },
      (i) => [{ base: MOD_AREA + 0x1000000n * BigInt(i + 1), size: 4096 * (i + 2) }],
      3,
    );
    assert.ok(member(d, "module.core_text_size").candidates.includes(340 - 8));
    assert.equal(
      member(d, "module.core_text_size").history.removedBy["a module layout's text size"],
      undefined,
    );
  });
});
