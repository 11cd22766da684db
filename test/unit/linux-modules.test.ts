/**
 * /proc/modules over crafted memory, on the 6.1 (core_layout/init_layout) and 6.12 (mem[])
 * layouts. Expected lines are literal: the first three of each kernel copied from the Debian
 * test guests' own /proc/modules, the others written by hand from m_show() and
 * print_unload_info() (kernel/module/procfs.c) and module_flags() (kernel/module/main.c).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  formatModulesLine,
  listModules,
  sysfsModules,
  unlistedModuleWarnings,
} from "../../src/os/linux/modules.js";
import { type VirtAddr, va } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel } from "../support/crafted-kernel.js";
import { Builder, LAYOUT_6_1, LAYOUT_6_12, type LayoutTable, fakeLayout } from "../support/crafted-maps.js";

interface ModSpec {
  name: string;
  /** enum module_state: 0 live, 1 coming, 2 going, 3 unformed. */
  state?: number;
  base: bigint;
  /** 6.1: [core_layout.size, init_layout.size]; 6.12: mem[0..6].size. */
  sizes: number[];
  /** Other mem[] bases (6.12), to show which one is the text. */
  bases?: bigint[];
  refcnt?: number;
  init?: boolean;
  exit?: boolean;
  taints?: bigint;
}

class Modules {
  readonly k = new CraftedKernel();
  readonly b: Builder;
  readonly head: VirtAddr;
  constructor(readonly table: LayoutTable) {
    this.b = new Builder(this.k, table);
    this.head = this.k.alloc(16);
    this.k.listInit(this.head);
    this.k.symbols.table.set("modules", this.head);
  }

  /** list_add_rcu(&mod->list, &modules): the newest module comes first. */
  add(s: ModSpec): VirtAddr {
    const { b, k } = this;
    const m = b.obj("module");
    k.writeI32(m + b.off("module.state"), s.state ?? 0);
    k.write(m + b.off("module.name"), Buffer.from(s.name));
    k.listInit(m + b.off("module.source_list"));
    k.listInit(m + b.off("module.target_list"));
    if (this.table.offsets["module.refcnt"] !== undefined)
      k.writeI32(m + b.off("module.refcnt"), s.refcnt ?? 1);
    b.set(m, "module.init", s.init === false ? 0n : 0xffffffffc0001000n);
    b.set(m, "module.exit", s.exit === false ? 0n : 0xffffffffc0002000n);
    b.set(m, "module.taints", s.taints ?? 0n);
    if (this.table.offsets["module.mem"] !== undefined) {
      const stride = BigInt(this.table.sizes.module_memory!);
      s.sizes.forEach((size, i) => {
        const mem = m + b.off("module.mem") + stride * BigInt(i);
        k.writeU32(mem + b.off("module_memory.size"), size);
        b.set(mem, "module_memory.base", i === 0 ? s.base : (s.bases?.[i] ?? 0n));
      });
    } else {
      const core = m + b.off("module.core_layout");
      b.set(core, "module_layout.base", s.base);
      k.writeU32(core + b.off("module_layout.size"), s.sizes[0]!);
      k.writeU32(m + b.off("module.init_layout") + b.off("module_layout.size"), s.sizes[1] ?? 0);
    }
    this.listAdd(this.head, m + b.off("module.list"));
    return m;
  }

  /** add_module_usage(user, used): `use` goes on used->source_list and user->target_list. */
  uses(user: VirtAddr, used: VirtAddr): void {
    const { b, k } = this;
    const use = b.obj("module_use");
    b.set(use, "module_use.source", user);
    b.set(use, "module_use.target", used);
    this.listAdd(used + b.off("module.source_list"), use + b.off("module_use.source_list"));
    this.listAdd(user + b.off("module.target_list"), use + b.off("module_use.target_list"));
  }

  private listAdd(head: bigint, node: bigint): void {
    const first = this.k.kernel.readU64(head as VirtAddr);
    this.k.writeU64(node, first);
    this.k.writeU64(node + 8n, head);
    this.k.writeU64(first + 8n, node);
    this.k.writeU64(head, node);
  }

  lines(table = this.table): string[] {
    return listModules(this.k.context(fakeLayout(table))).map(formatModulesLine);
  }
}

