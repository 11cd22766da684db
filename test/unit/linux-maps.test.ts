/**
 * Maple tree, d_path and /proc/<pid>/maps readers over crafted memory. The expected /proc lines
 * are literal text: some copied from Debian guests' own /proc/<pid>/maps (6.1.0-50 and
 * 6.12.111 under QEMU), the rest written by hand from show_map_vma()'s format.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { dPath } from "../../src/os/linux/dpath.js";
import { mapleTreeEntries } from "../../src/os/linux/maple-tree.js";
import { type ListVmasOptions, formatMapsLine, listVmas } from "../../src/os/linux/maps.js";
import { type VirtAddr, va } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel } from "../support/crafted-kernel.js";
import {
  Builder,
  LAYOUT_6_1,
  LAYOUT_6_12,
  type LayoutTable,
  MAPLE_ARANGE_64,
  MAPLE_LEAF_64,
  MAPLE_RANGE_64,
  ULONG_MAX,
  Vfs,
  fakeLayout,
} from "../support/crafted-maps.js";

function setup(table: LayoutTable = LAYOUT_6_1) {
  const k = new CraftedKernel();
  const b = new Builder(k, table);
  return { k, b, ctx: () => k.context(fakeLayout(table)) };
}

const entries = (ctx: ReturnType<CraftedKernel["context"]>, root: bigint, opts = {}) =>
  [...mapleTreeEntries(ctx, root, opts)].map((e) => [e.index, e.last, e.entry]);

const P = (n: number) => 0xffff888000100000n + BigInt(n) * 0x100n; // stand-in entry pointers

describe("maple tree", () => {
  test("an empty tree and a root that is a single entry", () => {
    const { ctx } = setup();
    assert.deepEqual(entries(ctx(), 0n), []);
    assert.deepEqual(entries(ctx(), P(1)), [[0n, 0n, P(1)]]);
  });

  test("depth 1: one leaf_64 with gaps, end from the metadata", () => {
    const { b, ctx } = setup();
    const root =
      b.node(MAPLE_LEAF_64, [
        { last: 0x3fffn, value: 0n },
        { last: 0x4fffn, value: P(1) },
        { last: 0x5fffn, value: P(2) },
        { last: 0x8fffn, value: 0n },
        { last: 0x9fffn, value: P(3) },
        { last: ULONG_MAX, value: 0n },
      ]) | 2n;
    assert.deepEqual(entries(ctx(), root), [
      [0x4000n, 0x4fffn, P(1)],
      [0x5000n, 0x5fffn, P(2)],
      [0x9000n, 0x9fffn, P(3)],
    ]);
  });

  test("depth 2: arange_64 over a full leaf (16 slots, no metadata) and a 15-slot leaf", () => {
    const { b, ctx } = setup();
    const full = Array.from({ length: 16 }, (_, i) => ({ last: BigInt(i * 2 + 1), value: P(i) }));
    const leaf1 = b.node(MAPLE_LEAF_64, full, { meta: false });
    // 15 used slots: the last pivot equals the node max, which is how ma_data_end() finds the end.
    const fifteen = Array.from({ length: 15 }, (_, i) => ({ last: 40n + BigInt(i), value: P(100 + i) }));
    fifteen[14] = { last: ULONG_MAX, value: P(114) };
    const leaf2 = b.node(MAPLE_LEAF_64, fifteen, { meta: false });
    const root =
      b.node(MAPLE_ARANGE_64, [
        { last: 31n, value: leaf1 },
        { last: ULONG_MAX, value: leaf2 },
      ]) | 2n;
    const want: [bigint, bigint, bigint][] = full.map((s, i) => [BigInt(i * 2), s.last, P(i)]);
    want.push([32n, 40n, P(100)]);
    for (let i = 1; i < 14; i++) want.push([40n + BigInt(i), 40n + BigInt(i), P(100 + i)]);
    want.push([54n, ULONG_MAX, P(114)]);
    assert.deepEqual(entries(ctx(), root), want);
  });

  test("depth 3: arange_64 → range_64 → leaf_64, 150 entries in index order", () => {
    const { b, ctx } = setup();
    const list = Array.from({ length: 150 }, (_, i) => ({
      start: 0x10000n * BigInt(i + 1),
      last: 0x10000n * BigInt(i + 1) + 0xfffn,
      value: P(i),
    }));
    // 301 slots (gaps included) → 26 leaves of 12 → 2 range_64 nodes → 1 arange_64 root.
    const root = b.tree(list, {
      leafSlots: 12,
      levels: [
        { type: MAPLE_RANGE_64, fanout: 16 },
        { type: MAPLE_ARANGE_64, fanout: 10 },
      ],
    });
    assert.equal(Number((root >> 3n) & 0xfn), MAPLE_ARANGE_64);
    assert.deepEqual(
      entries(ctx(), root),
      list.map((e) => [e.start, e.last, e.value]),
    );
    assert.throws(() => entries(ctx(), root, { maxDepth: 2 }), /deeper than 2/);
    assert.throws(() => entries(ctx(), root, { maxNodes: 10 }), /more than 10 nodes/);
    assert.throws(() => entries(ctx(), root, { maxEntries: 100 }), /more than 100 entries/);
  });

  test("the builder's generic tree and a dense node", () => {
    const { b, ctx } = setup(LAYOUT_6_12);
    const list = Array.from({ length: 40 }, (_, i) => ({
      start: 0x400000n + 0x2000n * BigInt(i),
      last: 0x400fffn + 0x2000n * BigInt(i),
      value: P(i),
    }));
    const root = b.tree(list, { leafSlots: 7, levels: [{ type: MAPLE_RANGE_64, fanout: 3 }] });
    assert.deepEqual(
      entries(ctx(), root),
      list.map((e) => [e.start, e.last, e.value]),
    );
    const dense = b.dense([0n, P(7), 0n, P(8)]) | 2n;
    assert.deepEqual(entries(ctx(), dense), [
      [1n, 1n, P(7)],
      [3n, 3n, P(8)],
    ]);
  });

  test("XA_ZERO_ENTRY markers in a leaf are skipped", () => {
    const { b, ctx } = setup();
    const root =
      b.node(MAPLE_LEAF_64, [
        { last: 9n, value: 0x406n },
        { last: 19n, value: P(1) },
        { last: ULONG_MAX, value: 0n },
      ]) | 2n;
    assert.deepEqual(entries(ctx(), root), [[10n, 19n, P(1)]]);
  });

  test("falls back to the constant node layout when the layout has no maple types", () => {
    const { b, k } = setup();
    const bare = {
      ...LAYOUT_6_1,
      offsets: Object.fromEntries(
        Object.entries(LAYOUT_6_1.offsets).filter(([key]) => !key.startsWith("maple")),
      ),
    };
    const root =
      b.node(MAPLE_ARANGE_64, [
        {
          last: 99n,
          value: b.node(MAPLE_LEAF_64, [
            { last: 49n, value: 0n },
            { last: 99n, value: P(1) },
          ]),
        },
        {
          last: ULONG_MAX,
          value: b.node(MAPLE_LEAF_64, [
            { last: 199n, value: P(2) },
            { last: ULONG_MAX, value: 0n },
          ]),
        },
      ]) | 2n;
    assert.deepEqual(entries(k.context(fakeLayout(bare)), root), [
      [50n, 99n, P(1)],
      [100n, 199n, P(2)],
    ]);
  });

  test("a node that points back at itself, out-of-order pivots and a dead node are GuestDataError", () => {
    const { b, k, ctx } = setup();
    const leaf = b.node(MAPLE_LEAF_64, [{ last: ULONG_MAX, value: P(1) }]);
    const loop = b.node(MAPLE_ARANGE_64, [
      { last: 99n, value: leaf },
      { last: ULONG_MAX, value: leaf },
    ]);
    // Second child slot: the node itself.
    k.writeU64((loop & ~0xffn) + 80n + 8n, loop);
    assert.throws(() => entries(ctx(), loop | 2n), /twice \(a loop\)/);

    const bad = b.node(MAPLE_LEAF_64, [
      { last: 50n, value: P(1) },
      { last: 20n, value: P(2) },
      { last: ULONG_MAX, value: 0n },
    ]);
    assert.throws(() => entries(ctx(), bad | 2n), GuestDataError);

    const dead = b.node(MAPLE_LEAF_64, [{ last: ULONG_MAX, value: P(1) }]);
    k.writeU64(dead & ~0xffn, (dead & ~0xffn) | 1n);
    assert.throws(() => entries(ctx(), dead | 2n), /dead/);
  });
});

/** The mount tree of the test guests: rootfs, tmpfs on /mnt/t, tmpfs on /mnt/t/sub/m2. */
function mounts(v: Vfs) {
  const rootDentry = v.dentry("/");
  const rootMnt = v.mount(rootDentry);
  const mnt = v.dentry("mnt", rootDentry);
  const t = v.dentry("t", mnt);
  const tRoot = v.dentry("/");
  const tMnt = v.mount(tRoot, { parent: rootMnt, mountpoint: t });
  const sub = v.dentry("sub", tRoot);
  const m2 = v.dentry("m2", sub);
  const m2Root = v.dentry("/");
  const m2Mnt = v.mount(m2Root, { parent: tMnt, mountpoint: m2 });
  const tmp = v.dentry("tmp", rootDentry);
  return { rootDentry, rootMnt, tRoot, tMnt, m2Root, m2Mnt, tmp };
}

