import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { type PagingFormat, X86_64_4LEVEL, X86_64_5LEVEL } from "../../src/arch/x86/formats.js";
import { PageTableBuilder } from "../../src/arch/x86/page-table-builder.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import type { KernelContext, Symbols } from "../../src/os/linux/context.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import type { StructLayout } from "../../src/symbols/layout.js";
import { type PhysAddr, type VirtAddr, pa, va } from "../../src/util/address.js";
import { FaultError, VmsightError } from "../../src/util/errors.js";

/**
 * A kernel made by hand in a BufferPhysicalMemory, for unit tests of the Linux object model:
 * real 4-level page tables mapping a direct map and a kernel image, a struct layout given as
 * plain data, a symbol table, a bump allocator, and per-process user address spaces.
 *
 * Physical map:
 *   0x00100000  kernel page tables (PageTableBuilder)
 *   0x00400000  user page tables, 128 KiB per address space
 *   0x01000000  heap: slab-like objects reached through the direct map
 *   0x03000000  kernel image (2 MiB): symbols, reached at IMAGE_BASE and through the direct map
 *   0x04000000  module space pages (mapModuleSpace), outside the direct map as vmalloc'd pages are
 * The direct map covers physical 0..64 MiB with 2 MiB pages; physical addresses without a
 * segment there fault like RAM holes. Nothing maps PAGE_OFFSET + 1 GiB and above.
 */

/** A member: [byte offset, size in bytes]. Dotted paths ("name.release") are keys as they are. */
export type MemberSpec = readonly [offset: number, size: number];
export interface StructSpec {
  readonly size: number;
  readonly members: Readonly<Record<string, MemberSpec>>;
}
export type LayoutSpec = Readonly<Record<string, StructSpec>>;

/** StructLayout over a LayoutSpec: the shape a BTF or an offsets profile would give. */
export class FakeLayout implements StructLayout {
  readonly source: string;
  constructor(
    readonly spec: LayoutSpec,
    readonly enums: Readonly<Record<string, bigint>> = {},
    source = "crafted layout",
  ) {
    this.source = source;
  }
  findOffset(struct: string, path: string): number | undefined {
    return this.spec[struct]?.members[path]?.[0];
  }
  offsetof(struct: string, path: string): number {
    const o = this.findOffset(struct, path);
    if (o === undefined)
      throw new VmsightError("E_MEMBER_UNKNOWN", `${struct}.${path} is not in the crafted layout`);
    return o;
  }
  findSize(struct: string): number | undefined {
    return this.spec[struct]?.size;
  }
  sizeof(struct: string): number {
    const s = this.findSize(struct);
    if (s === undefined)
      throw new VmsightError("E_TYPE_UNKNOWN", `struct ${struct} is not in the crafted layout`);
    return s;
  }
  memberSize(struct: string, path: string): number | undefined {
    return this.spec[struct]?.members[path]?.[1];
  }
  findEnumValue(name: string): bigint | undefined {
    return this.enums[name];
  }
}

export class FakeSymbols implements Symbols {
  readonly table = new Map<string, bigint>();
  findAddress(name: string): bigint | undefined {
    return this.table.get(name);
  }
  getAddress(name: string): bigint {
    const a = this.table.get(name);
    if (a === undefined) throw new VmsightError("E_SYMBOL_UNKNOWN", `no kernel symbol named "${name}"`);
    return a;
  }
}

const LIST_HEAD: StructSpec = { size: 16, members: { next: [0, 8], prev: [8, 8] } };

/** Offsets of Debian 6.1.0-50-amd64 (6.1.176), from its BTF. */
export const LINUX_6_1: LayoutSpec = {
  list_head: LIST_HEAD,
  task_struct: {
    size: 9792,
    members: {
      __state: [24, 4],
      flags: [44, 4],
      tasks: [2192, 16],
      mm: [2272, 8],
      exit_state: [2308, 4],
      pid: [2416, 4],
      tgid: [2420, 4],
      real_parent: [2432, 8],
      thread_group: [2592, 16],
      thread_node: [2608, 16],
      set_child_tid: [2632, 8],
      worker_private: [2648, 8],
      real_cred: [2952, 8],
      cred: [2960, 8],
      comm: [2976, 16],
      signal: [3072, 8],
      thread: [5376, 4416],
    },
  },
  signal_struct: { size: 1112, members: { thread_head: [16, 16] } },
  cred: { size: 176, members: { uid: [8, 4], gid: [12, 4], euid: [24, 4] } },
  mm_struct: {
    size: 1088,
    members: { pgd: [72, 8], arg_start: [304, 8], arg_end: [312, 8], env_start: [320, 8], env_end: [328, 8] },
  },
  kthread: { size: 112, members: { data: [24, 8], full_name: [104, 8] } },
  worker: {
    size: 160,
    members: { current_work: [16, 8], pool: [72, 8], desc: [116, 24], rescue_wq: [144, 8] },
  },
  uts_namespace: { size: 432, members: { "name.release": [130, 65], "name.version": [195, 65] } },
};

