import { readFileSync } from "node:fs";
import { parseBanner } from "../os/linux/banner.js";
import { KernelCache, kernelCacheDir } from "../os/linux/kernel-cache.js";
import { type DiscoverOptions, type KernelInfo, discoverKernel } from "../os/linux/kernel.js";
import { pageTableCandidates } from "../os/linux/page-table-search.js";
import { listTasks } from "../os/linux/tasks.js";
import { checkKernelPointer } from "../os/linux/walk.js";
import { controlRegistersOf } from "../qemu/hmp-registers.js";
import type { Machine } from "../qemu/machine.js";
import { parseSystemMap } from "../symbols/kallsyms/system-map.js";
import type { SymbolTable } from "../symbols/kallsyms/table.js";
import { parseOffsetsProfile, profileLayout } from "../symbols/profile-layout.js";
import { hex, va } from "../util/address.js";
import { type ErrorCode, UsageError, VmsightError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { type Wire, hexText } from "./wire.js";

/**
 * Discovers the guest kernel from one vCPU's control registers and guest RAM. Reading
 * registers stops the guest (that is how QEMU's gdbstub works); the caller's Target puts the run
 * state back when it closes, so a listing is a consistent snapshot, not a torn read.
 */
export interface OpenKernelOptions {
  /** A System.map or /proc/kallsyms file to use instead of the kallsyms in guest memory. */
  readonly systemMap?: string;
  /** An offsets profile from `vmsight discover`, used instead of the guest's BTF. */
  readonly offsets?: string;
  /** Do not read the guest's BTF: needs `offsets` (no profile is cached, so nothing else would do). */
  readonly noBtf?: boolean;
}

export async function openKernel(target: Machine, opts: OpenKernelOptions = {}): Promise<KernelInfo> {
  const symbols = opts.systemMap === undefined ? undefined : readSymbolFile(opts.systemMap);
  const layout = offsetsLayout(opts);
  const discover: DiscoverOptions = {
    ...(symbols === undefined ? {} : { symbols }),
    ...(layout === undefined ? {} : { layout }),
    ...cacheOption(),
  };
  if (target.vcpuCount() === 0) return discoverWithoutRegisters(target, discover);
  const regs = target.controlRegisters
    ? await target.controlRegisters(0)
    : controlRegistersOf(await target.registers(0));
  markStep("registers");
  const k = discoverKernel(target.memory, regs, discover);
  // Cached translations are only true until the guest runs again.
  target.onRun(() => k.kernel.invalidate());
  return k;
}

/**
 * A memory image with no registers (LiME, raw): the first page-table root found in RAM through
 * which a kernel can be discovered.
 */
function discoverWithoutRegisters(target: Machine, opts: DiscoverOptions): KernelInfo {
  const candidates = pageTableCandidates(target.memory);
  markStep("registers");
  let last: unknown;
  for (const regs of candidates) {
    try {
      return discoverKernel(target.memory, regs, opts);
    } catch (error) {
      if (!(error instanceof VmsightError)) throw error;
      last = error;
    }
  }
  throw new VmsightError(
    "E_NO_KERNEL",
    "the image records no registers, and no page tables in it map a Linux kernel",
    {
      hint: "is it a memory image of a running 64-bit Linux guest?",
      ...(last === undefined ? {} : { cause: last }),
    },
  );
}

/** Builds seen before skip the image read and the BTF parse (see os/linux/kernel-cache.ts). */
function cacheOption(): { cache?: KernelCache } {
  const cache = KernelCache.forUser();
  return cache ? { cache } : {};
}

/** Forgets every kernel build seen; returns the directory that held them. */
export function clearKernelCache(): string {
  const cache = new KernelCache(kernelCacheDir());
  cache.clear();
  return cache.dir;
}

function offsetsLayout(opts: OpenKernelOptions) {
  if (opts.noBtf && opts.offsets === undefined) {
    throw new UsageError(
      "--no-btf needs --offsets FILE",
      "`vmsight discover` writes one while the guest boots",
    );
  }
  if (opts.offsets === undefined) return undefined;
  const text = readUserFile(opts.offsets, "offsets profile", "E_PROFILE");
  return profileLayout(parseOffsetsProfile(text, opts.offsets), opts.offsets);
}

function readSymbolFile(path: string): SymbolTable {
  return parseSystemMap(readUserFile(path, "symbol file", "E_SYMBOL_MAP"));
}

/** A file the user named on the command line, or one clear line saying why it cannot be read. */
function readUserFile(path: string, what: string, code: ErrorCode): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new VmsightError(code, `cannot read ${what} ${path} (${(error as NodeJS.ErrnoException).code})`);
  }
}

/**
 * The page-table root of a process (its mm->pgd, as a physical address): reading through it as
 * an explicit CR3 sees the process's user half and the kernel.
 */
export function processPageTable(k: KernelInfo, pid: number): bigint {
  const task = listTasks(k).find((t) => t.pid === pid && t.tgid === pid);
  if (!task)
    throw new VmsightError("E_NO_PROCESS", `no process with pid ${pid} in the guest`, {
      hint: "`vmsight ps` lists them",
    });
  if (task.mm === 0n)
    throw new VmsightError("E_NO_PROCESS", `pid ${pid} is a kernel thread: it has no user address space`);
  const pgd = k.kernel.readU64(va(task.mm + BigInt(k.layout.offsetof("mm_struct", "pgd"))));
  return k.directToPhys(checkKernelPointer(pgd, k.bounds, `pgd of pid ${pid}`));
}

export interface KernelReport {
  readonly version: string;
  readonly banner: string;
  readonly slide: bigint;
  readonly text: bigint;
  readonly physBase: bigint;
  readonly pageOffsetBase: bigint;
  readonly vmallocBase: bigint | undefined;
  readonly vmemmapBase: bigint | undefined;
  readonly pagingLevels: number;
  readonly cpus: number;
  readonly symbols: number;
  readonly types: number;
  readonly typesFrom: string;
}

export function kernelReport(k: KernelInfo): KernelReport {
  return {
    version: parseBanner(k.banner)?.release ?? "unknown",
    banner: k.banner,
    slide: k.slide,
    text: k.textStart,
    physBase: k.physBase,
    pageOffsetBase: k.pageOffset,
    vmallocBase: k.vmallocBase,
    vmemmapBase: k.vmemmapBase,
    pagingLevels: k.pagingLevels,
    cpus: k.perCpuOffsets.length,
    symbols: k.symbols.size,
    types: k.typeCount,
    typesFrom: k.layout.source,
  };
}

/** The text of `vmsight kernel`, from the report or the same as vm.kernel() returns it. */
export function describeKernel(r: KernelReport | Wire<KernelReport>): string {
  const text = (v: bigint | string | undefined) => (v === undefined ? "-" : hexText(v));
  return [
    r.banner,
    `KASLR slide        ${text(r.slide)}  (_text at ${text(r.text)})`,
    `phys_base          ${text(r.physBase)}`,
    `page_offset_base   ${text(r.pageOffsetBase)}`,
    `vmalloc_base       ${text(r.vmallocBase)}`,
    `vmemmap_base       ${text(r.vmemmapBase)}`,
    `paging             ${r.pagingLevels}-level`,
    `CPUs               ${r.cpus}`,
    `symbols            ${r.symbols} (kallsyms in guest memory)`,
    `types              ${r.types} (${r.typesFrom})`,
  ].join("\n");
}