describe("d_path", () => {
  test("through two mounts, at a mount root, at the global root, and below a given root", () => {
    const { b, ctx } = setup();
    const v = new Vfs(b);
    const m = mounts(v);
    const sleep = v.dentry("sleep", m.m2Root);
    const c = ctx();
    assert.equal(dPath(c, m.m2Mnt, sleep), "/mnt/t/sub/m2/sleep");
    assert.equal(dPath(c, m.m2Mnt, m.m2Root), "/mnt/t/sub/m2");
    assert.equal(dPath(c, m.tMnt, m.tRoot), "/mnt/t");
    assert.equal(dPath(c, m.rootMnt, m.rootDentry), "/");
    assert.equal(dPath(c, m.m2Mnt, sleep, { root: { mnt: m.tMnt, dentry: m.tRoot } }), "/sub/m2/sleep");
  });

  test("deleted files, a dentry that escaped its mount, names with odd bytes", () => {
    const { b, ctx } = setup();
    const v = new Vfs(b);
    const m = mounts(v);
    const gone = v.dentry("gone", m.tmp);
    const c = ctx();
    assert.equal(
      dPath(c, m.rootMnt, v.dentry("sleep", gone, { unhashed: true })),
      "/tmp/gone/sleep (deleted)",
    );
    // An unhashed root is not "unlinked" (d_unlinked needs !IS_ROOT): no suffix.
    assert.equal(dPath(c, m.rootMnt, v.dentry("orphan")), "/");
    assert.equal(dPath(c, m.rootMnt, v.dentry("sp ace", m.tmp)), "/tmp/sp ace");
    // d_name.len bytes, but prepend_name() stops at a NUL.
    const nul = v.dentry(Buffer.from("ab\0cd"), m.tmp);
    assert.equal(dPath(c, m.rootMnt, nul), "/tmp/ab");
  });

  test("d_dname pseudo files: simple_dname and anon_inodefs_dname", () => {
    const { b, k, ctx } = setup();
    const v = new Vfs(b);
    k.symbols.table.set("simple_dname", 0xffffffff813aa760n);
    k.symbols.table.set("anon_inodefs_dname", 0xffffffff813c5b50n);
    const ops = (fn: bigint) => {
      const o = b.obj("dentry_operations");
      b.set(o, "dentry_operations.d_dname", fn);
      return o;
    };
    const shmRoot = v.dentry("/");
    const shm = v.mount(shmRoot);
    const c = ctx();
    assert.equal(
      dPath(c, shm, v.dentry("dev/zero", undefined, { op: ops(0xffffffff813aa760n) })),
      "/dev/zero (deleted)",
    );
    assert.equal(
      dPath(c, shm, v.dentry("memfd:jit", undefined, { op: ops(0xffffffff813aa760n) })),
      "/memfd:jit (deleted)",
    );
    assert.equal(
      dPath(c, shm, v.dentry("[io_uring]", undefined, { op: ops(0xffffffff813c5b50n) })),
      "anon_inode:[io_uring]",
    );
    // A mounted pseudo filesystem's root is named by the mount, not by d_dname.
    const mountedRoot = v.dentry("/", undefined, { op: ops(0xffffffff813aa760n) });
    assert.equal(dPath(c, v.mount(mountedRoot), mountedRoot), "/");
  });

  test("a parent chain that loops is a GuestDataError", () => {
    const { b, ctx } = setup();
    const v = new Vfs(b);
    const m = mounts(v);
    const a = v.dentry("a", m.tmp);
    const d = v.dentry("d", a);
    b.set(a, "dentry.d_parent", d);
    assert.throws(() => dPath(ctx(), m.rootMnt, d), GuestDataError);
  });
});

