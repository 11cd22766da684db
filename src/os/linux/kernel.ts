import { AddressSpace } from "../../arch/x86/address-space.js";
import {
  CR3_KPTI_USER,
  type PagingFormat,
  formatFromControlRegisters,
  rootFromRegisters,
} from "../../arch/x86/formats.js";
import { type Mapping, enumerateMappings } from "../../arch/x86/mappings.js";
import type { PhysicalMemory } from "../../memory/types.js";
import type { Btf } from "../../symbols/btf/btf.js";
import { parseBtf } from "../../symbols/btf/parse.js";
import { type KallsymsLayout, recoverKallsymsWithLayout } from "../../symbols/kallsyms/recover.js";
import type { SymbolTable } from "../../symbols/kallsyms/table.js";
import type { StructLayout } from "../../symbols/layout.js";
import { type PhysAddr, type VirtAddr, hex, pa, va } from "../../util/address.js";
import { GuestDataError, VmsightError } from "../../util/errors.js";
import { markStep } from "../../util/timings.js";
import type { KernelContext } from "./context.js";
import {
  type LoadedBtf,
  MAX_BTF,
  btfFromBytes,
  fromCache,
  readIdentity,
  rememberBuild,
} from "./kernel-build.js";
import type { KernelCache } from "./kernel-cache.js";
import { addressBounds } from "./walk.js";

/** The non-randomised link address of `_text` on x86-64 (__START_KERNEL). */
export const DEFAULT_TEXT = 0xffffffff81000000n;
/** KASLR places the kernel image somewhere in this 1 GiB window (KERNEL_IMAGE_SIZE). */
const IMAGE_WINDOW = { start: 0xffffffff80000000n, end: 0xffffffffc0000000n };
const MAX_IMAGE = 256 << 20;
/** The direct map's base without KASLR (`__PAGE_OFFSET_BASE_L4`/`_L5`). */
const DEFAULT_PAGE_OFFSET = { 4: 0xffff888000000000n, 5: 0xff11000000000000n } as const;

export interface CpuRegisters {
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
}

export interface KernelInfo extends KernelContext {
  readonly symbols: SymbolTable;
  readonly format: PagingFormat;
  readonly banner: string;
  readonly textStart: bigint;
  /** KASLR text slide: where `_text` is minus where it was linked. */
  readonly slide: bigint;
  readonly physBase: bigint;
  readonly vmallocBase: bigint | undefined;
  readonly vmemmapBase: bigint | undefined;
  readonly pagingLevels: 4 | 5;
  readonly typeCount: number;
  readonly timings: Readonly<Record<string, number>>;
}

export interface DiscoverOptions {
  /** Use this layout (e.g. a discovered-offsets profile) instead of the guest's BTF. */
  readonly layout?: StructLayout;
  /**
   * Use these symbols (a System.map, /proc/kallsyms, or tables from a vmlinux) instead of the
   * kallsyms in guest memory. Link-time addresses are moved by the KASLR slide found at runtime.
   */
  readonly symbols?: SymbolTable;
  readonly log?: (line: string) => void;
  /**
   * Where builds seen before are kept (see kernel-cache.ts). Used only when both symbols and
   * types come from the guest.
   */
  readonly cache?: KernelCache;
}

/**
 * Everything the object model needs, from a paused guest's RAM and one vCPU's control
 * registers: no System.map, no vmlinux, no debug package. The kernel image is found through the
 * kernel's own page tables (it is the mapping in the KASLR window), kallsyms are decoded from
 * it, and the types come from the BTF blob the kernel carries.
 */
