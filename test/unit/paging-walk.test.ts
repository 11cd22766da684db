import assert from "node:assert/strict";
import { test } from "node:test";
import type { PagingFormat } from "../../src/arch/x86/formats.js";
import {
  X86_32,
  X86_32_NO_PSE,
  X86_64_4LEVEL,
  X86_64_5LEVEL,
  X86_PAE,
  findTranslation,
  formatFromControlRegisters,
  rootFromCr3,
  translate,
} from "../../src/arch/x86/index.js";
import {
  type BuilderMode,
  PTE_NX,
  PTE_P,
  PTE_PS,
  PTE_RW,
  PTE_US,
  PageTableBuilder,
} from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { pa, va } from "../../src/util/address.js";
import { FaultError } from "../../src/util/errors.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const FORMATS: Record<BuilderMode, PagingFormat> = {
  "4-level": X86_64_4LEVEL,
  "5-level": X86_64_5LEVEL,
  pae: X86_PAE,
  "32-bit": X86_32,
};

function setup(mode: BuilderMode) {
  const mem = new BufferPhysicalMemory();
  const b = new PageTableBuilder(mem, mode);
  const format = FORMATS[mode];
  return { mem, b, format, tr: (addr: bigint) => translate(mem, format, b.root, va(addr)) };
}

function assertFault(fn: () => unknown, layer: string, address: bigint, text: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FaultError, `expected FaultError, got ${String(e)}`);
    assert.equal(e.layer, layer);
    assert.equal(e.address, address);
    assert.match(e.message, new RegExp(text));
    return true;
  });
}

test("walker agrees with 4-level tables written byte by byte from the SDM layout", () => {
  // 0xffffffff81000123: PML4 index 511, PDPT 510, PD 8, PT 0, offset 0x123 (worked out by hand).
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(0, 0x8000);
  ram.writeBigUInt64LE(0x2000n | 0x7n, 0x1000 + 511 * 8);
  ram.writeBigUInt64LE(0x3000n | 0x7n, 0x2000 + 510 * 8);
  ram.writeBigUInt64LE(0x4000n | 0x7n, 0x3000 + 8 * 8);
  ram.writeBigUInt64LE(0x5000n | 0x3n, 0x4000);
  const t = translate(mem, X86_64_4LEVEL, pa(0x1000), va(0xffffffff81000123n));
  assert.deepEqual(t, {
    phys: 0x5123n,
    pageSize: 4096,
    writable: true,
    user: false,
    executable: true,
    level: 1,
  });
});

test("walker agrees with 32-bit tables written byte by byte (4 KiB and 4 MiB pages)", () => {
  // 0xc0123456: PD index 0x300, PT index 0x123. 0xc0800000 is PD index 0x302.
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(0, 0x4000);
  ram.writeUInt32LE(0x2000 | 0x7, 0x1000 + 0x300 * 4);
  ram.writeUInt32LE(0x3000 | 0x1, 0x2000 + 0x123 * 4);
  ram.writeUInt32LE(0x01c00000 | 0x83, 0x1000 + 0x302 * 4);
  const small = translate(mem, X86_32, pa(0x1000), va(0xc0123456n));
  assert.equal(small.phys, 0x3456n);
  assert.equal(small.writable, false);
  const big = translate(mem, X86_32, pa(0x1000), va(0xc0923456n));
  assert.equal(big.phys, 0x01d23456n);
  assert.equal(big.pageSize, 4 * MiB);
  assert.equal(big.level, 2);
});