/** Offsets of Debian 6.12.111+deb12-amd64, from its BTF (thread_group is gone since 6.7). */
export const LINUX_6_12: LayoutSpec = {
  ...LINUX_6_1,
  task_struct: {
    size: 9792,
    members: {
      __state: [24, 4],
      flags: [44, 4],
      tasks: [2224, 16],
      mm: [2304, 8],
      exit_state: [2328, 4],
      pid: [2432, 4],
      tgid: [2436, 4],
      real_parent: [2448, 8],
      thread_node: [2608, 16],
      set_child_tid: [2632, 8],
      worker_private: [2648, 8],
      real_cred: [2952, 8],
      cred: [2960, 8],
      comm: [2976, 16],
      signal: [3072, 8],
      thread: [5376, 4416],
    },
  },
  signal_struct: { size: 1104, members: { thread_head: [16, 16] } },
  cred: { size: 184, members: { uid: [8, 4], gid: [12, 4], euid: [24, 4] } },
  mm_struct: {
    size: 1344,
    members: {
      pgd: [120, 8],
      arg_start: [368, 8],
      arg_end: [376, 8],
      env_start: [384, 8],
      env_end: [392, 8],
    },
  },
  worker: {
    size: 168,
    members: { current_work: [16, 8], pool: [88, 8], desc: [128, 32], rescue_wq: [160, 8] },
  },
};

/**
 * What a small discovered-offsets profile might hold: the old `long state`, the headless
 * thread_group ring, no cred, no kthread pointer, no sizes beyond the members.
 */
export const MINIMAL_PROFILE: LayoutSpec = {
  list_head: LIST_HEAD,
  task_struct: {
    size: 3000,
    members: {
      state: [16, 8],
      flags: [44, 4],
      tasks: [2192, 16],
      mm: [2272, 8],
      pid: [2416, 4],
      tgid: [2420, 4],
      real_parent: [2432, 8],
      thread_group: [2592, 16],
      comm: [2976, 16],
    },
  },
  mm_struct: LINUX_6_1.mm_struct!,
};

export const DEFAULT_PAGE_OFFSET = 0xffff888000000000n;
/** A randomised 5-level direct map as a Debian 6.12 guest under `-cpu max` had it. */
export const LA57_PAGE_OFFSET = 0xff2ffac280000000n;
export const IMAGE_BASE = 0xffffffff81000000n;
const IMAGE_PHYS = 0x3000000n;
const IMAGE_SIZE = 2 << 20;
const HEAP_PHYS = 0x1000000n;
const DIRECT_MAP_SIZE = 64n << 20n;
const USER_TABLES = 0x400000n;
const USER_TABLE_PAGES = 32;
const MAX_USER_SPACES = 16;
const PAGE = 4096n;
const MODULE_PHYS = 0x4000000n;
const MODULE_PHYS_SIZE = 4n << 20n;

export interface CraftedKernelOptions {
  readonly layout?: LayoutSpec;
  readonly heapSize?: number;
  readonly pageOffset?: bigint;
  /** 5: 5-level page tables (CR4.LA57), with the direct map where such kernels put it. */
  readonly levels?: 4 | 5;
}

export type MemberValue = number | bigint | string | Uint8Array;

export class CraftedKernel {
  readonly mem = new BufferPhysicalMemory("crafted kernel");
  readonly layout: FakeLayout;
  readonly symbols = new FakeSymbols();
  readonly pageOffset: bigint;
  readonly kernel: AddressSpace;
  readonly format: PagingFormat;
  private readonly pt: PageTableBuilder;
  private readonly heapEnd: bigint;
  private heapLow = HEAP_PHYS;
  private heapHigh: bigint;
  private imageNext = IMAGE_BASE;
  private userSpaces = 0;
  private modulePhys = MODULE_PHYS;

