import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import type { KernelContext } from "../../src/os/linux/context.js";
/**
 * Crafted guest memory for the maps/modules tests: a kernel direct-map window reached through
 * real x86-64 4-level page tables (or an identity space), a bump allocator in it, and a fake
 * StructLayout with the offsets of the two Debian kernels (copied from each build's BTF).
 */
import { addressBounds } from "../../src/os/linux/walk.js";
import type { StructLayout } from "../../src/symbols/layout.js";
import { type VirtAddr, pa, va } from "../../src/util/address.js";
import { VmsightError } from "../../src/util/errors.js";

export interface LayoutTable {
  /** "struct.member.path" → byte offset. */
  readonly offsets: Readonly<Record<string, number>>;
  readonly sizes: Readonly<Record<string, number>>;
  /** "struct.member" → size in bytes, for the members whose size is asked. */
  readonly members?: Readonly<Record<string, number>>;
  readonly enums?: Readonly<Record<string, number>>;
}

export function fakeLayout(t: LayoutTable, source = "crafted"): StructLayout {
  const find = (s: string, p: string) => t.offsets[`${s}.${p}`];
  return {
    source,
    offsetof(s, p) {
      const v = find(s, p);
      if (v === undefined)
        throw new VmsightError("E_MEMBER_UNKNOWN", `no member ${s}.${p} in the crafted layout`);
      return v;
    },
    findOffset: find,
    sizeof(s) {
      const v = t.sizes[s];
      if (v === undefined) throw new VmsightError("E_MEMBER_UNKNOWN", `no struct ${s} in the crafted layout`);
      return v;
    },
    findSize: (s) => t.sizes[s],
    memberSize: (s, p) => t.members?.[`${s}.${p}`],
    findEnumValue: (n) => {
      const v = t.enums?.[n];
      return v === undefined ? undefined : BigInt(v);
    },
  };
}

const STATE_ENUMS = {
  MODULE_STATE_LIVE: 0,
  MODULE_STATE_COMING: 1,
  MODULE_STATE_GOING: 2,
  MODULE_STATE_UNFORMED: 3,
};

/** Offsets from linux-image-6.1.0-50-amd64's BTF (bpftool btf dump … format c). */
export const LAYOUT_6_1: LayoutTable = {
  offsets: {
    "task_struct.mm": 2272,
    "mm_struct.mm_mt": 0,
    "mm_struct.map_count": 104,
    "mm_struct.brk": 288,
    "mm_struct.start_brk": 280,
    "mm_struct.start_stack": 296,
    "mm_struct.context.flags": 832,
    "maple_tree.ma_root": 8,
    "maple_range_64.pivot": 8,
    "maple_range_64.slot": 128,
    "maple_range_64.meta": 248,
    "maple_arange_64.pivot": 8,
    "maple_arange_64.slot": 80,
    "maple_arange_64.meta": 240,
    "maple_metadata.end": 0,
    "maple_node.slot": 8,
    "vm_area_struct.vm_start": 0,
    "vm_area_struct.vm_end": 8,
    "vm_area_struct.vm_mm": 16,
    "vm_area_struct.vm_flags": 32,
    "vm_area_struct.vm_ops": 96,
    "vm_area_struct.vm_pgoff": 104,
    "vm_area_struct.vm_file": 112,
    "vm_area_struct.vm_private_data": 120,
    "vm_operations_struct.name": 96,
    "vm_special_mapping.name": 0,
    "file.f_path": 16,
    "file.f_inode": 32,
    "file.f_mode": 68,
    "path.mnt": 0,
    "path.dentry": 8,
    "dentry.d_parent": 24,
    "dentry.d_name.len": 36,
    "dentry.d_name.name": 40,
    "dentry.d_hash.pprev": 16,
    "dentry.d_op": 96,
    "dentry.d_inode": 48,
    "dentry_operations.d_dname": 72,
    "mount.mnt": 32,
    "mount.mnt_parent": 16,
    "mount.mnt_mountpoint": 24,
    "vfsmount.mnt_root": 0,
    "inode.i_sb": 40,
    "inode.i_ino": 64,
    "super_block.s_dev": 16,
    "module.state": 0,
    "module.list": 8,
    "module.name": 24,
    "module.refcnt": 856,
    "module.init": 312,
    "module.exit": 848,
    "module.taints": 504,
    "module.source_list": 816,
    "module.target_list": 832,
    "module.core_layout": 320,
    "module.init_layout": 400,
    "module_layout.base": 0,
    "module_layout.size": 8,
    "module_use.source_list": 0,
    "module_use.target_list": 16,
    "module_use.source": 32,
    "module_use.target": 40,
  },
  sizes: {
    task_struct: 9792,
    mm_struct: 1088,
    maple_tree: 24,
    maple_range_64: 256,
    maple_arange_64: 248,
    maple_node: 256,
    vm_area_struct: 152,
    vm_operations_struct: 128,
    vm_special_mapping: 32,
    file: 232,
    path: 16,
    dentry: 192,
    dentry_operations: 128,
    mount: 320,
    vfsmount: 32,
    inode: 632,
    super_block: 1472,
    module: 896,
    module_layout: 80,
    module_use: 48,
  },
  members: { "module.name": 56 },
  enums: STATE_ENUMS,
};