const CASES: { mode: BuilderMode; va: bigint; pa: bigint; size: number; level: number }[] = [
  { mode: "4-level", va: 0x7f12_3456_7000n, pa: 0x1234_5000n, size: 4 * KiB, level: 1 },
  { mode: "4-level", va: 0xffff_8880_0020_0000n, pa: 0x4000_0000n, size: 2 * MiB, level: 2 },
  { mode: "4-level", va: 0xffff_8881_4000_0000n, pa: 0x1_8000_0000n, size: GiB, level: 3 },
  { mode: "5-level", va: 0x00ff_1234_5678_9000n, pa: 0x2345_6000n, size: 4 * KiB, level: 1 },
  { mode: "5-level", va: 0xff11_0000_0060_0000n, pa: 0x4020_0000n, size: 2 * MiB, level: 2 },
  { mode: "5-level", va: 0xff11_0000_c000_0000n, pa: 0x40_0000_0000n, size: GiB, level: 3 },
  { mode: "pae", va: 0xc012_3000n, pa: 0x3_0000_5000n, size: 4 * KiB, level: 1 },
  { mode: "pae", va: 0xc060_0000n, pa: 0x2_0040_0000n, size: 2 * MiB, level: 2 },
  { mode: "32-bit", va: 0x0804_8000n, pa: 0x0030_0000n, size: 4 * KiB, level: 1 },
  { mode: "32-bit", va: 0xc040_0000n, pa: 0x0100_0000n, size: 4 * MiB, level: 2 },
  // PSE-36: a 4 MiB page above 4 GiB.
  { mode: "32-bit", va: 0xc080_0000n, pa: 0x2_0040_0000n, size: 4 * MiB, level: 2 },
];

for (const c of CASES) {
  test(`${c.mode}: ${c.size / KiB} KiB page at 0x${c.va.toString(16)}`, () => {
    const { b, tr } = setup(c.mode);
    b.map(c.va, c.pa, c.size, { user: true });
    for (const off of [0n, 0x7n, BigInt(c.size) / 2n + 0x123n, BigInt(c.size) - 1n]) {
      const t = tr(c.va + off);
      assert.equal(t.phys, c.pa + off, `offset 0x${off.toString(16)}`);
      assert.equal(t.pageSize, c.size);
      assert.equal(t.level, c.level);
      assert.equal(t.user, true);
      assert.equal(t.writable, true);
    }
    // The neighbouring page is not mapped.
    assert.throws(() => tr(c.va + BigInt(c.size)), FaultError);
  });
}

const LEVEL_NAMES: Record<BuilderMode, string[]> = {
  "4-level": ["PML4E", "PDPTE", "PDE", "PTE"],
  "5-level": ["PML5E", "PML4E", "PDPTE", "PDE", "PTE"],
  pae: ["PDPTE", "PDE", "PTE"],
  "32-bit": ["PDE", "PTE"],
};

for (const mode of Object.keys(LEVEL_NAMES) as BuilderMode[]) {
  test(`${mode}: a non-present entry at each level is named in the fault`, () => {
    const names = LEVEL_NAMES[mode];
    for (let depth = 0; depth < names.length; depth++) {
      const { mem, b, format, tr } = setup(mode);
      const addr = mode === "pae" || mode === "32-bit" ? 0xc0001000n : 0x7fff_0000_1000n;
      b.map(addr, 0x5000n, 4096);
      assert.equal(tr(addr + 8n).phys, 0x5008n);
      b.updateEntry(addr, depth, (e) => e & ~PTE_P);
      assertFault(
        () => tr(addr + 8n),
        format.name,
        addr + 8n,
        `^${format.name}: ${names[depth]} not present`,
      );
      assert.equal(findTranslation(mem, format, b.root, va(addr + 8n)), undefined);
    }
  });
}