  constructor(opts: CraftedKernelOptions = {}) {
    this.layout = new FakeLayout(opts.layout ?? LINUX_6_1);
    const five = opts.levels === 5;
    this.format = five ? X86_64_5LEVEL : X86_64_4LEVEL;
    this.pageOffset = opts.pageOffset ?? (five ? LA57_PAGE_OFFSET : DEFAULT_PAGE_OFFSET);
    this.heapEnd = HEAP_PHYS + BigInt(opts.heapSize ?? 16 << 20);
    this.heapHigh = this.heapEnd;
    this.mem.map(HEAP_PHYS, Number(this.heapEnd - HEAP_PHYS), "heap");
    this.mem.map(IMAGE_PHYS, IMAGE_SIZE, "kernel image");
    this.pt = new PageTableBuilder(this.mem, five ? "5-level" : "4-level");
    for (let off = 0n; off < DIRECT_MAP_SIZE; off += 2n << 20n)
      this.pt.map(this.pageOffset + off, off, 2 << 20);
    this.pt.map(IMAGE_BASE, IMAGE_PHYS, IMAGE_SIZE);
    this.kernel = new AddressSpace(this.mem, this.format, this.pt.root);
  }

  /** A kernel address nothing maps (its PDPTE is not present). */
  get unmapped(): VirtAddr {
    return va(this.pageOffset + (1n << 30n));
  }

  /** The kernel as the Linux readers see it; `layout` replaces the crafted one (maps, modules). */
  context(layout: StructLayout = this.layout): KernelContext {
    return {
      kernel: this.kernel,
      layout,
      symbols: this.symbols,
      bounds: addressBounds(this.format),
      pageOffset: this.pageOffset,
      perCpuOffsets: [0n],
      userSpace: (pgd) => new AddressSpace(this.mem, this.format, this.directToPhys(pgd)),
      directToPhys: (addr) => this.directToPhys(addr),
    };
  }

  directToPhys(addr: VirtAddr): PhysAddr {
    const off = BigInt(addr) - this.pageOffset;
    if (off < 0n || off >= DIRECT_MAP_SIZE)
      throw new FaultError("direct map", addr, "outside the crafted direct map");
    return pa(off);
  }

  /** Zeroed heap memory, as kmalloc would give, through the direct map. */
  alloc(size: number, align = 64): VirtAddr {
    const at = roundUp(this.heapLow, BigInt(align));
    if (at + BigInt(size) > this.heapHigh) throw new VmsightError("E_BUILDER", "crafted heap exhausted");
    this.heapLow = at + BigInt(size);
    return va(this.pageOffset + at);
  }

  /** Heap memory ending exactly where RAM ends: any read past `size` faults. */
  allocAtEnd(size: number): VirtAddr {
    const at = this.heapHigh - BigInt(size);
    if (at < this.heapLow) throw new VmsightError("E_BUILDER", "crafted heap exhausted");
    this.heapHigh = at;
    return va(this.pageOffset + at);
  }

  allocPage(): { phys: bigint; virt: VirtAddr } {
    const virt = this.alloc(4096, 4096);
    return { phys: BigInt(virt) - this.pageOffset, virt };
  }

  /** Reserves a kernel-image object and names it. */
  defineSymbol(name: string, size: number, align = 64): VirtAddr {
    const at = roundUp(this.imageNext, BigInt(align));
    if (at + BigInt(size) > IMAGE_BASE + BigInt(IMAGE_SIZE))
      throw new VmsightError("E_BUILDER", "crafted image full");
    this.imageNext = at + BigInt(size);
    this.symbols.table.set(name, at);
    return va(at);
  }

  write(addr: bigint, data: Uint8Array): void {
    this.kernel.write(va(addr), data);
  }

  writeU8(addr: bigint, value: number): void {
    this.write(addr, Buffer.of(value & 0xff));
  }

  writeI32(addr: bigint, value: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    this.write(addr, b);
  }

  writeU32(addr: bigint, value: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(value >>> 0);
    this.write(addr, b);
  }