describe("/proc/modules", () => {
  test("6.1: core_layout + init_layout sizes, core_layout.base, as the guest printed them", () => {
    const m = new Modules(LAYOUT_6_1);
    m.add({ name: "crc7", base: 0xffffffffc051b000n, sizes: [16384, 0] });
    m.add({ name: "crc_itu_t", base: 0xffffffffc0522000n, sizes: [12288, 4096] });
    m.add({ name: "dummy", base: 0xffffffffc0529000n, sizes: [16384, 0] });
    assert.deepEqual(m.lines(), [
      "dummy 16384 0 - Live 0xffffffffc0529000",
      "crc_itu_t 16384 0 - Live 0xffffffffc0522000",
      "crc7 16384 0 - Live 0xffffffffc051b000",
    ]);
  });

  test("6.12: the sum of all seven mem[] sizes, mem[MOD_TEXT].base, as the guest printed them", () => {
    const m = new Modules(LAYOUT_6_12);
    const bases = [0n, 0xffffffffc0100000n, 0xffffffffc0200000n, 0xffffffffc0300000n];
    m.add({ name: "crc7", base: 0xffffffffc02c8000n, sizes: [4096, 4096, 4096, 0, 0, 0, 0], bases });
    m.add({
      name: "crc_itu_t",
      base: 0xffffffffc02ce000n,
      sizes: [4096, 2048, 2048, 0, 2048, 1024, 1024],
      bases,
    });
    m.add({ name: "dummy", base: 0xffffffffc02d4000n, sizes: [4096, 4096, 2048, 2048, 0, 0, 0], bases });
    assert.deepEqual(m.lines(), [
      "dummy 12288 0 - Live 0xffffffffc02d4000",
      "crc_itu_t 12288 0 - Live 0xffffffffc02ce000",
      "crc7 12288 0 - Live 0xffffffffc02c8000",
    ]);
  });

  for (const table of [LAYOUT_6_1, LAYOUT_6_12]) {
    const sizes = table === LAYOUT_6_1 ? [40960, 0] : [20480, 8192, 8192, 4096, 0, 0, 0];
    test(`users, [permanent], states and taints (${table === LAYOUT_6_1 ? "6.1" : "6.12"})`, () => {
      const m = new Modules(table);
      const lib = m.add({ name: "libcrc32c", base: 0xffffffffc0400000n, sizes, refcnt: 3 });
      m.add({ name: "half", state: 3, base: 0xffffffffc0700000n, sizes });
      const btrfs = m.add({ name: "btrfs", base: 0xffffffffc0500000n, sizes, refcnt: 1 });
      const nft = m.add({ name: "nf_tables", base: 0xffffffffc0600000n, sizes, refcnt: 1 });
      m.uses(btrfs, lib);
      m.uses(nft, lib);
      m.add({ name: "pinned", base: 0xffffffffc0800000n, sizes, exit: false });
      m.add({
        name: "vboxdrv",
        base: 0xffffffffc0900000n,
        sizes,
        refcnt: 2,
        taints: (1n << 12n) | (1n << 13n),
      });
      m.add({ name: "newmod", state: 1, base: 0xffffffffc0a00000n, sizes, taints: 1n << 13n });
      m.add({ name: "oldmod", state: 2, base: 0xffffffffc0b00000n, sizes, refcnt: 0 });
      m.add({ name: "nvidia", base: 0xffffffffc0c00000n, sizes, taints: 1n | (1n << 12n) | (1n << 13n) });
      assert.deepEqual(m.lines(), [
        "nvidia 40960 0 - Live 0xffffffffc0c00000 (POE)",
        "oldmod 40960 -1 - Unloading 0xffffffffc0b00000",
        "newmod 40960 0 - Loading 0xffffffffc0a00000 (E+)",
        "vboxdrv 40960 1 - Live 0xffffffffc0900000 (OE)",
        "pinned 40960 0 [permanent], Live 0xffffffffc0800000",
        "nf_tables 40960 0 - Live 0xffffffffc0600000",
        "btrfs 40960 0 - Live 0xffffffffc0500000",
        "libcrc32c 40960 2 nf_tables,btrfs, Live 0xffffffffc0400000",
      ]);
    });
  }

  test("without CONFIG_MODULE_UNLOAD (no refcnt) the two columns are dashes", () => {
    const offsets = Object.fromEntries(
      Object.entries(LAYOUT_6_12.offsets).filter(([key]) => key !== "module.refcnt"),
    );
    const table = { ...LAYOUT_6_12, offsets };
    const m = new Modules(table);
    m.add({ name: "dummy", base: 0xffffffffc02d4000n, sizes: [12288, 0, 0, 0, 0, 0, 0] });
    assert.deepEqual(m.lines(), ["dummy 12288 - - Live 0xffffffffc02d4000"]);
  });

  test("a modules list that loops is a GuestDataError", () => {
    const m = new Modules(LAYOUT_6_1);
    const a = m.add({ name: "a", base: 0xffffffffc0000000n, sizes: [4096, 0] });
    m.add({ name: "b", base: 0xffffffffc0010000n, sizes: [4096, 0] });
    // a is last in the list: point its next back at b instead of the head.
    const first = m.k.kernel.readU64(m.head);
    m.k.writeU64(a + m.b.off("module.list"), first);
    assert.throws(() => m.lines(), GuestDataError);
  });

  test("a module_use list that loops: the module stays, without users, with a warning", () => {
    const m = new Modules(LAYOUT_6_12);
    const lib = m.add({ name: "lib", base: 0xffffffffc0000000n, sizes: [4096, 0, 0, 0, 0, 0, 0] });
    const user = m.add({ name: "user", base: 0xffffffffc0010000n, sizes: [4096, 0, 0, 0, 0, 0, 0] });
    m.uses(user, lib);
    m.uses(user, lib);
    const src = lib + m.b.off("module.source_list");
    const firstUse = m.k.kernel.readU64(src as VirtAddr);
    const secondUse = m.k.kernel.readU64(firstUse as VirtAddr);
    m.k.writeU64(secondUse, firstUse);
    const rows = listModules(m.k.context(fakeLayout(LAYOUT_6_12)));
    assert.deepEqual(
      rows.map((r) => [r.name, r.usedBy]),
      [
        ["user", []],
        ["lib", []],
      ],
    );
    assert.equal(rows[0]!.warnings, undefined);
    assert.match(rows[1]!.warnings?.[0] ?? "", /users unreadable: module_use.source_list list loops/);
  });
});