test("non-canonical addresses fault before any table is read", () => {
  const { b, tr } = setup("4-level");
  b.map(0xffff_8000_0000_0000n, 0x5000n, 4096);
  assert.equal(tr(0xffff_8000_0000_0010n).phys, 0x5010n);
  for (const bad of [
    0x0000_8000_0000_0000n,
    0xffff_7fff_ffff_f000n,
    0x0001_0000_0000_0000n,
    0x8000_0000_0000_0000n,
  ]) {
    assertFault(() => tr(bad), "x86-64 4-level", bad, "non-canonical address");
  }
  assertFault(
    () => tr(0x0000_7fff_ffff_f000n),
    "x86-64 4-level",
    0x0000_7fff_ffff_f000n,
    "PML4E not present",
  );

  const five = setup("5-level");
  five.b.map(0x0000_8000_0000_0000n, 0x6000n, 4096);
  // Bit 47 is an ordinary address bit under LA57.
  assert.equal(five.tr(0x0000_8000_0000_0004n).phys, 0x6004n);
  for (const bad of [0x0100_0000_0000_0000n, 0xfeff_ffff_ffff_f000n, 0x0200_0000_0000_0000n]) {
    assertFault(() => five.tr(bad), "x86-64 5-level", bad, "non-canonical address");
  }
  assertFault(
    () => five.tr(0xff00_0000_0000_0000n),
    "x86-64 5-level",
    0xff00_0000_0000_0000n,
    "PML5E not present",
  );

  const pae = setup("pae");
  assertFault(() => pae.tr(0x1_0000_0000n), "x86 PAE", 0x1_0000_0000n, "beyond the 32-bit virtual space");
});

const PERM_MODES: BuilderMode[] = ["4-level", "5-level", "pae", "32-bit"];

for (const mode of PERM_MODES) {
  test(`${mode}: W, U/S and NX combine across every level`, () => {
    const addr = mode === "pae" || mode === "32-bit" ? 0x0804_8000n : 0x7f00_0000_0000n;
    const depths = LEVEL_NAMES[mode].length;
    // PAE PDPTEs carry no access rights, so only the levels below them count.
    const first = mode === "pae" ? 1 : 0;
    const base = () => {
      const s = setup(mode);
      s.b.map(addr, 0x5000n, 4096, { user: true, writable: true });
      return s;
    };
    const full = base().tr(addr);
    assert.deepEqual([full.writable, full.user, full.executable], [true, true, true]);
    for (let d = first; d < depths; d++) {
      const ro = base();
      ro.b.updateEntry(addr, d, (e) => e & ~PTE_RW);
      assert.deepEqual([ro.tr(addr).writable, ro.tr(addr).user, ro.tr(addr).executable], [false, true, true]);
      const sup = base();
      sup.b.updateEntry(addr, d, (e) => e & ~PTE_US);
      assert.deepEqual(
        [sup.tr(addr).writable, sup.tr(addr).user, sup.tr(addr).executable],
        [true, false, true],
      );
      if (mode === "32-bit") continue;
      const nx = base();
      nx.b.updateEntry(addr, d, (e) => e | PTE_NX);
      assert.deepEqual([nx.tr(addr).writable, nx.tr(addr).user, nx.tr(addr).executable], [true, true, false]);
    }
  });
}

test("32-bit paging never reports a page as non-executable", () => {
  const { b, tr } = setup("32-bit");
  b.map(0x1000n, 0x5000n, 4096, { nx: true, writable: false });
  const t = tr(0x1000n);
  assert.equal(t.executable, true);
  assert.equal(t.writable, false);
});

test("a PS bit in a PML4E is a reserved-bit fault", () => {
  const { b, tr } = setup("4-level");
  b.map(0x1000n, 0x5000n, 4096);
  b.updateEntry(0x1000n, 0, (e) => e | PTE_PS);
  assertFault(() => tr(0x1000n), "x86-64 4-level", 0x1000n, "PML4E has the reserved PS bit set");
});

test("a table in unbacked physical memory faults with that level's name", () => {
  const { b, tr } = setup("4-level");
  b.map(0x1000n, 0x5000n, 4096);
  b.updateEntry(0x1000n, 2, () => 0x7700_0000n | PTE_P | PTE_RW);
  assertFault(() => tr(0x1000n), "x86-64 4-level", 0x1000n, "PTE at physical 0x77000008 unreadable");
});

