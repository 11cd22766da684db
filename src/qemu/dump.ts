import { closeSync, existsSync, openSync, readFileSync, readSync } from "node:fs";
import { extname } from "node:path";
import { type DumpCpu, openElfCore } from "../memory/elf-core.js";
import type { FdPhysicalMemory } from "../memory/fd-memory.js";
import { isLime, openLime, openRaw } from "../memory/images.js";
import { CachedPhysicalMemory } from "../memory/page-cache.js";
import type { PhysRange } from "../memory/types.js";
import { pa, parseAddress } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { Machine } from "./machine.js";

export type DumpFormat = "elf" | "lime" | "raw";

/** Extensions a raw image goes by (it has no magic of its own). */
const RAW_EXTENSIONS = new Set([".raw", ".mem", ".bin", ".img", ".dd"]);

/**
 * What vmsight writes beside a LiME or raw image (`OUT.vmsight.json`), since neither format
 * records it: the RAM ranges (a raw image's holes are zeros, not absent) and each vCPU's
 * registers, "0x…" strings keyed as `vmsight regs` names them.
 */
export interface DumpSidecar {
  readonly format: "lime" | "raw";
  readonly ranges: readonly { start: string; size: string }[];
  readonly cpus: readonly Readonly<Record<string, string>>[];
}

export const sidecarPath = (image: string) => `${image}.vmsight.json`;

/**
 * A guest frozen in a memory image: QEMU's ELF dump, LiME or raw. Everything reads as at the
 * moment of the dump. LiME and raw images carry no registers unless vmsight's sidecar is beside
 * them: such a machine has no vCPUs, and the kernel's page tables must be searched for.
 */
export class DumpMachine implements Machine {
  private constructor(
    readonly memory: CachedPhysicalMemory,
    private readonly cpus: readonly DumpCpu[],
    readonly format: DumpFormat,
  ) {}

  static open(path: string): DumpMachine {
    const format = detectFormat(path);
    if (format !== "elf") {
      const sidecar = readSidecar(path);
      const memory: FdPhysicalMemory =
        format === "lime" ? openLime(path) : openRaw(path, sidecar && sidecarRanges(sidecar, path));
      return new DumpMachine(
        new CachedPhysicalMemory(memory),
        sidecar ? sidecarCpus(sidecar, path) : [],
        format,
      );
    }
    const core = openElfCore(path);
    if (core.cpus.length === 0) {
      core.memory.close();
      throw new VmsightError("E_DUMP", `${path} has no QEMU CPU notes, so its page tables cannot be found`, {
        hint: "use a dump from QEMU's dump-guest-memory (ELF format)",
      });
    }
    return new DumpMachine(new CachedPhysicalMemory(core.memory), core.cpus, "elf");
  }

  async registers(cpu = 0): Promise<Map<string, bigint>> {
    const regs = this.cpus[cpu];
    if (!regs)
      throw new VmsightError(
        "E_CPU",
        this.cpus.length === 0
          ? `the ${this.format} image records no vCPU registers`
          : `the dump has no vCPU ${cpu}`,
        {
          hint:
            this.cpus.length === 0
              ? "the reading commands find the kernel without them"
              : `use --cpu 0..${this.cpus.length - 1}`,
        },
      );
    return new Map(regs);
  }

  /** A dump never runs. */
  onRun(): () => void {
    return () => {};
  }

  vcpuCount(): number {
    return this.cpus.length;
  }

  async close(): Promise<void> {
    this.memory.close();
  }
}

/** ELF and LiME by their magic; raw by its extension (or a sidecar saying so). */
function detectFormat(path: string): DumpFormat {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (error) {
    throw new VmsightError("E_DUMP", `cannot open dump ${path} (${(error as NodeJS.ErrnoException).code})`, {
      hint: "make one with `vmsight dump OUT` (ELF, LiME or raw) or QMP dump-guest-memory",
    });
  }
  const head = Buffer.alloc(4);
  const n = readSync(fd, head, 0, 4, 0);
  closeSync(fd);
  if (n === 4 && isLime(head)) return "lime";
  if (n === 4 && head.readUInt32BE(0) === 0x7f454c46) return "elf";
  if (RAW_EXTENSIONS.has(extname(path).toLowerCase()) || existsSync(sidecarPath(path))) return "raw";
  return "elf"; // the ELF reader says what is wrong with the file
}

function readSidecar(path: string): DumpSidecar | undefined {
  const file = sidecarPath(path);
  if (!existsSync(file)) return undefined;
  try {
    const s = JSON.parse(readFileSync(file, "utf8")) as DumpSidecar;
    if (!Array.isArray(s.ranges) || !Array.isArray(s.cpus)) throw new Error("no ranges or cpus");
    return s;
  } catch (error) {
    throw new VmsightError("E_DUMP", `${file} is not a vmsight sidecar: ${(error as Error).message}`, {
      hint: "remove it to read the image without it",
    });
  }
}

function sidecarNumber(text: unknown, file: string): bigint {
  const v = typeof text === "string" ? parseAddress(text) : undefined;
  if (v === undefined)
    throw new VmsightError("E_DUMP", `${sidecarPath(file)}: ${String(text)} is not a "0x…" number`);
  return v;
}

function sidecarRanges(s: DumpSidecar, file: string): PhysRange[] {
  return s.ranges.map((r) => ({
    start: pa(sidecarNumber(r.start, file)),
    size: sidecarNumber(r.size, file),
    name: "raw",
    writable: false,
  }));
}

function sidecarCpus(s: DumpSidecar, file: string): DumpCpu[] {
  return s.cpus.map((regs) => new Map(Object.entries(regs).map(([k, v]) => [k, sidecarNumber(v, file)])));
}