describe("sysfs against the modules list", () => {
  /** kset.list at 0; module_kobject: kobj (kobject, entry at 8) at 0, mod at 64. */
  const table: LayoutTable = {
    ...LAYOUT_6_12,
    offsets: {
      ...LAYOUT_6_12.offsets,
      "kset.list": 0,
      "kobject.entry": 8,
      "module_kobject.kobj": 0,
      "module_kobject.mod": 64,
    },
  };

  /** A module_kset holding a module_kobject for each of `mods` (0n: built-in parameters only). */
  function sysfs(m: Modules, mods: readonly bigint[]): void {
    const kset = m.k.alloc(64);
    m.k.listInit(kset);
    for (const mod of mods) {
      const mk = m.k.alloc(128);
      m.k.writeU64(mk + 64n, mod);
      const last = m.k.kernel.readU64(va(kset + 8n));
      m.k.writeU64(mk + 8n, kset);
      m.k.writeU64(mk + 16n, last);
      m.k.writeU64(last, mk + 8n);
      m.k.writeU64(kset + 8n, mk + 8n);
    }
    const variable = m.k.alloc(8);
    m.k.writeU64(variable, kset);
    m.k.symbols.table.set("module_kset", variable);
  }

  test("a module list_del'd from the modules list but left in sysfs is named; a sound guest gives nothing", () => {
    const m = new Modules(table);
    const sizes = [4096, 0, 0, 0, 0, 0, 0];
    const crc7 = m.add({ name: "crc7", base: 0xffffffffc02c8000n, sizes });
    const dummy = m.add({ name: "dummy", base: 0xffffffffc02d4000n, sizes });
    sysfs(m, [0n, crc7, dummy]);
    const ctx = m.k.context(fakeLayout(table));
    assert.deepEqual(
      sysfsModules(ctx).map((x) => x.name),
      ["crc7", "dummy"],
    );
    assert.deepEqual(unlistedModuleWarnings(ctx, listModules(ctx)), []);
    // list_del(&dummy->list): the newest module, right after the head.
    const node = dummy + BigInt(table.offsets["module.list"]!);
    const next = m.k.kernel.readU64(va(node));
    m.k.writeU64(m.head, next);
    m.k.writeU64(next + 8n, m.head);
    assert.deepEqual(
      listModules(ctx).map((x) => x.name),
      ["crc7"],
    );
    assert.deepEqual(unlistedModuleWarnings(ctx, listModules(ctx)), [
      `module dummy (struct module 0x${dummy.toString(16)}) is in sysfs (module_kset) but not on the modules list: unlinked from it`,
    ]);
  });

  test("without module_kset in the symbols there is no second view, and no warning", () => {
    const m = new Modules(table);
    m.add({ name: "crc7", base: 0xffffffffc02c8000n, sizes: [4096, 0, 0, 0, 0, 0, 0] });
    const ctx = m.k.context(fakeLayout(table));
    assert.deepEqual(sysfsModules(ctx), []);
  });
});
