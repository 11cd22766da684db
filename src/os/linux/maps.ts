import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, GuestDataError, VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import { parseBanner } from "./banner.js";
import type { KernelContext } from "./context.js";
import { type DPathOptions, dPathBytes, escapePath } from "./dpath.js";
import { type MapleTreeOptions, mapleTreeEntries } from "./maple-tree.js";
import { chainForEach, checkKernelPointer } from "./walk.js";

/**
 * /proc/<pid>/maps from outside the guest: `show_map_vma()` of fs/proc/task_mmu.c applied to
 * the VMAs of an mm, in the kernel's order, followed by the gate VMA ([vsyscall]) the kernel
 * appends. Checked against the 6.1 and 6.12 source and against the Debian builds' machine code.
 */

/** vm_flags bits (include/linux/mm.h), the same on every version. */
export const VM_READ = 0x1n;
export const VM_WRITE = 0x2n;
export const VM_EXEC = 0x4n;
export const VM_MAYSHARE = 0x80n;

export type VmaKind = "file" | "special" | "vdso" | "heap" | "stack" | "anon" | "unreadable";

export interface VmaRow {
  /** The `vm_area_struct`. */
  readonly vma: VirtAddr;
  readonly start: bigint;
  readonly end: bigint;
  readonly flags: bigint;
  /** "r-xp": read, write, exec, then 's' for VM_MAYSHARE or 'p'. */
  readonly perms: string;
  /** `vm_pgoff << 12` for a file mapping, 0 otherwise. */
  readonly offset: bigint;
  /** "fe:01": major and minor of the file's `i_sb->s_dev`, "00:00" without a file. */
  readonly dev: string;
  readonly inode: bigint;
  /**
   * The name column as /proc prints it (escaped path, "[heap]"...), "" for none, its bytes decoded
   * as every guest string is (`decodeGuestBytes`).
   */
  readonly path: string;
  readonly kind: VmaKind;
  /**
   * What could not be read, when something could not: the file of a file mapping (dev, inode
   * and path are then "?", 0 and "?"), or the whole VMA (kind "unreadable": the range is the
   * maple tree's, or 0-0 on a list-based kernel). Absent for a sound VMA.
   */
  readonly warnings?: readonly string[];
}

/**
 * Heap test of `show_map_vma()`: up to 6.6 `vm_start <= brk && vm_end >= start_brk`
 * ("inclusive"); from 6.7 ("mm: fix VMA heap bounds checking") `vm_start < brk &&
 * vm_end > start_brk` ("exclusive"). Debian 6.1.0-50's code is inclusive, 6.12.111's exclusive.
 */
export type HeapRule = "inclusive" | "exclusive";

export interface ListVmasOptions {
  /** Default: from the kernel version (see `HeapRule`). */
  readonly heapRule?: HeapRule;
  /** Append the gate VMA ([vsyscall]) as the kernel does for 64-bit processes. Default true. */
  readonly includeGate?: boolean;
  /** `FMODE_BACKING` (6.8+ overlay backing files); default 1<<24 from 6.12, else 1<<25. */
  readonly fmodeBacking?: bigint;
  /** VMAs accepted beyond `mm->map_count` (the guest may map while we read). Default 64. */
  readonly slack?: number;
  readonly dpath?: DPathOptions;
  readonly mapleTree?: MapleTreeOptions;
}

export type VmaSource = { readonly task: VirtAddr } | { readonly mm: VirtAddr };

/** `MM_CONTEXT_HAS_VSYSCALL` (bit 1 of mm->context.flags) and vsyscall_mode NONE (2). */
const HAS_VSYSCALL = 2n;
const VSYSCALL_NONE = 2;
const MAX_MAP_COUNT = 1 << 20;

/** Major and minor version from `linux_banner`, when the symbol table has it. */
export function kernelVersion(ctx: KernelContext): { major: number; minor: number } | undefined {
  const addr = ctx.symbols.findAddress("linux_banner");
  if (addr === undefined) return undefined;
  const v = parseBanner(ctx.kernel.readCString(va(addr), 64));
  return v?.major === undefined || v.minor === undefined ? undefined : { major: v.major, minor: v.minor };
}