// VMA flags as the kernel sets them: VM_READ 1, VM_WRITE 2, VM_EXEC 4, VM_SHARED 8,
// VM_MAYREAD 0x10, VM_MAYWRITE 0x20, VM_MAYEXEC 0x40, VM_MAYSHARE 0x80, VM_GROWSDOWN 0x100.
const R = 0x1n | 0x70n;
const RX = 0x5n | 0x70n;
const RW = 0x3n | 0x70n;
const STACK = RW | 0x100n;

interface VmaSpec {
  start: bigint;
  end: bigint;
  flags: bigint;
  pgoff?: bigint;
  file?: bigint;
  ops?: bigint;
  priv?: bigint;
  noMm?: boolean;
}

class Process {
  readonly b: Builder;
  readonly mm: VirtAddr;
  readonly task: VirtAddr;
  constructor(
    b: Builder,
    mmFields: { brk: bigint; startBrk: bigint; startStack: bigint; vsyscall?: boolean },
  ) {
    this.b = b;
    this.mm = b.obj("mm_struct");
    this.task = b.k.alloc(4096, 64);
    b.set(this.task, "task_struct.mm", this.mm);
    b.set(this.mm, "mm_struct.brk", mmFields.brk);
    b.set(this.mm, "mm_struct.start_brk", mmFields.startBrk);
    b.set(this.mm, "mm_struct.start_stack", mmFields.startStack);
    if (mmFields.vsyscall) b.k.writeU8(this.mm + b.off("mm_struct.context.flags"), 2);
  }

