import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { ramRanges, writeLime, writeRaw } from "../memory/images.js";
import { type DumpFormat, type DumpSidecar, sidecarPath } from "../qemu/dump.js";
import type { Target } from "../qemu/session.js";
import { hex } from "../util/address.js";

export type { DumpFormat };

export interface DumpReport {
  readonly format: DumpFormat;
  readonly path: string;
  /** vmsight's sidecar (RAM ranges, vCPU registers) beside a LiME or raw image. */
  readonly sidecar: string | undefined;
  /** Bytes of guest RAM copied. */
  readonly bytes: bigint;
  /** True when the guest ran during the copy. */
  readonly live: boolean;
}

export interface DumpOptions {
  readonly live?: boolean;
  readonly progress?: (done: bigint, total: bigint) => void;
}

/**
 * Writes a memory image of the live guest. ELF is QEMU's own dump-guest-memory (QEMU stops the
 * guest while it writes, whatever `live` says); LiME and raw are copied from guest RAM by
 * vmsight, with a sidecar of what those formats cannot hold (RAM ranges, registers). The caller
 * decides whether the guest is paused around this.
 */
export async function writeImage(
  target: Target,
  format: DumpFormat,
  out: string,
  opts: DumpOptions = {},
): Promise<DumpReport> {
  const path = resolve(out);
  const ranges = ramRanges(target.memory.source);
  const bytes = ranges.reduce((s, r) => s + r.size, 0n);
  if (format === "elf") {
    await target.qmp.execute(
      "dump-guest-memory",
      { paging: false, protocol: `file:${path}` },
      { timeoutMs: 600_000 },
    );
    return { format, path, sidecar: undefined, bytes, live: false };
  }
  const cpus: Record<string, string>[] = [];
  for (let cpu = 0; cpu < target.vcpuCount(); cpu++) {
    const regs = await target.registers(cpu);
    cpus.push(Object.fromEntries([...regs].map(([k, v]) => [k, hex(v)])));
  }
  (format === "lime" ? writeLime : writeRaw)(target.memory.source, path, opts.progress);
  const sidecar: DumpSidecar = {
    format,
    ranges: ranges.map((r) => ({ start: hex(r.start), size: hex(r.size) })),
    cpus,
  };
  writeFileSync(sidecarPath(path), `${JSON.stringify(sidecar, null, 2)}\n`);
  return { format, path, sidecar: sidecarPath(path), bytes, live: opts.live === true };
}