export function discoverKernel(
  mem: PhysicalMemory,
  regs: CpuRegisters,
  opts: DiscoverOptions = {},
): KernelInfo {
  const timings: Record<string, number> = {};
  const timed = <T>(name: string, fn: () => T): T => {
    const t0 = performance.now();
    const r = fn();
    timings[name] = performance.now() - t0;
    markStep(name);
    return r;
  };
  const format = formatFromControlRegisters(regs);
  if (!format || format.vaBits < 48) {
    throw new VmsightError("E_NOT_LINUX64", "the vCPU is not in 64-bit paging mode", {
      hint: "attach once the guest kernel has booted (or use `vmsight discover` from the first instruction)",
    });
  }
  const kernel = new AddressSpace(mem, format, kernelRoot(regs, format));
  // The image's base alone (its first page) is all a kernel build seen before needs.
  const base = timed("image", () => imageMappings(mem, kernel, format, { firstOnly: true }).base);
  const build = opts.symbols || opts.layout || !opts.cache ? undefined : opts.cache;
  const cached =
    build && timed("cache", () => build.find(base, (place) => readIdentity(kernel, base, place)));
  const learned = cached ? fromCache(cached) : undefined;
  const recovered =
    learned || opts.symbols
      ? undefined
      : timed("kallsyms", () => recoverFromImage(mem, imageMappings(mem, kernel, format)));
  const symbols = learned?.symbols ?? recovered?.symbols ?? relocate(opts.symbols!, base);
  const textStart = symbols.findAddress("_text") ?? symbols.findAddress("_stext") ?? base;
  let btf =
    learned?.btf ?? (opts.layout ? undefined : timed("btf", () => loadBtf(kernel, symbols, recovered?.read)));
  const bannerAddr = symbols.findAddress("linux_banner");
  const banner = bannerAddr === undefined ? "" : kernel.readCString(va(bannerAddr), 512).trimEnd();
  if (build && !cached && btf) {
    const loaded = btf;
    btf = timed("store", () =>
      rememberBuild(
        build,
        kernel,
        base,
        { text: banner, address: bannerAddr },
        { symbols, layout: recovered?.kallsyms },
        loaded,
        opts.log ?? (() => {}),
      ),
    );
  }
  const layout = opts.layout ?? btf!.layout;
  const readVar = (name: string) => {
    const a = symbols.findAddress(name);
    return a === undefined ? undefined : kernel.readU64(va(a));
  };
  const bounds = addressBounds(format);
  const pageOffset = readVar("page_offset_base") ?? DEFAULT_PAGE_OFFSET[bounds.levels];
  const perCpuOffsets = readPerCpuOffsets(kernel, symbols);
  const physBase = readVar("phys_base") ?? 0n;
  const userSpace = (pgd: VirtAddr) => new AddressSpace(mem, format, directToPhys(pgd));
  function directToPhys(addr: VirtAddr): PhysAddr {
    if (addr < pageOffset)
      throw new GuestDataError(`${hex(addr)} is not in the direct map (starts ${hex(pageOffset)})`);
    return pa(addr - pageOffset);
  }
  // What follows a build's symbols and types (banner, per-CPU offsets, bases) ends here, so the
  // listing's own step measures the listing alone.
  markStep("kernel");
  return {
    kernel,
    layout,
    symbols,
    bounds,
    format,
    pageOffset,
    perCpuOffsets,
    userSpace,
    directToPhys,
    banner,
    textStart,
    slide: textStart - DEFAULT_TEXT,
    physBase: BigInt.asIntN(64, physBase),
    vmallocBase: readVar("vmalloc_base"),
    vmemmapBase: readVar("vmemmap_base"),
    pagingLevels: bounds.levels,
    typeCount: btf?.typeCount ?? 0,
    timings,
  };
}

/**
 * A symbol table from a file matches the running kernel once moved by the KASLR slide: the
 * runtime `_text` is the first page mapped in the kernel image window.
 */
function relocate(table: SymbolTable, runtimeText: bigint): SymbolTable {
  const text = table.findAddress("_text") ?? table.findAddress("_stext");
  if (text === undefined) {
    throw new VmsightError("E_SYMBOL_MAP", "the symbol file has no _text or _stext", {
      hint: "give the System.map or /proc/kallsyms of the running kernel",
    });
  }
  return text === runtimeText ? table : table.rebase(runtimeText - text);
}

/**
 * The kernel half of the page tables. With KPTI a vCPU stopped in user mode runs on the user
 * PGD (the kernel one + 4 KiB), which maps almost none of the kernel.
 */
function kernelRoot(regs: CpuRegisters, format: PagingFormat): PhysAddr {
  return rootFromRegisters(regs, format, (regs.cr3 & CR3_KPTI_USER) !== 0n);
}

/** The kernel image's pages: the mappings in the KASLR window; the first is `_text`. Exported for tests. */
export function imageMappings(
  mem: PhysicalMemory,
  kernel: AddressSpace,
  format: PagingFormat,
  opts: { firstOnly?: boolean } = {},
) {
  const list = (maxEntries?: number) =>
    enumerateMappings(mem, format, kernel.root, {
      start: va(IMAGE_WINDOW.start),
      end: IMAGE_WINDOW.end,
      ...(maxEntries === undefined ? {} : { maxEntries }),
    }).mappings;
  // The first path down to a leaf visits one entry per level: the first mapping's start is then
  // exact (its end may be cut short). A table on the way with nothing present uses that budget
  // up: the whole window is listed then.
  let mappings = list(opts.firstOnly ? format.levels.length : undefined);
  if (mappings.length === 0 && opts.firstOnly) mappings = list();
  const first = mappings[0];
  if (!first) throw new VmsightError("E_NO_KERNEL", "no kernel image is mapped in the kernel page tables");
  return { base: first.start as bigint, mappings };
}

/** Image bytes read from the guest: where they sit in the image, and their virtual address. */
interface ImageRead {
  readonly bytes: Buffer;
  readonly base: bigint;
  /** [from, to) offsets of the mappings read, in image order; the rest are zeros. */
  readonly ranges: readonly (readonly [number, number])[];
}