  vma(s: VmaSpec): VirtAddr {
    const b = this.b;
    const v = b.obj("vm_area_struct");
    b.set(v, "vm_area_struct.vm_start", s.start);
    b.set(v, "vm_area_struct.vm_end", s.end);
    if (!s.noMm) b.set(v, "vm_area_struct.vm_mm", this.mm);
    b.set(v, "vm_area_struct.vm_flags", s.flags);
    b.set(v, "vm_area_struct.vm_pgoff", s.pgoff ?? 0n);
    b.set(v, "vm_area_struct.vm_file", s.file ?? 0n);
    b.set(v, "vm_area_struct.vm_ops", s.ops ?? 0n);
    b.set(v, "vm_area_struct.vm_private_data", s.priv ?? 0n);
    return v;
  }

  /** Stores the VMAs in mm_mt, as the kernel does, and sets map_count. */
  maple(specs: VmaSpec[], treeOpts = {}): VirtAddr[] {
    const vmas = specs.map((s) => this.vma(s));
    const root = this.b.tree(
      specs.map((s, i) => ({ start: s.start, last: s.end - 1n, value: vmas[i]! })),
      treeOpts,
    );
    this.b.set(this.mm, "mm_struct.mm_mt", 0n);
    this.b.k.writeU64(this.mm + this.b.off("mm_struct.mm_mt") + this.b.off("maple_tree.ma_root"), root);
    this.b.k.writeU32(this.mm + this.b.off("mm_struct.map_count"), specs.length);
    return vmas;
  }
}

/** special_mapping_vmops and gate_vma_ops in crafted memory, with the symbols that name them. */
function specialMappings(b: Builder) {
  const k = b.k;
  const nameFn = 0xffffffff812d5230n;
  const gateFn = 0xffffffff81004f50n;
  k.symbols.table.set("special_mapping_name", nameFn);
  k.symbols.table.set("gate_vma_name", gateFn);
  const ops = (fn: bigint) => {
    const o = b.obj("vm_operations_struct");
    b.set(o, "vm_operations_struct.name", fn);
    return o;
  };
  const special = ops(nameFn);
  k.symbols.table.set("special_mapping_vmops", special);
  // 6.1's legacy_special_mapping_vmops: close and fault only, no name.
  const legacy = b.obj("vm_operations_struct");
  k.symbols.table.set("legacy_special_mapping_vmops", legacy);
  const named = (name: string) => {
    const sm = b.obj("vm_special_mapping");
    b.set(sm, "vm_special_mapping.name", k.allocString(name));
    return sm;
  };
  return { special, legacy, named, gateOps: ops(gateFn) };
}

