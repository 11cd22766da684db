import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_SYMS, recoverKallsymsWithLayout } from "../../src/symbols/kallsyms/index.js";
import { GuestDataError } from "../../src/util/errors.js";

/**
 * A from-scratch model of what scripts/kallsyms.c emits, written from its description rather
 * than from the recovery code: 8-byte aligned labels, a 256-entry token table whose printable
 * single characters map to themselves, greedy compression, markers every 256 names,
 * seqs_of_names as big-endian 3-byte indexes in name order.
 */
interface Sym {
  name: string;
  type: string;
  address: bigint;
  percpu?: boolean;
}

type Order = "6.1" | "6.12" | "5.x-absolute";

const tokens: string[] = Array.from({ length: 256 }, (_, i) => {
  if (i >= 0x21 && i <= 0x7e) return String.fromCharCode(i);
  const words = ["_s", "et", "in", "re", "_t", "ys", "an", "__", "on", "er", "de", "vi", "ce", "_p"];
  return words[i % words.length]! + (i >= 0x80 ? "x" : "");
});

function compress(text: string): number[] {
  const out: number[] = [];
  let p = 0;
  while (p < text.length) {
    let best = text.charCodeAt(p);
    let bestLen = 1;
    tokens.forEach((t, i) => {
      if (t.length > bestLen && text.startsWith(t, p)) {
        best = i;
        bestLen = t.length;
      }
    });
    out.push(best);
    p += bestLen;
  }
  return out;
}

class Writer {
  bytes: number[] = [];
  constructor(readonly base: bigint) {}
  get here(): number {
    return this.bytes.length;
  }
  align(): number {
    while ((this.base + BigInt(this.bytes.length)) % 8n !== 0n) this.bytes.push(0);
    return this.here;
  }
  u8(...v: number[]): void {
    this.bytes.push(...v);
  }
  u16(v: number): void {
    this.bytes.push(v & 0xff, v >>> 8);
  }
  u32(v: number): void {
    for (let k = 0; k < 4; k++) this.bytes.push((v >>> (8 * k)) & 0xff);
  }
  u64(v: bigint): void {
    for (let k = 0n; k < 8n; k++) this.bytes.push(Number((BigInt.asUintN(64, v) >> (8n * k)) & 0xffn));
  }
  junk(n: number, seed: number): void {
    let x = seed;
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      this.bytes.push(x >>> 24);
    }
  }
}

function build(symbols: Sym[], order: Order, base: bigint, relativeBase: bigint) {
  const w = new Writer(base);
  w.junk(4099, 7);
  const n = symbols.length;
  const at: Record<string, number> = {};
  const offsets = () => {
    at.offsets = w.align();
    for (const s of symbols) {
      // ABSOLUTE_PERCPU: per-CPU values as they are, everything else as relative_base - 1 - offset.
      w.u32(s.percpu ? Number(s.address) : Number(BigInt.asIntN(32, relativeBase - s.address - 1n)) >>> 0);
    }
    at.relative_base = w.align();
    w.u64(relativeBase);
  };
  const names = () => {
    at.num_syms = w.align();
    w.u32(n);
    at.names = w.align();
    const marks: number[] = [];
    symbols.forEach((s, i) => {
      if (i % 256 === 0) marks.push(w.here - at.names!);
      const c = compress(s.type + s.name);
      if (c.length > 127) w.u8((c.length & 0x7f) | 0x80, c.length >> 7);
      else w.u8(c.length);
      w.u8(...c);
    });
    at.markers = w.align();
    for (const m of marks) order === "5.x-absolute" ? w.u64(BigInt(m)) : w.u32(m);
  };
  const seqs = () => {
    at.seqs_of_names = w.align();
    const idx = symbols.map((_, i) => i).sort((a, b) => (symbols[a]!.name < symbols[b]!.name ? -1 : 1));
    for (const i of idx) w.u8(i >> 16, (i >> 8) & 0xff, i & 0xff);
  };
  const tokenTables = () => {
    at.token_table = w.align();
    const offs: number[] = [];
    for (const t of tokens) {
      offs.push(w.here - at.token_table!);
      w.u8(...Buffer.from(t, "latin1"), 0);
    }
    at.token_index = w.align();
    for (const o of offs) w.u16(o);
  };
  if (order === "6.1") {
    offsets();
    names();
    seqs();
    tokenTables();
  } else if (order === "6.12") {
    names();
    tokenTables();
    offsets();
    seqs();
  } else {
    at.addresses = w.align();
    for (const s of symbols) w.u64(s.address);
    names();
    tokenTables();
  }
  w.junk(3001, 11);
  return { image: Uint8Array.from(w.bytes), at };
}

const BASE = 0xffffffff82000004n; // deliberately not 8-aligned: labels align by address
const TEXT = 0xffffffff81000000n;

function sampleSymbols(): Sym[] {
  const syms: Sym[] = [
    { name: "fixed_percpu_data", type: "A", address: 0n, percpu: true },
    { name: "__per_cpu_start", type: "A", address: 0n, percpu: true },
    { name: "cpu_number", type: "A", address: 0x1f0n, percpu: true },
    { name: "_text", type: "T", address: TEXT },
    { name: "startup_64", type: "T", address: TEXT },
  ];
  for (let i = 0; i < 700; i++) {
    const name = i % 97 === 5 ? "dup_static" : `sys_call_${i.toString(36)}_entry`;
    syms.push({ name, type: i % 3 === 0 ? "t" : "T", address: TEXT + 0x1000n + BigInt(i) * 0x40n });
  }
  syms.push({ name: `rust_${"very_long_".repeat(20)}name`, type: "T", address: TEXT + 0x20_0000n });
  syms.push({ name: "_end", type: "B", address: TEXT + 0x300_0000n });
  return syms;
}