/** Offsets from linux-image-6.12.111+deb12-amd64's BTF. */
export const LAYOUT_6_12: LayoutTable = {
  offsets: {
    "task_struct.mm": 2304,
    "mm_struct.mm_mt": 64,
    "mm_struct.map_count": 160,
    "mm_struct.brk": 352,
    "mm_struct.start_brk": 344,
    "mm_struct.start_stack": 360,
    "mm_struct.context.flags": 1056,
    "maple_tree.ma_root": 8,
    "maple_range_64.pivot": 8,
    "maple_range_64.slot": 128,
    "maple_range_64.meta": 248,
    "maple_arange_64.pivot": 8,
    "maple_arange_64.slot": 80,
    "maple_arange_64.meta": 240,
    "maple_metadata.end": 0,
    "maple_node.slot": 8,
    "vm_area_struct.vm_start": 0,
    "vm_area_struct.vm_end": 8,
    "vm_area_struct.vm_mm": 16,
    "vm_area_struct.vm_flags": 32,
    "vm_area_struct.vm_ops": 112,
    "vm_area_struct.vm_pgoff": 120,
    "vm_area_struct.vm_file": 128,
    "vm_area_struct.vm_private_data": 136,
    "vm_operations_struct.name": 96,
    "vm_special_mapping.name": 0,
    "file.f_path": 64,
    "file.f_inode": 40,
    "file.f_mode": 12,
    "path.mnt": 0,
    "path.dentry": 8,
    "dentry.d_parent": 24,
    "dentry.d_name.len": 36,
    "dentry.d_name.name": 40,
    "dentry.d_hash.pprev": 16,
    "dentry.d_op": 96,
    "dentry.d_inode": 48,
    "dentry.d_sib": 152,
    "dentry_operations.d_dname": 72,
    "mount.mnt": 32,
    "mount.mnt_parent": 16,
    "mount.mnt_mountpoint": 24,
    "vfsmount.mnt_root": 0,
    "inode.i_sb": 40,
    "inode.i_ino": 64,
    "super_block.s_dev": 16,
    "backing_file.file": 0,
    "backing_file.user_path": 184,
    "module.state": 0,
    "module.list": 8,
    "module.name": 24,
    "module.refcnt": 1208,
    "module.init": 312,
    "module.exit": 1200,
    "module.taints": 848,
    "module.source_list": 1168,
    "module.target_list": 1184,
    "module.mem": 320,
    "module_memory.base": 0,
    "module_memory.size": 8,
    "module_use.source_list": 0,
    "module_use.target_list": 16,
    "module_use.source": 32,
    "module_use.target": 40,
  },
  sizes: {
    task_struct: 9792,
    mm_struct: 1344,
    maple_tree: 16,
    maple_range_64: 256,
    maple_arange_64: 248,
    maple_node: 256,
    vm_area_struct: 176,
    vm_operations_struct: 128,
    vm_special_mapping: 40,
    file: 184,
    path: 16,
    dentry: 192,
    dentry_operations: 128,
    mount: 336,
    vfsmount: 32,
    inode: 624,
    super_block: 1408,
    backing_file: 208,
    module: 1280,
    module_memory: 72,
    module_use: 48,
  },
  members: { "module.name": 56, "module.mem": 504 },
  enums: { ...STATE_ENUMS, MOD_TEXT: 0, MOD_MEM_NUM_TYPES: 7 },
};