function banner(k: CraftedKernel, text: string): void {
  k.symbols.table.set("linux_banner", k.allocString(text));
}

const lines = (ctx: ReturnType<CraftedKernel["context"]>, task: VirtAddr, opts: ListVmasOptions = {}) =>
  listVmas(ctx, { task }, opts).map(formatMapsLine);

/** The busybox `sleep` the test guests ran from a tmpfs two mounts deep (Debian 6.1.0-50). */
function guestSleep(table: LayoutTable, fileFor: (v: Vfs, m: ReturnType<typeof mounts>) => bigint) {
  const { b, k, ctx } = setup(table);
  const v = new Vfs(b);
  const m = mounts(v);
  const sm = specialMappings(b);
  const file = fileFor(v, m);
  const p = new Process(b, { brk: 0x12ced000n, startBrk: 0x12ccb000n, startStack: 0x7ffe86574f30n });
  p.maple([
    { start: 0x400000n, end: 0x401000n, flags: R, file, pgoff: 0n },
    { start: 0x401000n, end: 0x585000n, flags: RX, file, pgoff: 1n },
    { start: 0x585000n, end: 0x5db000n, flags: R, file, pgoff: 0x185n },
    { start: 0x5db000n, end: 0x5e2000n, flags: R, file, pgoff: 0x1dan },
    { start: 0x5e2000n, end: 0x5e5000n, flags: RW, file, pgoff: 0x1e1n },
    { start: 0x5e5000n, end: 0x5ec000n, flags: RW },
    { start: 0x12ccb000n, end: 0x12ced000n, flags: RW },
    { start: 0x7ffe86555000n, end: 0x7ffe86576000n, flags: STACK },
    { start: 0x7ffe865f6000n, end: 0x7ffe865fa000n, flags: R, ops: sm.special, priv: sm.named("[vvar]") },
    { start: 0x7ffe865fa000n, end: 0x7ffe865fc000n, flags: RX, ops: sm.special, priv: sm.named("[vdso]") },
  ]);
  return { k, b, v, m, p, ctx };
}