const atLeast = (v: { major: number; minor: number }, major: number, minor: number) =>
  v.major > major || (v.major === major && v.minor >= minor);

export function defaultHeapRule(ctx: KernelContext): HeapRule {
  const v = kernelVersion(ctx);
  // Without a banner: d_sib (6.8) is the nearest version mark every build has.
  if (!v) return ctx.layout.findOffset("dentry", "d_sib") !== undefined ? "exclusive" : "inclusive";
  return atLeast(v, 6, 7) ? "exclusive" : "inclusive";
}

/** The mm of a task or the mm itself; 0 for a kernel thread. */
export function mmOf(ctx: KernelContext, source: VmaSource): bigint {
  if ("mm" in source) return source.mm;
  return ctx.kernel.readU64(va(source.task + BigInt(ctx.layout.offsetof("task_struct", "mm"))));
}

/**
 * The addresses of an mm's VMAs in address order: from the maple tree `mm_mt` (6.1+) or the
 * `mmap`/`vm_next` list (older). Bounded by `map_count` plus slack; each maple entry's range
 * must be the VMA's own [vm_start, vm_end - 1].
 */
export function vmaAddresses(ctx: KernelContext, mm: VirtAddr, opts: ListVmasOptions = {}): VirtAddr[] {
  return vmaEntries(ctx, mm, opts).map((e) => e.vma);
}

interface VmaEntry {
  readonly vma: VirtAddr;
  /** The range the maple tree stores the VMA for; unknown on a list-based kernel. */
  readonly range: readonly [bigint, bigint] | undefined;
}

/** vm_start and vm_end of a VMA, or undefined when they cannot be read. */
function vmaBounds(ctx: KernelContext, vma: VirtAddr): [bigint, bigint] | undefined {
  const L = ctx.layout;
  try {
    return [
      ctx.kernel.readU64(va(vma + BigInt(L.offsetof("vm_area_struct", "vm_start")))),
      ctx.kernel.readU64(va(vma + BigInt(L.offsetof("vm_area_struct", "vm_end")))),
    ];
  } catch (error) {
    if (error instanceof FaultError) return undefined;
    throw error;
  }
}

function vmaEntries(ctx: KernelContext, mm: VirtAddr, opts: ListVmasOptions): VmaEntry[] {
  const L = ctx.layout;
  const mapCount = ctx.kernel.readU32(va(mm + BigInt(L.offsetof("mm_struct", "map_count"))));
  const limit = Math.min(mapCount, MAX_MAP_COUNT) + (opts.slack ?? 64);
  const out: VmaEntry[] = [];
  const push = (v: VirtAddr, range?: [bigint, bigint]) => {
    if (out.length >= limit)
      throw new GuestDataError(`mm ${hex(mm)} has more VMAs than map_count ${mapCount}`);
    out.push({ vma: v, range });
  };
  const mt = L.findOffset("mm_struct", "mm_mt");
  if (mt !== undefined) {
    const root = ctx.kernel.readU64(va(mm + BigInt(mt + L.offsetof("maple_tree", "ma_root"))));
    for (const e of mapleTreeEntries(ctx, root, opts.mapleTree)) {
      const vma = checkKernelPointer(e.entry, ctx.bounds, `mm_mt entry at ${hex(e.index)}`);
      // An unreadable VMA is the row reader's to report; a readable one must match its slot.
      const span = vmaBounds(ctx, vma);
      if (span && (span[0] !== e.index || span[1] - 1n !== e.last)) {
        throw new GuestDataError(
          `VMA ${hex(vma)} (${hex(span[0])}-${hex(span[1])}) is stored for ${hex(e.index)}-${hex(e.last + 1n)} in mm_mt`,
        );
      }
      push(vma, [e.index, e.last + 1n]);
    }
    return out;
  }
  const first = va(mm + BigInt(L.offsetof("mm_struct", "mmap")));
  const next = L.offsetof("vm_area_struct", "vm_next");
  for (const v of chainForEach(ctx, first, `vm_area_struct.vm_next (mm ${hex(mm)})`, next)) push(v);
  return out;
}

interface MmInfo {
  readonly brk: bigint;
  readonly startBrk: bigint;
  readonly startStack: bigint;
}

