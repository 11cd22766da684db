import { openSync, readFileSync } from "node:fs";
import { hex } from "../../util/address.js";
import { VmsightError } from "../../util/errors.js";
import { FdPhysicalMemory, type FdRegion, mapFileRegions } from "../fd-memory.js";
import type { PhysRange } from "../types.js";
import { type HostMapping, parseFlatView, parseGpa2hva, parseProcMaps } from "./mtree.js";

/** What this module needs from a QMP connection; kept minimal so tests can fake it. */
export interface Monitor {
  hmp(commandLine: string): Promise<string>;
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
}

export interface RamRegion extends PhysRange {
  /** Host virtual address of `start` in the QEMU process. */
  readonly hva: bigint;
  /** Set when the region lives in a shared file mapping (memory-backend-file, share=on). */
  readonly file?: { readonly path: string; readonly offset: bigint };
}

export interface RamLayout {
  readonly pid: number;
  readonly regions: readonly RamRegion[];
  /** Guest RAM size as QEMU reports it (`query-memory-size-summary`). */
  readonly ramSize: bigint;
}

const READABLE_KINDS = new Set(["ram", "rom", "romd"]);

/**
 * Finds where every guest-physical RAM/ROM range lives in the QEMU process, from QMP alone:
 * the flat memory map (`info mtree -f`), one `gpa2hva` per range, and the process's own maps
 * to check that each range really is host memory (and whether a shared file backs it).
 */
export async function discoverRamLayout(
  monitor: Monitor,
  pid: number,
  /** `info mtree -f` as already asked (attach sends it with its first question). */
  flatText?: string,
): Promise<RamLayout> {
  const flat = parseFlatView(flatText ?? (await flatMemoryMap(monitor)));
  const hostMaps = readHostMaps(pid);
  const ranges = flat.filter((r) => READABLE_KINDS.has(r.kind));
  // Sent together: QEMU answers them in order, and a round trip each would add up at attach.
  const [ramSize, ...hvas] = await Promise.all([
    reportedRamSize(monitor),
    ...ranges.map(async (range) => parseGpa2hva(await monitor.hmp(`gpa2hva ${hex(range.start)}`))),
  ]);
  const regions: RamRegion[] = [];
  ranges.forEach((range, i) => {
    const hva = hvas[i];
    if (hva === undefined) return;
    const mapping = hostMaps.find((m) => hva >= m.start && hva + range.size <= m.end);
    if (!mapping) {
      throw new VmsightError(
        "E_RAM_LAYOUT",
        `guest RAM ${range.region} at ${hex(range.start)} (+${hex(range.size)}) is not mapped in QEMU process ${pid}`,
        { hint: "the QMP socket may belong to a QEMU in another PID namespace or on another host" },
      );
    }
    regions.push({
      start: range.start,
      size: range.size,
      name: range.region,
      writable: range.kind === "ram",
      hva,
      ...fileBacking(pid, mapping, hva),
    });
  });
  checkRamCoverage(flat, ramSize);
  return { pid, regions, ramSize };
}

function readHostMaps(pid: number): HostMapping[] {
  try {
    return parseProcMaps(readFileSync(`/proc/${pid}/maps`, "utf8"));
  } catch (error) {
    throw new VmsightError("E_QEMU_PROCESS", `cannot read /proc/${pid}/maps of the QEMU process`, {
      hint: "run vmsight as root or as the user that runs QEMU",
      cause: error,
    });
  }
}

/**
 * A shared file mapping can be opened and mapped by us too. A file with a name is opened by it;
 * a memfd (`/memfd:ram0 (deleted)`) or a deleted file only through the QEMU process's
 * map_files entry, which needs root (CAP_SYS_ADMIN).
 */
function fileBacking(pid: number, mapping: HostMapping, hva: bigint): Pick<RamRegion, "file"> {
  const shared = mapping.perms[3] === "s";
  if (!shared || !mapping.path.startsWith("/")) return {};
  const path = mapping.path.endsWith("(deleted)")
    ? `/proc/${pid}/map_files/${mapping.start.toString(16)}-${mapping.end.toString(16)}`
    : mapping.path;
  return { file: { path, offset: mapping.offset + (hva - mapping.start) } };
}