  writeU64(addr: bigint, value: bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, value));
    this.write(addr, b);
  }

  /** A NUL-terminated string on the heap. */
  allocString(text: string | Uint8Array): VirtAddr {
    const bytes = Buffer.concat([
      typeof text === "string" ? Buffer.from(text, "latin1") : Buffer.from(text),
      Buffer.of(0),
    ]);
    const at = this.alloc(bytes.length, 8);
    this.write(at, bytes);
    return at;
  }

  /**
   * Writes one member. Numbers take the member's size (8 when the layout does not say);
   * strings are written NUL-padded to the member's size (latin1); byte arrays as they are.
   * Returns false, writing nothing, when the layout has no such member and `optional` is set.
   */
  setMember(struct: string, base: bigint, path: string, value: MemberValue, optional = false): boolean {
    const off = this.layout.findOffset(struct, path);
    if (off === undefined) {
      if (optional) return false;
      throw new VmsightError("E_BUILDER", `${struct}.${path} is not in the crafted layout`);
    }
    const size = this.layout.memberSize(struct, path) ?? 8;
    this.write(base + BigInt(off), encode(value, size));
    return true;
  }

  /** Allocates a struct (or `size` bytes of it) on the heap and sets members. */
  placeStruct(struct: string, members: Readonly<Record<string, MemberValue>> = {}, size?: number): VirtAddr {
    const at = this.alloc(size ?? this.layout.sizeof(struct));
    for (const [path, value] of Object.entries(members)) this.setMember(struct, at, path, value);
    return at;
  }

  /** INIT_LIST_HEAD. */
  listInit(head: bigint): void {
    this.writeU64(head, head);
    this.writeU64(head + 8n, head);
  }

  /** list_add_tail(node, head). */
  listAddTail(node: bigint, head: bigint): void {
    const prev = this.kernel.readU64(va(head + 8n));
    this.writeU64(node, head);
    this.writeU64(node + 8n, prev);
    this.writeU64(prev, node);
    this.writeU64(head + 8n, node);
  }

  newUserSpace(): CraftedUserSpace {
    if (this.userSpaces >= MAX_USER_SPACES)
      throw new VmsightError("E_BUILDER", "too many crafted user spaces");
    const tableBase = USER_TABLES + BigInt(this.userSpaces++) * BigInt(USER_TABLE_PAGES) * PAGE;
    const pt = new PageTableBuilder(this.mem, this.pt.mode, { tableBase, maxTables: USER_TABLE_PAGES });
    return new CraftedUserSpace(this, pt, va(this.pageOffset + pt.root));
  }

  /**
   * Maps fresh zeroed pages at `at` in module space (MODULES_VADDR and up), 4 KiB each, the way
   * module_alloc() gives a module its memory; `writable: false` as its text ends up.
   */
  mapModuleSpace(at: bigint, size: number, writable = true): void {
    const bytes = BigInt(Math.ceil(size / 4096) * 4096);
    if (this.modulePhys + bytes > MODULE_PHYS + MODULE_PHYS_SIZE)
      throw new VmsightError("E_BUILDER", "crafted module space exhausted");
    this.mem.map(this.modulePhys, Number(bytes), "module space");
    for (let off = 0n; off < bytes; off += PAGE)
      this.pt.map(at + off, this.modulePhys + off, 4096, { writable, nx: writable });
    this.modulePhys += bytes;
    this.kernel.invalidate();
  }

  /** Clears the present bit of the kernel mapping that covers `addr` (a 2 MiB page here). */
  unmapKernel(addr: bigint): void {
    this.pt.updateEntry(addr, 2, (e) => e & ~1n);
    this.kernel.invalidate();
  }
}

/** A process's page tables; user pages come from the crafted heap, 4 KiB at a time. */
export class CraftedUserSpace {
  private readonly mapped = new Set<bigint>();
  constructor(
    private readonly ck: CraftedKernel,
    private readonly pt: PageTableBuilder,
    /** The direct-map address of the top-level table, as mm->pgd holds it. */
    readonly pgd: VirtAddr,
  ) {}

  /** Writes bytes at a user address, mapping the pages it touches. */
  write(uva: bigint, data: Uint8Array): void {
    for (let page = uva & ~(PAGE - 1n); page < uva + BigInt(data.length); page += PAGE) {
      if (this.mapped.has(page)) continue;
      this.pt.map(page, this.ck.allocPage().phys, 4096, { user: true, nx: true });
      this.mapped.add(page);
    }
    const space = new AddressSpace(this.ck.mem, this.ck.format, this.ck.directToPhys(this.pgd), {
      cacheSize: 0,
    });
    space.write(va(uva), data);
  }

  /** Makes the page holding `uva` not present, as if swapped out. */
  unmap(uva: bigint): void {
    this.pt.updateEntry(uva & ~(PAGE - 1n), 3, (e) => e & ~1n);
  }
}

function roundUp(x: bigint, align: bigint): bigint {
  return ((x + align - 1n) / align) * align;
}