describe("/proc/<pid>/maps", () => {
  test("6.1: equals the guest's own maps for a binary two mounts deep", () => {
    const g = guestSleep(LAYOUT_6_1, (v, m) => {
      const ino = v.inode(v.sb(0x16), 2n);
      return v.file(m.m2Mnt, v.dentry("sleep", m.m2Root), ino);
    });
    banner(
      g.k,
      "Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2025-01-01)\n",
    );
    assert.deepEqual(lines(g.ctx(), g.p.task), [
      "00400000-00401000 r--p 00000000 00:16 2                                  /mnt/t/sub/m2/sleep",
      "00401000-00585000 r-xp 00001000 00:16 2                                  /mnt/t/sub/m2/sleep",
      "00585000-005db000 r--p 00185000 00:16 2                                  /mnt/t/sub/m2/sleep",
      "005db000-005e2000 r--p 001da000 00:16 2                                  /mnt/t/sub/m2/sleep",
      "005e2000-005e5000 rw-p 001e1000 00:16 2                                  /mnt/t/sub/m2/sleep",
      "005e5000-005ec000 rw-p 00000000 00:00 0 ",
      "12ccb000-12ced000 rw-p 00000000 00:00 0                                  [heap]",
      "7ffe86555000-7ffe86576000 rw-p 00000000 00:00 0                          [stack]",
      "7ffe865f6000-7ffe865fa000 r--p 00000000 00:00 0                          [vvar]",
      "7ffe865fa000-7ffe865fc000 r-xp 00000000 00:00 0                          [vdso]",
    ]);
  });

  test("6.12: a deleted executable, as the guest printed it", () => {
    const g = guestSleep(LAYOUT_6_12, (v, m) => {
      const ino = v.inode(v.sb(0x2), 312n);
      const gone = v.dentry("gone", m.tmp);
      return v.file(m.rootMnt, v.dentry("sleep", gone, { unhashed: true }), ino);
    });
    banner(g.k, "Linux version 6.12.111+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP\n");
    const got = lines(g.ctx(), g.p.task);
    assert.equal(
      got[0],
      "00400000-00401000 r--p 00000000 00:02 312                                /tmp/gone/sleep (deleted)",
    );
    assert.equal(
      got[4],
      "005e2000-005e5000 rw-p 001e1000 00:02 312                                /tmp/gone/sleep (deleted)",
    );
    assert.equal(got[6], "12ccb000-12ced000 rw-p 00000000 00:00 0                                  [heap]");
  });

  test("a kernel thread has no maps", () => {
    const { b, ctx } = setup();
    const task = b.k.alloc(4096, 64);
    assert.deepEqual(listVmas(ctx(), { task }), []);
  });

  test("[heap] when brk == start_brk next to the bss: 6.1 inclusive, 6.12 exclusive", () => {
    for (const [table, version, heap] of [
      [LAYOUT_6_1, "6.1.0-50-amd64", true],
      [LAYOUT_6_12, "6.12.111+deb12-amd64", false],
    ] as const) {
      const { b, k, ctx } = setup(table);
      banner(k, `Linux version ${version} (x) #1\n`);
      const p = new Process(b, { brk: 0x5ec000n, startBrk: 0x5ec000n, startStack: 0x7ffd00001000n });
      p.maple([
        { start: 0x5e5000n, end: 0x5ec000n, flags: RW },
        { start: 0x7ffd00000000n, end: 0x7ffd00021000n, flags: STACK },
      ]);
      assert.deepEqual(lines(ctx(), p.task), [
        heap
          ? "005e5000-005ec000 rw-p 00000000 00:00 0                                  [heap]"
          : "005e5000-005ec000 rw-p 00000000 00:00 0 ",
        "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]",
      ]);
      // The rule can be forced either way.
      const forced = lines(ctx(), p.task, { heapRule: heap ? "exclusive" : "inclusive" })[0]!;
      assert.equal(forced.endsWith("[heap]"), !heap);
    }
  });

  test("shared memory, a huge file offset, a newline in a name, legacy special mappings, [vsyscall]", () => {
    const { b, k, ctx } = setup();
    const v = new Vfs(b);
    const m = mounts(v);
    const sm = specialMappings(b);
    k.symbols.table.set("simple_dname", 0xffffffff813aa760n);
    const dname = b.obj("dentry_operations");
    b.set(dname, "dentry_operations.d_dname", 0xffffffff813aa760n);
    const shmSb = v.sb(0x1);
    const zero = v.file(
      v.mount(v.dentry("/")),
      v.dentry("dev/zero", undefined, { op: dname }),
      v.inode(shmSb, 5n),
    );
    const sda = v.sb((8 << 20) | 17);
    const big = v.file(m.rootMnt, v.dentry("db", m.tmp), v.inode(sda, 4000000001n));
    const nl = v.file(m.rootMnt, v.dentry("a\nb", m.tmp), v.inode(sda, 12n));
    const huge = v.file(m.rootMnt, v.dentry("huge", m.tmp), v.inode(sda, (1n << 64n) - 1n));
    // The gate VMA: static in the kernel, no mm, shown after every VMA of a 64-bit process.
    const gate = new Process(b, { brk: 0n, startBrk: 0n, startStack: 0n }).vma({
      start: 0xffffffffff600000n,
      end: 0xffffffffff601000n,
      flags: 0x4n,
      ops: sm.gateOps,
      noMm: true,
    });
    k.symbols.table.set("gate_vma", gate);
    const mode = k.alloc(8);
    k.writeU32(mode, 1); // XONLY
    k.symbols.table.set("vsyscall_mode", mode);
    const p = new Process(b, {
      brk: 0x1000000n,
      startBrk: 0x1000000n,
      startStack: 0x7ffc00000100n,
      vsyscall: true,
    });
    p.maple([
      { start: 0x7f0000000000n, end: 0x7f0000100000n, flags: RW | 0x88n, file: zero },
      { start: 0x7f1000000000n, end: 0x7f1000004000n, flags: R | 0x88n, file: big, pgoff: 0x123456789n },
      { start: 0x7f2000000000n, end: 0x7f2000001000n, flags: RX, file: nl, pgoff: 3n },
      { start: 0x7f3000000000n, end: 0x7f3000002000n, flags: RX, ops: sm.legacy, priv: sm.named("[legacy]") },
      { start: 0x7f4000000000n, end: 0x7f4000001000n, flags: R, file: huge, pgoff: 0xfffffffffffffn },
      { start: 0x7ffc00000000n, end: 0x7ffc00021000n, flags: STACK },
    ]);
    const want = [
      "7f0000000000-7f0000100000 rw-s 00000000 00:01 5                          /dev/zero (deleted)",
      "7f1000000000-7f1000004000 r--s 123456789000 08:11 4000000001             /tmp/db",
      // The kernel prints the newline as \012; shown as every guest string is, its backslash doubles.
      "7f2000000000-7f2000001000 r-xp 00003000 08:11 12                         /tmp/a\\\\012b",
      "7f3000000000-7f3000002000 r-xp 00000000 00:00 0 ",
      // Longer than the 72-column pad: seq_pad() adds only its one space.
      "7f4000000000-7f4000001000 r--p fffffffffffff000 08:11 18446744073709551615  /tmp/huge",
      "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]",
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
    ];
    assert.deepEqual(lines(ctx(), p.task), want);
    assert.deepEqual(lines(ctx(), p.task, { includeGate: false }), want.slice(0, -1));
    k.writeU32(mode, 2); // vsyscall=none
    assert.deepEqual(lines(ctx(), p.task), want.slice(0, -1));
  });

  test("6.12 overlay backing files show the user path and its inode", () => {
    const { b, k, ctx } = setup(LAYOUT_6_12);
    banner(k, "Linux version 6.12.111+deb12-amd64 (x) #1\n");
    const v = new Vfs(b);
    const m = mounts(v);
    const upper = v.sb((0 << 20) | 0x2d);
    const ovl = v.sb((0 << 20) | 0x30);
    const userDentry = v.dentry("sleep", v.dentry("bin", m.m2Root), { inode: v.inode(ovl, 77n) });
    const f = v.file(m.rootMnt, v.dentry("real", m.tmp), v.inode(upper, 9n), {
      struct: "backing_file",
      mode: 1 << 24,
    });
    b.set(f + b.off("backing_file.user_path"), "path.mnt", m.m2Mnt);
    b.set(f + b.off("backing_file.user_path"), "path.dentry", userDentry);
    const plain = v.file(m.rootMnt, v.dentry("plain", m.tmp), v.inode(upper, 10n));
    const p = new Process(b, { brk: 0n, startBrk: 0n, startStack: 0n });
    p.maple([
      { start: 0x400000n, end: 0x401000n, flags: R, file: f },
      { start: 0x500000n, end: 0x501000n, flags: R, file: plain },
    ]);
    assert.deepEqual(lines(ctx(), p.task), [
      "00400000-00401000 r--p 00000000 00:30 77                                 /mnt/t/sub/m2/bin/sleep",
      "00500000-00501000 r--p 00000000 00:2d 10                                 /tmp/plain",
    ]);
  });

  test("a big mm: 300 VMAs across a three-level tree, in order", () => {
    const { b, ctx } = setup(LAYOUT_6_1);
    const p = new Process(b, { brk: 0n, startBrk: 0n, startStack: 0n });
    const specs = Array.from({ length: 300 }, (_, i) => ({
      start: 0x10000000n + BigInt(i) * 0x3000n,
      end: 0x10001000n + BigInt(i) * 0x3000n,
      flags: i % 2 ? RW : R,
    }));
    p.maple(specs, { leafSlots: 16 });
    const rows = listVmas(ctx(), { mm: p.mm });
    assert.equal(rows.length, 300);
    assert.equal(formatMapsLine(rows[299]!), "10381000-10382000 rw-p 00000000 00:00 0 ");
    assert.deepEqual(
      rows.map((r) => r.start),
      specs.map((s) => s.start),
    );
  });

  test("pre-6.1 kernels: the mmap/vm_next list", () => {
    // A 5.10-style layout: vm_next/vm_prev and the rb node come before vm_mm, no mm_mt.
    const offsets = Object.fromEntries(
      Object.entries(LAYOUT_6_1.offsets).filter(([key]) => key !== "mm_struct.mm_mt"),
    );
    const table: LayoutTable = {
      ...LAYOUT_6_1,
      offsets: {
        ...offsets,
        "mm_struct.mmap": 0,
        "vm_area_struct.vm_next": 16,
        "vm_area_struct.vm_mm": 64,
        "vm_area_struct.vm_flags": 80,
        "vm_area_struct.vm_ops": 144,
        "vm_area_struct.vm_pgoff": 152,
        "vm_area_struct.vm_file": 160,
        "vm_area_struct.vm_private_data": 168,
      },
      sizes: { ...LAYOUT_6_1.sizes, vm_area_struct: 200 },
    };
    const { b, ctx } = setup(table);
    const p = new Process(b, { brk: 0x2000000n, startBrk: 0x1ff0000n, startStack: 0x7ff000010000n });
    const a = p.vma({ start: 0x1ff0000n, end: 0x2000000n, flags: RW });
    const c = p.vma({ start: 0x7ff000000000n, end: 0x7ff000021000n, flags: STACK });
    b.set(p.mm, "mm_struct.mmap", a);
    b.set(a, "vm_area_struct.vm_next", c);
    b.k.writeU32(p.mm + b.off("mm_struct.map_count"), 2);
    assert.deepEqual(lines(ctx(), p.task), [
      "01ff0000-02000000 rw-p 00000000 00:00 0                                  [heap]",
      "7ff000000000-7ff000021000 rw-p 00000000 00:00 0                          [stack]",
    ]);
    b.set(c, "vm_area_struct.vm_next", a);
    assert.throws(() => listVmas(ctx(), { task: p.task }), /loops/);
  });

  test("guest data that breaks the rules is a GuestDataError", () => {
    const { b, k, ctx } = setup();
    const p = new Process(b, { brk: 0n, startBrk: 0n, startStack: 0n });
    const vmas = p.maple([
      { start: 0x1000n, end: 0x2000n, flags: R },
      { start: 0x3000n, end: 0x4000n, flags: R },
    ]);
    k.writeU32(p.mm + b.off("mm_struct.map_count"), 0);
    assert.throws(() => listVmas(ctx(), { mm: p.mm }, { slack: 1 }), /more VMAs than map_count/);
    assert.equal(listVmas(ctx(), { mm: p.mm }, { slack: 2 }).length, 2);
    // The tree says 0x3000-0x3fff, the VMA says otherwise.
    b.set(vmas[1]!, "vm_area_struct.vm_start", 0x3800n);
    assert.throws(() => listVmas(ctx(), { mm: p.mm }), /stored for/);
    b.set(vmas[1]!, "vm_area_struct.vm_start", 0x3000n);
    // A file that cannot be followed: the row stays, its file columns unknown, with a warning.
    b.set(vmas[1]!, "vm_area_struct.vm_file", 0x1234n);
    const rows = listVmas(ctx(), { mm: p.mm }, { includeGate: false });
    assert.deepEqual(
      rows.map((r) => [r.start, r.perms, r.dev, r.path, r.kind]),
      [
        [0x1000n, "r--p", "00:00", "", "anon"],
        [0x3000n, "r--p", "?", "?", "file"],
      ],
    );
    assert.equal(rows[0]!.warnings, undefined);
    assert.match(rows[1]!.warnings?.[0] ?? "", /vm_file of VMA .* is not a kernel pointer: 0x1234/);
    assert.throws(() => listVmas(ctx(), { mm: va(0xffff888000000000n) }));
  });

  test("a VMA that cannot be read: its range from the maple tree, a warning, the others intact", () => {
    const { b, k, ctx } = setup();
    const p = new Process(b, { brk: 0n, startBrk: 0n, startStack: 0n });
    const sound = p.vma({ start: 0x1000n, end: 0x2000n, flags: R });
    const after = p.vma({ start: 0x5000n, end: 0x6000n, flags: RW });
    const unmapped = 0xffff888040000000n;
    const root = b.tree([
      { start: 0x1000n, last: 0x1fffn, value: sound },
      { start: 0x3000n, last: 0x3fffn, value: unmapped },
      { start: 0x5000n, last: 0x5fffn, value: after },
    ]);
    b.set(p.mm, "mm_struct.mm_mt", 0n);
    k.writeU64(p.mm + b.off("mm_struct.mm_mt") + b.off("maple_tree.ma_root"), root);
    k.writeU32(p.mm + b.off("mm_struct.map_count"), 3);
    const rows = listVmas(ctx(), { mm: p.mm }, { includeGate: false });
    assert.deepEqual(
      rows.map((r) => [r.start, r.end, r.perms, r.kind]),
      [
        [0x1000n, 0x2000n, "r--p", "anon"],
        [0x3000n, 0x4000n, "----", "unreadable"],
        [0x5000n, 0x6000n, "rw-p", "anon"],
      ],
    );
    assert.match(rows[1]!.warnings?.[0] ?? "", /VMA 0xffff888040000000 is unreadable/);
  });
});