/** The rows of /proc/<pid>/maps for a task (or mm); empty for a kernel thread. */
export function listVmas(ctx: KernelContext, source: VmaSource, opts: ListVmasOptions = {}): VmaRow[] {
  const mmAddr = mmOf(ctx, source);
  if (mmAddr === 0n) return [];
  const mm = checkKernelPointer(mmAddr, ctx.bounds, "task mm");
  const L = ctx.layout;
  const field = (p: string) => ctx.kernel.readU64(va(mm + BigInt(L.offsetof("mm_struct", p))));
  const info: MmInfo = { brk: field("brk"), startBrk: field("start_brk"), startStack: field("start_stack") };
  const reader = new VmaReader(ctx, opts);
  const rows = vmaEntries(ctx, mm, opts).map((e) => reader.rowOrPlaceholder(e, info));
  const sound = rows.filter((r) => r.kind !== "unreadable");
  for (let i = 1; i < sound.length; i++) {
    const prev = sound[i - 1]!;
    const cur = sound[i]!;
    if (cur.start < prev.end) {
      throw new GuestDataError(`VMAs ${hex(prev.vma)} and ${hex(cur.vma)} overlap or are out of order`);
    }
  }
  const gate = opts.includeGate === false ? undefined : gateVma(ctx, mm);
  if (gate !== undefined) rows.push(reader.row(gate, info));
  return rows;
}

/** `get_gate_vma(mm)` on x86-64: `&gate_vma` unless vsyscall=none or a 32-bit mm. */
export function gateVma(ctx: KernelContext, mm: VirtAddr): VirtAddr | undefined {
  const gate = ctx.symbols.findAddress("gate_vma");
  if (gate === undefined) return undefined;
  const mode = ctx.symbols.findAddress("vsyscall_mode");
  if (mode !== undefined && ctx.kernel.readU32(va(mode)) === VSYSCALL_NONE) return undefined;
  const flags = ctx.layout.findOffset("mm_struct", "context.flags");
  // 6.1 has a u16 there, 6.12 an unsigned long; bit 1 is in the low byte either way.
  if (flags !== undefined && (BigInt(ctx.kernel.readU8(va(mm + BigInt(flags)))) & HAS_VSYSCALL) === 0n) {
    return undefined;
  }
  return va(gate);
}

/** The `show_map_vma()` line for a VMA, with the header fields as the kernel prints them. */
export function formatMapsLine(
  row: Pick<VmaRow, "start" | "end" | "perms" | "offset" | "dev" | "inode" | "path">,
): string {
  const h = (x: bigint) => x.toString(16).padStart(8, "0");
  // show_vma_header_prefix(): seq_setwidth(m, 25 + sizeof(void *) * 6 - 1) and a trailing space;
  // a name is then padded to that width (seq_pad) and put after one more space.
  const prefix = `${h(row.start)}-${h(row.end)} ${row.perms} ${h(row.offset)} ${row.dev} ${row.inode} `;
  return row.path === "" ? prefix : `${prefix.padEnd(72, " ")} ${row.path}`;
}

export function permsOf(flags: bigint): string {
  return (
    ((flags & VM_READ) !== 0n ? "r" : "-") +
    ((flags & VM_WRITE) !== 0n ? "w" : "-") +
    ((flags & VM_EXEC) !== 0n ? "x" : "-") +
    ((flags & VM_MAYSHARE) !== 0n ? "s" : "p")
  );
}

/** dev_t in the kernel: major in bits 20 and up, minor in bits 0..19 (MINORBITS 20). */
export function formatDev(dev: number): string {
  const h2 = (x: number) => x.toString(16).padStart(2, "0");
  return `${h2(dev >>> 20)}:${h2(dev & 0xfffff)}`;
}

interface VmaOffsets {
  readonly size: number;
  readonly start: number;
  readonly end: number;
  readonly mm: number | undefined;
  readonly flags: number;
  readonly ops: number;
  readonly pgoff: number;
  readonly file: number;
  readonly priv: number;
}

/** Reads VMAs one struct at a time and names them as show_map_vma() does. */
class VmaReader {
  private readonly ctx: KernelContext;
  private readonly opts: ListVmasOptions;
  private readonly o: VmaOffsets;
  private readonly heapRule: HeapRule;
  private readonly backing: { mask: bigint; userPath: bigint } | undefined;
  private readonly opsName: number | undefined;
  private readonly sym: (name: string) => bigint | undefined;