/** QEMU's flat memory map, the text `discoverRamLayout` reads. */
export function flatMemoryMap(monitor: Monitor): Promise<string> {
  return monitor.hmp("info mtree -f");
}

async function reportedRamSize(monitor: Monitor): Promise<bigint> {
  const summary = await monitor.execute<{ "base-memory": number }>("query-memory-size-summary");
  return BigInt(summary["base-memory"]);
}

/**
 * The main RAM block must be covered up to the size QEMU reports; otherwise the layout is one
 * this code does not understand (and guessing would read the wrong bytes for high addresses).
 */
function checkRamCoverage(flat: ReturnType<typeof parseFlatView>, ramSize: bigint): void {
  const extent = new Map<string, bigint>();
  for (const r of flat.filter((x) => x.kind === "ram")) {
    const end = r.regionOffset + r.size;
    if (end > (extent.get(r.region) ?? 0n)) extent.set(r.region, end);
  }
  const largest = [...extent.values()].reduce((a, b) => (b > a ? b : a), 0n);
  if (largest !== ramSize) {
    throw new VmsightError(
      "E_RAM_LAYOUT",
      `QEMU reports ${hex(ramSize)} bytes of guest RAM but its memory map covers ${hex(largest)}`,
      { hint: "this RAM layout (e.g. NUMA nodes or hot-plugged memory) is not supported yet" },
    );
  }
}

/**
 * Opens the fastest path to guest RAM: the shared backing file where a region has one, else the
 * QEMU process's memory (firmware ROM is only ever there). `prefer` forces one of the two.
 */
export function openGuestMemory(
  layout: RamLayout,
  prefer: "auto" | "process" | "file" = "auto",
): FdPhysicalMemory {
  const ram = layout.regions.filter((r) => r.writable);
  if (prefer === "file" && !ram.every((r) => r.file)) {
    throw new VmsightError("E_RAM_LAYOUT", "guest RAM is not in a shared memory-backend-file", {
      hint: "start QEMU with -object memory-backend-file,...,share=on -machine memory-backend=ID",
    });
  }
  const procPath = `/proc/${layout.pid}/mem`;
  const fds = new Map<string, number>();
  const fdFor = (path: string) => fds.get(path) ?? fds.set(path, openOrExplain(path)).get(path)!;
  const viaProcess = (r: RamRegion): FdRegion => ({
    ...r,
    fd: fdFor(procPath),
    fdOffset: r.hva,
    pid: layout.pid,
  });
  const viaFile = (r: RamRegion, file: NonNullable<RamRegion["file"]>): FdRegion => {
    try {
      return { ...r, fd: fdFor(file.path), fdOffset: file.offset };
    } catch (error) {
      // "auto": a memfd's map_files entry needs root; the process's memory serves the same bytes.
      if (prefer === "file") throw error;
      return viaProcess(r);
    }
  };
  const regions = layout.regions.map((r) =>
    r.file && prefer !== "process" ? viaFile(r, r.file) : viaProcess(r),
  );
  const fileBacked = regions.filter((r) => r.fd !== fds.get(procPath));
  const other = regions.filter((r) => r.fd === fds.get(procPath));
  return new FdPhysicalMemory(describe([...fds.keys()]), [...mapFileRegions(fileBacked), ...other]);
}

/** Paths as users know them: a map_files entry is the QEMU process's shared RAM (a memfd). */
function describe(paths: string[]): string {
  return paths.map((p) => (p.includes("/map_files/") ? `shared RAM ${p}` : p)).join(" + ");
}

function openOrExplain(path: string): number {
  try {
    return openSync(path, "r+");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new VmsightError("E_MEMORY_ACCESS", `cannot open ${path} (${code})`, {
      hint:
        code === "EACCES" || code === "EPERM"
          ? "run vmsight as root, or as QEMU's user with ptrace allowed (sysctl kernel.yama.ptrace_scope=0)"
          : "is QEMU still running?",
      cause: error,
    });
  }
}