/** Direct-map base the crafted memory lives at (the non-randomised page_offset_base). */
export const DIRECT_MAP = 0xffff888000000000n;
const RAM_PHYS = 0x400000n;
const TWO_MIB = 2 << 20;

export interface CraftedOptions {
  /** "4-level": reached through real page tables (default); "identity": a segment at the VA. */
  readonly paging?: "4-level" | "identity";
  /** RAM size, a multiple of 2 MiB (default 4 MiB). */
  readonly size?: number;
}

export class CraftedKernel {
  readonly mem = new BufferPhysicalMemory("crafted");
  readonly space: AddressSpace;
  readonly symbols = new Map<string, bigint>();
  private next: bigint;
  private readonly end: bigint;

  constructor(opts: CraftedOptions = {}) {
    const size = opts.size ?? 2 * TWO_MIB;
    const base = DIRECT_MAP + RAM_PHYS;
    if (opts.paging === "identity") {
      this.mem.map(base, size);
      this.space = AddressSpace.identity(this.mem);
    } else {
      this.mem.map(RAM_PHYS, size);
      const tables = new PageTableBuilder(this.mem, "4-level");
      for (let off = 0; off < size; off += TWO_MIB)
        tables.map(base + BigInt(off), RAM_PHYS + BigInt(off), TWO_MIB);
      this.space = new AddressSpace(this.mem, X86_64_4LEVEL, tables.root);
    }
    this.next = base + 0x1000n;
    this.end = base + BigInt(size);
  }

  /** Zeroed guest memory; maple nodes want `align` 256. */
  alloc(size: number, align = 16): VirtAddr {
    const a = BigInt(align);
    const at = (this.next + a - 1n) & ~(a - 1n);
    if (at + BigInt(size) > this.end) throw new Error("crafted kernel memory exhausted");
    this.next = at + BigInt(size);
    return va(at);
  }

  u8(addr: bigint, v: number): void {
    this.space.write(va(addr), Buffer.from([v]));
  }

  u32(addr: bigint, v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.space.write(va(addr), b);
  }

  i32(addr: bigint, v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.space.write(va(addr), b);
  }

  u64(addr: bigint, v: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    this.space.write(va(addr), b);
  }

  bytes(addr: bigint, data: Uint8Array): void {
    this.space.write(va(addr), data);
  }

  /** A NUL-terminated copy of `s` in guest memory. */
  cstring(s: string | Buffer): VirtAddr {
    const b = Buffer.concat([typeof s === "string" ? Buffer.from(s, "utf8") : s, Buffer.from([0])]);
    const at = this.alloc(b.length, 8);
    this.bytes(at, b);
    return at;
  }

  /** A circular list head pointing at itself (INIT_LIST_HEAD). */
  listHead(at: bigint): void {
    this.u64(at, at);
    this.u64(at + 8n, at);
  }

  /** list_add_tail(node, head). */
  listAddTail(head: bigint, node: bigint): void {
    const prev = this.space.readU64(va(head + 8n));
    this.u64(node, head);
    this.u64(node + 8n, prev);
    this.u64(prev, node);
    this.u64(head + 8n, node);
  }