function encode(value: MemberValue, size: number): Buffer {
  if (typeof value === "string") {
    const b = Buffer.alloc(size);
    Buffer.from(value, "latin1").copy(b, 0, 0, size);
    return b;
  }
  if (value instanceof Uint8Array) return Buffer.from(value);
  const b = Buffer.alloc(size);
  const v = BigInt.asUintN(size * 8, BigInt(value));
  for (let i = 0; i < size; i++) b[i] = Number((v >> BigInt(8 * i)) & 0xffn);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Linux tasks

export const PF_KTHREAD = 0x00200000;
export const PF_WQ_WORKER = 0x20;

export interface TaskSpec {
  readonly pid: number;
  /** Default: pid, or the leader's tgid for a thread. */
  readonly tgid?: number;
  readonly comm: string | Uint8Array;
  /** real_parent; default init_task. */
  readonly parent?: bigint;
  readonly uid?: number;
  readonly gid?: number;
  readonly euid?: number;
  /** A raw cred pointer instead of a fresh cred. */
  readonly cred?: bigint;
  readonly flags?: number;
  readonly state?: number;
  readonly exitState?: number;
  readonly mm?: bigint;
  /** Makes this a thread of that leader: same signal, on its thread lists, not on `tasks`. */
  readonly leader?: bigint;
  /** The struct kthread worker_private points to (full_name: a string to place, or a raw pointer), or a raw pointer. */
  readonly kthread?: { readonly fullName?: string | bigint; readonly data?: bigint } | bigint;
}

export interface ProcessSpec extends Omit<TaskSpec, "mm"> {
  readonly argv?: readonly string[];
  readonly envp?: readonly string[];
}

/** Where crafted processes keep their argument and environment strings. */
export const ARG_AREA = 0x7ffd0000f000n;

/**
 * Places task_structs the way fork() links them: thread-group leaders on init_task.tasks,
 * every thread on its signal_struct's thread_head (and on the thread_group ring where the
 * layout has one). Members the layout lacks are skipped, so a minimal profile works too.
 */
export class CraftedTasks {
  readonly initTask: VirtAddr;
  private readonly signals = new Map<bigint, bigint>();
  private readonly taskSize: number;

  constructor(readonly ck: CraftedKernel) {
    const L = ck.layout;
    // The kernel allocates task_struct only up to `thread` plus a boot-sized FPU area.
    this.taskSize = L.findOffset("task_struct", "thread") ?? L.sizeof("task_struct");
    this.initTask = ck.defineSymbol("init_task", this.taskSize);
    ck.listInit(this.initTask + BigInt(L.offsetof("task_struct", "tasks")));
    this.fill(this.initTask, { pid: 0, comm: "swapper/0", flags: PF_KTHREAD, parent: this.initTask });
  }

  /** Allocates and links a task; returns its address. */
  addTask(spec: TaskSpec, at?: VirtAddr): VirtAddr {
    const addr = at ?? this.ck.alloc(this.taskSize);
    this.fill(addr, spec);
    if (spec.leader === undefined) {
      this.ck.listAddTail(addr + BigInt(this.ck.layout.offsetof("task_struct", "tasks")), this.tasksHead());
    }
    return addr;
  }

  /** A user process with its own page tables, mm and argument/environment strings. */
  addProcess(spec: ProcessSpec): { task: VirtAddr; mm: VirtAddr; user: CraftedUserSpace } {
    const user = this.ck.newUserSpace();
    const argv = Buffer.concat((spec.argv ?? [String(spec.comm)]).map((a) => Buffer.from(`${a}\0`)));
    const envp = Buffer.concat((spec.envp ?? []).map((e) => Buffer.from(`${e}\0`)));
    user.write(ARG_AREA, Buffer.concat([argv, envp]));
    const argEnd = ARG_AREA + BigInt(argv.length);
    const mm = this.addMm({
      pgd: user.pgd,
      argStart: ARG_AREA,
      argEnd,
      envStart: argEnd,
      envEnd: argEnd + BigInt(envp.length),
    });
    return { task: this.addTask({ ...spec, mm }), mm, user };
  }

  addMm(m: { pgd: bigint; argStart: bigint; argEnd: bigint; envStart: bigint; envEnd: bigint }): VirtAddr {
    return this.ck.placeStruct("mm_struct", {
      pgd: m.pgd,
      arg_start: m.argStart,
      arg_end: m.argEnd,
      env_start: m.envStart,
      env_end: m.envEnd,
    });
  }

  /** A struct worker (kernel/workqueue.c) for a PF_WQ_WORKER kthread's `data`. */
  addWorker(w: { desc?: string; currentWork?: bigint; pool?: bigint; rescueWq?: bigint }): VirtAddr {
    return this.ck.placeStruct("worker", {
      desc: w.desc ?? "",
      current_work: w.currentWork ?? 0n,
      pool: w.pool ?? 0n,
      rescue_wq: w.rescueWq ?? 0n,
    });
  }

  tasksHead(): bigint {
    return this.initTask + BigInt(this.ck.layout.offsetof("task_struct", "tasks"));
  }

  private fill(addr: VirtAddr, spec: TaskSpec): void {
    const ck = this.ck;
    const set = (path: string, value: MemberValue) => ck.setMember("task_struct", addr, path, value, true);
    const leaderTgid =
      spec.leader === undefined
        ? undefined
        : ck.kernel
            .read(va(spec.leader + BigInt(ck.layout.offsetof("task_struct", "tgid"))), 4)
            .readInt32LE(0);
    set("pid", spec.pid);
    set("tgid", spec.tgid ?? leaderTgid ?? spec.pid);
    set("comm", spec.comm);
    set("flags", spec.flags ?? 0);
    if (!set("__state", spec.state ?? 0)) set("state", spec.state ?? 0);
    set("exit_state", spec.exitState ?? 0);
    set("mm", spec.mm ?? 0n);
    // CLONE_THREAD children share the leader's parent.
    const parentOff = BigInt(ck.layout.offsetof("task_struct", "real_parent"));
    const leaderParent =
      spec.leader === undefined ? undefined : ck.kernel.readU64(va(spec.leader + parentOff));
    set("real_parent", spec.parent ?? leaderParent ?? this.initTask);
    if (ck.layout.findOffset("cred", "uid") !== undefined || spec.cred !== undefined) {
      const cred =
        spec.cred ??
        ck.placeStruct("cred", { uid: spec.uid ?? 0, gid: spec.gid ?? 0, euid: spec.euid ?? spec.uid ?? 0 });
      set("real_cred", cred);
      set("cred", cred);
    }
    if (spec.kthread !== undefined) {
      const k =
        typeof spec.kthread === "bigint"
          ? spec.kthread
          : ck.placeStruct("kthread", {
              data: spec.kthread.data ?? 0n,
              full_name:
                typeof spec.kthread.fullName === "string"
                  ? ck.allocString(spec.kthread.fullName)
                  : (spec.kthread.fullName ?? 0n),
            });
      set("worker_private", k);
    }
    this.linkThread(addr, spec.leader);
  }

  private linkThread(addr: VirtAddr, leader: bigint | undefined): void {
    const ck = this.ck;
    const L = ck.layout;
    const group = L.findOffset("task_struct", "thread_group");
    if (group !== undefined) {
      if (leader === undefined) ck.listInit(addr + BigInt(group));
      else ck.listAddTail(addr + BigInt(group), leader + BigInt(group));
    }
    const signalOff = L.findOffset("task_struct", "signal");
    const headOff = L.findOffset("signal_struct", "thread_head");
    const nodeOff = L.findOffset("task_struct", "thread_node");
    if (signalOff === undefined || headOff === undefined || nodeOff === undefined) return;
    let signal = leader === undefined ? undefined : this.signals.get(leader);
    if (signal === undefined) {
      signal = ck.placeStruct("signal_struct");
      ck.listInit(signal + BigInt(headOff));
      this.signals.set(addr, signal);
    }
    ck.writeU64(addr + BigInt(signalOff), signal);
    ck.listAddTail(addr + BigInt(nodeOff), signal + BigInt(headOff));
  }
}

/** init_uts_ns with a release string, linux_banner, and saved_command_line. */
export function addKernelStrings(
  ck: CraftedKernel,
  s: { release?: string; banner?: string; commandLine?: string },
): void {
  if (s.release !== undefined) {
    const uts = ck.defineSymbol("init_uts_ns", ck.layout.findSize("uts_namespace") ?? 432);
    ck.setMember("uts_namespace", uts, "name.release", s.release);
  }
  if (s.banner !== undefined) {
    const b = ck.defineSymbol("linux_banner", s.banner.length + 1);
    ck.write(b, Buffer.from(`${s.banner}\0`, "latin1"));
  }
  if (s.commandLine !== undefined) {
    const p = ck.defineSymbol("saved_command_line", 8);
    ck.writeU64(p, ck.allocString(s.commandLine));
  }
}