test("32-bit paging without CR4.PSE ignores PS and walks on to a page table", () => {
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(0, 0x4000);
  // PD at 0x2000. PDE 0 has PS set and points at 0x1000 (bit 12 is PAT for a 4 MiB page, so the
  // large page is at 0); read as a page table, 0x1000 maps page 1 at 0x3000.
  ram.writeUInt32LE(0x1000 | 0x83, 0x2000);
  ram.writeUInt32LE(0x3000 | 0x3, 0x1000 + 4);
  assert.equal(translate(mem, X86_32, pa(0x2000), va(0x1010n)).phys, 0x1010n);
  assert.equal(translate(mem, X86_32_NO_PSE, pa(0x2000), va(0x1010n)).phys, 0x3010n);
});

test("rootFromCr3 strips PCID, the no-flush bit, and with KPTI the user-half bit", () => {
  const f = X86_64_4LEVEL;
  assert.equal(rootFromCr3(0x1234_5000n | 0x18n, { pcide: false, format: f }), 0x1234_5000n);
  assert.equal(rootFromCr3((1n << 63n) | 0x1234_5000n | 0x5n, { pcide: true, format: f }), 0x1234_5000n);
  assert.equal(
    rootFromCr3(0x1234_5000n | 0x805n, { pcide: true, format: f, kptiKernel: true }),
    0x1234_4000n,
  );
  assert.equal(rootFromCr3(0x1234_4000n, { pcide: true, format: f, kptiKernel: true }), 0x1234_4000n);
  // Without kptiKernel the user half stays selected.
  assert.equal(rootFromCr3(0x1234_5000n, { pcide: true, format: f }), 0x1234_5000n);
  // PAE's PDPT is 32-byte aligned: bits 11:5 are address bits there; PWT/PCD (bits 3, 4) are not.
  assert.equal(rootFromCr3(0x0009_0038n, { pcide: false, format: X86_PAE }), 0x0009_0020n);
});

test("KPTI: the kernel is reachable only through CR3 & ~0x1fff", () => {
  const mem = new BufferPhysicalMemory();
  const b = new PageTableBuilder(mem, "4-level");
  const userPgd = b.allocTable();
  assert.equal(userPgd, b.root + 0x1000n, "builder allocates the 8 KiB PGD pair");
  const kernelVa = 0xffff_ffff_8100_0000n;
  const userVa = 0x0000_5555_5555_4000n;
  b.map(kernelVa, 0x0100_0000n, 2 * MiB);
  b.map(userVa, 0x0020_0000n, 4096, { user: true });
  // The user PGD shares the user half only.
  mem.write(pa(userPgd), mem.read(pa(b.root), 2048));
  const cr3 = userPgd | 0x801n; // user PCID has bit 11 set in Linux
  const userRoot = rootFromCr3(cr3, { pcide: true, format: X86_64_4LEVEL });
  const kernRoot = rootFromCr3(cr3, { pcide: true, format: X86_64_4LEVEL, kptiKernel: true });
  assert.equal(translate(mem, X86_64_4LEVEL, userRoot, va(userVa)).phys, 0x0020_0000n);
  assertFault(
    () => translate(mem, X86_64_4LEVEL, userRoot, va(kernelVa)),
    "x86-64 4-level",
    kernelVa,
    "PML4E",
  );
  assert.equal(translate(mem, X86_64_4LEVEL, kernRoot, va(kernelVa + 0x10n)).phys, 0x0100_0010n);
  assert.equal(translate(mem, X86_64_4LEVEL, kernRoot, va(userVa)).phys, 0x0020_0000n);
});

test("PAE walks from a 32-byte-aligned PDPT that is not page aligned", () => {
  const { mem, b } = setup("pae");
  b.map(0xc000_0000n, 0x0020_0000n, 2 * MiB);
  mem.map(0x9000, 0x1000);
  mem.write(pa(0x9020), mem.read(b.root, 32));
  const root = rootFromCr3(0x9020n | 0x18n, { pcide: false, format: X86_PAE });
  assert.equal(translate(mem, X86_PAE, root, va(0xc000_1234n)).phys, 0x0020_1234n);
});