  context(layout: StructLayout): KernelContext {
    const symbols = this.symbols;
    return {
      kernel: this.space,
      layout,
      bounds: addressBounds(X86_64_4LEVEL),
      symbols: {
        findAddress: (n) => symbols.get(n),
        getAddress: (n) => {
          const a = symbols.get(n);
          if (a === undefined) throw new VmsightError("E_SYMBOL_UNKNOWN", `no crafted symbol ${n}`);
          return a;
        },
      },
      pageOffset: DIRECT_MAP,
      userSpace: () => {
        throw new VmsightError("E_NO_PROCESS", "crafted kernels have no user space");
      },
      perCpuOffsets: [],
      directToPhys: (a) => pa(a - DIRECT_MAP),
    };
  }
}

/*
 * Builders for maple trees, VMAs, dentries and mounts. They write structures the way the kernel
 * lays them out (include/linux/maple_tree.h, fs/mount.h) and know nothing of the readers under test.
 */
export const ULONG_MAX = (1n << 64n) - 1n;
export const MAPLE_LEAF_64 = 1;
export const MAPLE_RANGE_64 = 2;
export const MAPLE_ARANGE_64 = 3;
export const MAPLE_DENSE = 0;

/** A node slot: a leaf entry (0 for a gap) covering [.., last], or a child enode. */
export interface NodeSlot {
  readonly last: bigint;
  readonly value: bigint;
}

export class Builder {
  constructor(
    readonly k: CraftedKernel,
    readonly L: LayoutTable,
  ) {}

  off(key: string): bigint {
    const v = this.L.offsets[key];
    if (v === undefined) throw new Error(`test layout lacks ${key}`);
    return BigInt(v);
  }

  size(struct: string): number {
    const v = this.L.sizes[struct];
    if (v === undefined) throw new Error(`test layout lacks sizeof ${struct}`);
    return v;
  }

  obj(struct: string): VirtAddr {
    return this.k.alloc(this.size(struct), 64);
  }

  set(base: bigint, key: string, v: bigint): void {
    this.k.u64(base + this.off(key), v);
  }

  /**
   * A range_64/leaf_64/arange_64 node. Pivots are the slots' `last` values except the final
   * used slot's, which is the node max; `end` goes to the metadata unless the node is full.
   */
  node(type: number, slots: readonly NodeSlot[], opts: { max?: bigint; meta?: boolean } = {}): bigint {
    const at = this.k.alloc(256, 256);
    const arange = type === MAPLE_ARANGE_64;
    const s = arange ? "maple_arange_64" : "maple_range_64";
    const npivots = arange ? 9 : 15;
    const max = opts.max ?? slots[slots.length - 1]!.last;
    this.k.u64(at, at + 0x1000n + 1n); // parent: anything but the node itself
    slots.forEach((slot, i) => {
      this.k.u64(at + this.off(`${s}.slot`) + BigInt(8 * i), slot.value);
      if (i < npivots)
        this.k.u64(at + this.off(`${s}.pivot`) + BigInt(8 * i), i === slots.length - 1 ? max : slot.last);
    });
    if (opts.meta !== false && (arange || slots.length <= npivots)) {
      this.k.u8(at + this.off(`${s}.meta`) + this.off("maple_metadata.end"), slots.length - 1);
    }
    return at | (BigInt(type) << 3n) | 4n;
  }

  dense(values: readonly bigint[]): bigint {
    const at = this.k.alloc(256, 256);
    values.forEach((v, i) => this.k.u64(at + this.off("maple_node.slot") + BigInt(8 * i), v));
    return at | (BigInt(MAPLE_DENSE) << 3n) | 4n;
  }