  constructor(ctx: KernelContext, opts: ListVmasOptions) {
    this.ctx = ctx;
    this.opts = opts;
    const L = ctx.layout;
    const at = (p: string) => L.offsetof("vm_area_struct", p);
    const o = {
      start: at("vm_start"),
      end: at("vm_end"),
      mm: L.findOffset("vm_area_struct", "vm_mm"),
      flags: at("vm_flags"),
      ops: at("vm_ops"),
      pgoff: at("vm_pgoff"),
      file: at("vm_file"),
      priv: at("vm_private_data"),
    };
    const needed = Math.max(...Object.values(o).filter((x): x is number => x !== undefined)) + 8;
    this.o = { ...o, size: Math.max(needed, L.findSize("vm_area_struct") ?? 0) };
    this.heapRule = opts.heapRule ?? defaultHeapRule(ctx);
    this.opsName = L.findOffset("vm_operations_struct", "name");
    this.backing = backingFile(ctx, opts);
    this.sym = (name) => ctx.symbols.findAddress(name);
  }

  /**
   * The row of a VMA, or, when its vm_area_struct cannot be read, a row that says so: one bad
   * VMA does not hide the others.
   */
  rowOrPlaceholder(e: VmaEntry, mm: MmInfo): VmaRow {
    try {
      return this.row(e.vma, mm);
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      const [start, end] = e.range ?? [0n, 0n];
      return {
        vma: e.vma,
        start,
        end,
        flags: 0n,
        perms: "----",
        offset: 0n,
        dev: "00:00",
        inode: 0n,
        path: "",
        kind: "unreadable",
        warnings: [`VMA ${hex(e.vma)} is unreadable: ${error.message}`],
      };
    }
  }

  row(vma: VirtAddr, mm: MmInfo): VmaRow {
    const b = this.ctx.kernel.read(vma, this.o.size);
    const u64 = (off: number) => b.readBigUInt64LE(off);
    const start = u64(this.o.start);
    const end = u64(this.o.end);
    if (end <= start)
      throw new GuestDataError(`VMA ${hex(vma)} ends (${hex(end)}) before it starts (${hex(start)})`);
    const flags = u64(this.o.flags);
    const base = { vma, start, end, flags, perms: permsOf(flags) };
    const file = u64(this.o.file);
    if (file !== 0n) {
      const offset = BigInt.asUintN(64, u64(this.o.pgoff) << 12n);
      try {
        const f = this.fileInfo(checkKernelPointer(file, this.ctx.bounds, `vm_file of VMA ${hex(vma)}`));
        const path = decodeGuestBytes(escapePath(f.path));
        return { ...base, offset, dev: formatDev(f.dev), inode: f.ino, path, kind: "file" };
      } catch (error) {
        if (!(error instanceof VmsightError)) throw error;
        const warnings = [`file of VMA ${hex(vma)}: ${error.message}`];
        return { ...base, offset, dev: "?", inode: 0n, path: "?", kind: "file", warnings };
      }
    }
    const anon = { ...base, offset: 0n, dev: "00:00", inode: 0n };
    const special = this.opsNameOf(u64(this.o.ops), u64(this.o.priv), vma);
    if (special !== undefined) return { ...anon, path: special, kind: "special" };
    if (this.o.mm !== undefined && u64(this.o.mm) === 0n) return { ...anon, path: "[vdso]", kind: "vdso" };
    if (this.isHeap(start, end, mm)) return { ...anon, path: "[heap]", kind: "heap" };
    if (start <= mm.startStack && end >= mm.startStack) return { ...anon, path: "[stack]", kind: "stack" };
    return { ...anon, path: "", kind: "anon" };
  }

  private isHeap(start: bigint, end: bigint, mm: MmInfo): boolean {
    return this.heapRule === "inclusive"
      ? start <= mm.brk && end >= mm.startBrk
      : start < mm.brk && end > mm.startBrk;
  }