test("formatFromControlRegisters follows CR0.PG, CR4.PAE/PSE/LA57 and EFER.LMA", () => {
  const cr0 = 0x8005_0033n; // PG|AM|WP|NE|ET|MP|PE, as in a Linux guest
  const cr4 = 0x0036_06f0n; // includes PAE and PSE, not LA57
  const efer = 0xd01n; // SCE|LME|LMA|NXE
  assert.equal(formatFromControlRegisters({ cr0, cr4, efer }), X86_64_4LEVEL);
  assert.equal(formatFromControlRegisters({ cr0, cr4: cr4 | 0x1000n, efer }), X86_64_5LEVEL);
  assert.equal(formatFromControlRegisters({ cr0, cr4, efer: 0x800n }), X86_PAE);
  assert.equal(formatFromControlRegisters({ cr0, cr4: 0x10n, efer: 0n }), X86_32);
  assert.equal(formatFromControlRegisters({ cr0, cr4: 0n, efer: 0n }), X86_32_NO_PSE);
  assert.equal(formatFromControlRegisters({ cr0: 0x11n, cr4, efer: 0n }), undefined);
  assert.equal(formatFromControlRegisters({ cr0: 0x6000_0010n, cr4: 0n, efer: 0n }), undefined);
});

test("translateMany fetches every level of many walks in batches, says where each lands, and reads the bytes there", async () => {
  const { CachedPhysicalMemory } = await import("../../src/memory/page-cache.js");
  const { translateMany } = await import("../../src/arch/x86/index.js");
  const mem = new BufferPhysicalMemory();
  const b = new PageTableBuilder(mem, "4-level");
  const data = mem.map(0x1000000, 4 * MiB);
  for (let i = 0; i < data.length; i += 8) data.writeUInt32LE(i, i);
  const addrs = [0x400000n, 0x7ffd12345000n, 0x7f0000200000n];
  addrs.forEach((a, i) => b.map(a, 0x1000000n + BigInt(i) * 0x1000n, 4096, { user: true }));
  b.map(0x40000000n, 0x1200000n, 2 * MiB, { user: true });
  let single = 0;
  let batches = 0;
  const source = Object.assign(Object.create(mem) as BufferPhysicalMemory, {
    read(addr: bigint, length: number) {
      single++;
      return mem.read(pa(addr), length);
    },
    readMany(requests: readonly { addr: bigint; length: number }[]) {
      batches++;
      return requests.map((r) => {
        try {
          return { ok: true as const, data: mem.read(pa(r.addr), r.length) };
        } catch (error) {
          return { ok: false as const, error: error as Error };
        }
      });
    },
  });
  const cached = new CachedPhysicalMemory(source);
  const walks = [...addrs, 0x40001008n, 0x500000000n].map((addr) => ({
    root: b.root,
    addr: addr + 0x10n,
    length: 16,
  }));
  const landed = translateMany(cached, X86_64_4LEVEL, walks);
  assert.ok(batches <= 5, `${batches} batches for 4 levels and the leaves`);
  walks.slice(0, 4).forEach((w, k) => {
    const t = translate(mem, X86_64_4LEVEL, b.root, va(w.addr));
    assert.equal(landed[k]?.phys, t.phys, `walk ${k} lands where translate says`);
    assert.deepEqual(landed[k]?.bytes, mem.read(t.phys, 16), "with the bytes there");
    assert.deepEqual(cached.read(t.phys, 16), mem.read(t.phys, 16));
  });
  assert.equal(landed[4], undefined, "the unmapped address lands nowhere");
  assert.deepEqual(
    translateMany(mem, X86_64_4LEVEL, walks),
    landed,
    "memory that does not batch: the same answers",
  );
  assert.equal(single, 0, "a leaf read went to the source after the prefetch");
  // The unmapped address: its walk stopped, and translating it still reports the fault.
  assert.throws(() => translate(cached, X86_64_4LEVEL, b.root, va(0x500000010n)), FaultError);
});