  /**
   * A whole tree over `entries` (sorted, non-overlapping [start, last] ranges), gaps filled with
   * NULL ranges as mm_mt has them, leaves of at most `leafSlots` slots under parents of the
   * given type and fanout per level (default arange_64, 10). Returns the ma_root value.
   */
  tree(
    entries: readonly { start: bigint; last: bigint; value: bigint }[],
    opts: { leafSlots?: number; levels?: readonly { type: number; fanout: number }[] } = {},
  ): bigint {
    const slots: NodeSlot[] = [];
    let next = 0n;
    for (const e of entries) {
      if (e.start > next) slots.push({ last: e.start - 1n, value: 0n });
      slots.push({ last: e.last, value: e.value });
      next = e.last + 1n;
    }
    if (next !== 0n) slots.push({ last: ULONG_MAX, value: 0n });
    let level = chunk(slots, opts.leafSlots ?? 16).map((c) => ({
      last: c[c.length - 1]!.last,
      value: this.node(MAPLE_LEAF_64, c),
    }));
    const levels = opts.levels ?? [{ type: MAPLE_ARANGE_64, fanout: 10 }];
    for (let depth = 0; level.length > 1; depth++) {
      const { type, fanout } = levels[Math.min(depth, levels.length - 1)]!;
      level = chunk(level, fanout).map((c) => ({ last: c[c.length - 1]!.last, value: this.node(type, c) }));
    }
    return level[0]!.value | 2n;
  }
}

function chunk<T>(xs: readonly T[], n: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

/** Dentries, mounts, inodes and files. */
export class Vfs {
  constructor(readonly b: Builder) {}

  sb(dev: number): VirtAddr {
    const sb = this.b.obj("super_block");
    this.b.k.u32(sb + this.b.off("super_block.s_dev"), dev);
    return sb;
  }

  inode(sb: bigint, ino: bigint): VirtAddr {
    const i = this.b.obj("inode");
    this.b.set(i, "inode.i_sb", sb);
    this.b.set(i, "inode.i_ino", ino);
    return i;
  }

  /** A hashed dentry (or a root, its own parent, when `parent` is undefined). */
  dentry(
    name: string | Buffer,
    parent?: bigint,
    opts: { unhashed?: boolean; op?: bigint; inode?: bigint } = {},
  ): VirtAddr {
    const d = this.b.obj("dentry");
    const bytes = typeof name === "string" ? Buffer.from(name) : name;
    this.b.set(d, "dentry.d_parent", parent ?? d);
    this.b.k.u32(d + this.b.off("dentry.d_name.len"), bytes.length);
    this.b.set(d, "dentry.d_name.name", this.b.k.cstring(bytes));
    this.b.set(d, "dentry.d_hash.pprev", opts.unhashed || parent === undefined ? 0n : d + 0x800n);
    if (opts.op !== undefined) this.b.set(d, "dentry.d_op", opts.op);
    if (opts.inode !== undefined) this.b.set(d, "dentry.d_inode", opts.inode);
    return d;
  }

  /** A `struct mount` with root `root`, mounted on `at` (or its own parent); returns &mount->mnt. */
  mount(root: bigint, at?: { parent: bigint; mountpoint: bigint }): VirtAddr {
    const m = this.b.obj("mount");
    const mnt = m + this.b.off("mount.mnt");
    this.b.set(mnt, "vfsmount.mnt_root", root);
    this.b.set(m, "mount.mnt_parent", at ? at.parent - this.b.off("mount.mnt") : m);
    this.b.set(m, "mount.mnt_mountpoint", at ? at.mountpoint : root);
    return mnt as VirtAddr;
  }

  file(mnt: bigint, dentry: bigint, inode: bigint, opts: { struct?: string; mode?: number } = {}): VirtAddr {
    const f = this.b.k.alloc(this.b.size(opts.struct ?? "file"), 64);
    const p = f + this.b.off("file.f_path");
    this.b.set(p, "path.mnt", mnt);
    this.b.set(p, "path.dentry", dentry);
    this.b.set(f, "file.f_inode", inode);
    if (opts.mode !== undefined) this.b.k.u32(f + this.b.off("file.f_mode"), opts.mode);
    return f;
  }
}