  /**
   * `vma->vm_ops->name(vma)` for the two name functions x86-64 has: `special_mapping_name`
   * ([vdso], [vvar], [uprobes]: the `vm_special_mapping` in vm_private_data names it) and
   * `gate_vma_name` ([vsyscall]). 6.1's `legacy_special_mapping_vmops` has no name function.
   */
  private opsNameOf(ops: bigint, priv: bigint, vma: VirtAddr): string | undefined {
    if (ops === 0n) return undefined;
    const fn =
      this.opsName === undefined
        ? undefined
        : this.ctx.kernel.readU64(
            va(checkKernelPointer(ops, this.ctx.bounds, `vm_ops of VMA ${hex(vma)}`) + BigInt(this.opsName)),
          );
    if (fn === 0n) return undefined;
    const is = (fnName: string, opsName: string) =>
      (fn !== undefined && fn === this.sym(fnName)) || ops === this.sym(opsName);
    if (is("special_mapping_name", "special_mapping_vmops")) {
      const sm = checkKernelPointer(priv, this.ctx.bounds, `vm_special_mapping of VMA ${hex(vma)}`);
      const name = this.ctx.kernel.readU64(
        va(sm + BigInt(this.ctx.layout.offsetof("vm_special_mapping", "name"))),
      );
      return this.ctx.kernel.readCString(
        checkKernelPointer(name, this.ctx.bounds, `special mapping name of VMA ${hex(vma)}`),
        256,
      );
    }
    if (is("gate_vma_name", "gate_vma_ops")) return "[vsyscall]";
    return undefined;
  }

  /** `file_user_path()`/`file_user_inode()` (6.8+) or `f_path`/`f_inode`, then d_path. */
  private fileInfo(file: VirtAddr): { dev: number; ino: bigint; path: Buffer } {
    const L = this.ctx.layout;
    const k = this.ctx.kernel;
    const pathAt = (p: bigint) => ({
      mnt: checkKernelPointer(
        k.readU64(va(p + BigInt(L.offsetof("path", "mnt")))),
        this.ctx.bounds,
        `path.mnt of file ${hex(file)}`,
      ),
      dentry: checkKernelPointer(
        k.readU64(va(p + BigInt(L.offsetof("path", "dentry")))),
        this.ctx.bounds,
        `path.dentry of file ${hex(file)}`,
      ),
    });
    let path = pathAt(file + BigInt(L.offsetof("file", "f_path")));
    let inode = k.readU64(va(file + BigInt(L.offsetof("file", "f_inode"))));
    if (this.backing && (this.fileMode(file) & this.backing.mask) !== 0n) {
      path = pathAt(file + this.backing.userPath);
      inode = k.readU64(va(path.dentry + BigInt(L.offsetof("dentry", "d_inode"))));
    }
    const ino = checkKernelPointer(inode, this.ctx.bounds, `inode of file ${hex(file)}`);
    const sb = checkKernelPointer(
      k.readU64(va(ino + BigInt(L.offsetof("inode", "i_sb")))),
      this.ctx.bounds,
      `i_sb of ${hex(ino)}`,
    );
    return {
      dev: k.readU32(va(sb + BigInt(L.offsetof("super_block", "s_dev")))),
      ino: k.readU64(va(ino + BigInt(L.offsetof("inode", "i_ino")))),
      path: dPathBytes(this.ctx, path.mnt, path.dentry, this.opts.dpath),
    };
  }

  private fileMode(file: VirtAddr): bigint {
    return BigInt(this.ctx.kernel.readU32(va(file + BigInt(this.ctx.layout.offsetof("file", "f_mode")))));
  }
}

/** Overlay backing files (6.8+): `struct backing_file { struct file file; struct path user_path; }`. */
function backingFile(
  ctx: KernelContext,
  opts: ListVmasOptions,
): { mask: bigint; userPath: bigint } | undefined {
  const L = ctx.layout;
  const userPath = L.findOffset("backing_file", "user_path");
  if (userPath === undefined) return undefined;
  const fileAt = BigInt(L.findOffset("backing_file", "file") ?? 0);
  const v = kernelVersion(ctx);
  const mask = opts.fmodeBacking ?? (v === undefined || atLeast(v, 6, 12) ? 1n << 24n : 1n << 25n);
  return { mask, userPath: BigInt(userPath) - fileAt };
}