function expectSame(got: ReturnType<typeof recoverKallsymsWithLayout>["table"], want: Sym[]): void {
  assert.equal(got.size, want.length);
  got.symbols.forEach((s, i) => {
    const w = want[i]!;
    assert.deepEqual([s.name, s.type, s.address], [w.name, w.type, w.address], `symbol ${i}`);
  });
}

describe("kallsyms recovery on hand-built tables", () => {
  for (const order of ["6.1", "6.12"] as const) {
    test(`${order} order, ABSOLUTE_PERCPU offsets`, () => {
      const syms = sampleSymbols();
      const { image, at } = build(syms, order, BASE, TEXT);
      const { table, layout } = recoverKallsymsWithLayout(image, BASE);
      expectSame(table, syms);
      assert.equal(layout.addressing, "relative-absolute-percpu");
      assert.equal(layout.numSymsAddr, BASE + BigInt(at.num_syms!));
      assert.equal(layout.tokenTableAddr, BASE + BigInt(at.token_table!));
      assert.equal(layout.offsetsAddr, BASE + BigInt(at.offsets!));
      assert.equal(layout.seqsOfNamesAddr, BASE + BigInt(at.seqs_of_names!));
      assert.equal(layout.relativeBase, TEXT);
      assert.deepEqual(
        table.symbols.filter((s) => s.absolute).map((s) => s.name),
        ["fixed_percpu_data", "__per_cpu_start", "cpu_number"],
      );
      assert.equal(table.findAddress("dup_static"), TEXT + 0x1000n + 5n * 0x40n);
      assert.equal(table.symbols.filter((s) => s.name === "dup_static").length, 8);
    });
  }

  test("percpuBase moves only the per-CPU offsets", () => {
    const syms = sampleSymbols();
    const { image } = build(syms, "6.12", BASE, TEXT);
    const { table } = recoverKallsymsWithLayout(image, BASE, { percpuBase: 0xffff888000000000n });
    assert.equal(table.findAddress("cpu_number"), 0xffff8880000001f0n);
    assert.equal(table.findAddress("_text"), TEXT);
  });

  test("5.x order with absolute u64 addresses and u64 markers", () => {
    const syms = sampleSymbols().filter((s) => !s.percpu);
    const { image, at } = build(syms, "5.x-absolute", BASE, TEXT);
    const { table, layout } = recoverKallsymsWithLayout(image, BASE);
    expectSame(table, syms);
    assert.equal(layout.addressing, "absolute");
    assert.equal(layout.markerSize, 8);
    assert.equal(layout.addressesAddr, BASE + BigInt(at.addresses!));
    assert.equal(layout.seqsOfNamesAddr, undefined);
  });
});

describe("kallsyms recovery on hostile tables", { timeout: 10_000 }, () => {
  const syms = sampleSymbols();
  const { image, at } = build(syms, "6.1", BASE, TEXT);
  const patched = (off: number, v: number) => {
    const copy = image.slice();
    new DataView(copy.buffer).setUint32(off, v, true);
    return copy;
  };

  test("absurd or wrong num_syms", () => {
    assert.throws(() => recoverKallsymsWithLayout(patched(at.num_syms!, 0xffff_ffff), BASE), GuestDataError);
    assert.throws(() => recoverKallsymsWithLayout(patched(at.num_syms!, MAX_SYMS + 1), BASE), GuestDataError);
    assert.throws(
      () => recoverKallsymsWithLayout(patched(at.num_syms!, syms.length + 1), BASE),
      GuestDataError,
    );
    assert.throws(
      () => recoverKallsymsWithLayout(patched(at.num_syms!, syms.length - 1), BASE),
      GuestDataError,
    );
  });

  test("a wrong marker", () => {
    assert.throws(() => recoverKallsymsWithLayout(patched(at.markers! + 4, 12345), BASE), GuestDataError);
  });

  test("a token index that disagrees with the token table", () => {
    const copy = image.slice();
    copy[at.token_index! + 2 * 0x61] = copy[at.token_index! + 2 * 0x61]! + 1;
    assert.throws(() => recoverKallsymsWithLayout(copy, BASE), GuestDataError);
  });

  test("truncated tables", () => {
    for (const end of [at.names! + 50, at.token_table! + 300, at.token_index! + 100]) {
      assert.throws(
        () => recoverKallsymsWithLayout(image.subarray(0, end), BASE),
        GuestDataError,
        `cut at ${end}`,
      );
    }
  });

  test("a name whose length runs past the token table", () => {
    const copy = image.slice();
    copy[at.names!] = 0xff;
    copy[at.names! + 1] = 0xff;
    assert.throws(() => recoverKallsymsWithLayout(copy, BASE), GuestDataError);
  });

  test("no table at all: empty, random, or a flood of fake anchors", () => {
    assert.throws(() => recoverKallsymsWithLayout(new Uint8Array(0), BASE), GuestDataError);
    const random = new Uint8Array(8 << 20);
    let x = 1;
    for (let i = 0; i < random.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      random[i] = x >>> 24;
    }
    assert.throws(() => recoverKallsymsWithLayout(random, BASE), GuestDataError);
    const anchors = Buffer.alloc(8 << 20);
    const digits = Buffer.from("0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00", "latin1");
    for (let p = 0; p + digits.length <= anchors.length; p += 64) digits.copy(anchors, p);
    assert.throws(() => recoverKallsymsWithLayout(anchors, BASE), GuestDataError);
  });
});