/**
 * kallsyms lie in .rodata, which a booted kernel maps read-only and not executable: reading only
 * those pages first skips most of the image (text, data, bss) and keeps the untouched rest of the
 * buffer unallocated. A kernel whose tables are elsewhere gets the whole image read. The bytes
 * read are returned too: the BTF lies in .rodata as well.
 */
function recoverFromImage(
  mem: PhysicalMemory,
  image: ReturnType<typeof imageMappings>,
): { symbols: SymbolTable; read: ImageRead; kallsyms: KallsymsLayout } {
  const from = (wanted: (m: Mapping) => boolean) => {
    const read = readKernelImage(mem, image, wanted);
    const found = recoverKallsymsWithLayout(read.bytes, image.base, { within: read.ranges });
    return { symbols: found.table, read, kallsyms: found.layout };
  };
  try {
    return from((m) => !m.writable && !m.executable);
  } catch {
    return from(() => true);
  }
}

/** The kernel image as mapped, holes (freed init memory, mappings not wanted) left as zeros. */
function readKernelImage(
  mem: PhysicalMemory,
  image: ReturnType<typeof imageMappings>,
  wanted: (m: Mapping) => boolean,
): ImageRead {
  const { base, mappings } = image;
  const last = mappings.reduce((end, m) => (m.end > end ? m.end : end), base);
  const size = Number(last - base > BigInt(MAX_IMAGE) ? BigInt(MAX_IMAGE) : last - base);
  const bytes = Buffer.alloc(size);
  const ranges: [number, number][] = [];
  for (const m of mappings) {
    if (!wanted(m)) continue;
    const from = Number(m.start - base);
    if (from >= size) break;
    const len = Math.min(Number(m.end - m.start), size - from);
    // Straight into place: a read then a copy doubled the cost (and the peak) of the image.
    mem.readInto(m.phys, bytes.subarray(from, from + len));
    const prev = ranges[ranges.length - 1];
    if (prev && prev[1] === from) prev[1] = from + len;
    else ranges.push([from, from + len]);
  }
  return { bytes, base, ranges };
}

/**
 * The bytes at [start, start + size) if they were all read already, as a view: the BTF is not
 * read from the guest a second time. A view rather than a copy because the image buffer is not
 * collected before the BTF and the cache entry are made anyway (a copy measured 3 MB more at the
 * peak of a cold run); the price is that the .rodata read stays as long as the BTF does.
 */
function alreadyRead(read: ImageRead | undefined, start: bigint, size: number): Buffer | undefined {
  if (!read || start < read.base) return undefined;
  const from = start - read.base;
  if (from > BigInt(read.bytes.length)) return undefined;
  const at = Number(from);
  const inside = read.ranges.some(([a, b]) => a <= at && at + size <= b);
  return inside ? read.bytes.subarray(at, at + size) : undefined;
}

function loadBtf(kernel: AddressSpace, symbols: SymbolTable, read?: ImageRead): LoadedBtf {
  const { start, bytes } = kernelBtfBytes(kernel, symbols, read);
  return { ...btfFromBytes(bytes), start, bytes };
}

/** The kernel's own BTF (`__start_BTF`…`__stop_BTF`), parsed: all of it, for a symbol file. */
export function readKernelBtf(kernel: AddressSpace, symbols: SymbolTable): Btf {
  return parseBtf(kernelBtfBytes(kernel, symbols).bytes);
}

function kernelBtfBytes(
  kernel: AddressSpace,
  symbols: SymbolTable,
  read?: ImageRead,
): { start: bigint; bytes: Buffer } {
  const start = symbols.findAddress("__start_BTF");
  const stop = symbols.findAddress("__stop_BTF");
  if (start === undefined || stop === undefined) {
    throw new VmsightError("E_NO_BTF", "this kernel carries no BTF (built without CONFIG_DEBUG_INFO_BTF)", {
      hint: "use an offsets profile: `vmsight discover` learns one at boot, then pass --offsets FILE",
    });
  }
  const size = stop - start;
  if (size <= 0n || size > BigInt(MAX_BTF)) throw new GuestDataError(`implausible BTF size ${hex(size)}`);
  return { start, bytes: alreadyRead(read, start, Number(size)) ?? kernel.read(va(start), Number(size)) };
}

function readPerCpuOffsets(kernel: AddressSpace, symbols: SymbolTable): bigint[] {
  const array = symbols.findAddress("__per_cpu_offset");
  const nrAddr = symbols.findAddress("nr_cpu_ids");
  if (array === undefined) return [];
  const n = nrAddr === undefined ? 1 : kernel.readU32(va(nrAddr));
  if (n < 1 || n > 8192) throw new GuestDataError(`implausible nr_cpu_ids ${n}`);
  return Array.from({ length: n }, (_, i) => kernel.readU64(va(array + BigInt(i * 8))));
}
