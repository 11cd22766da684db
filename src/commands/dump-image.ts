import { writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { ramRanges, writeLime, writeRaw } from "../memory/images.js";
import { type DumpFormat, type DumpSidecar, sidecarPath } from "../qemu/dump.js";
import type { Target } from "../qemu/session.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";

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
 * guest while it writes, whatever `live` says; progress from query-dump); LiME and raw are copied from guest RAM by
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
    await qemuElfDump(target, path, opts.progress);
    return { format, path, sidecar: undefined, bytes, live: false };
  }
  const running = (await target.runState()).running;
  const cpus: Record<string, string>[] = [];
  for (let cpu = 0; cpu < target.vcpuCount(); cpu++) {
    const regs = await target.registers(cpu);
    cpus.push(Object.fromEntries([...regs].map(([k, v]) => [k, hex(v)])));
  }
  // Registers come through QEMU's gdbstub, whose client stops the guest until it leaves: a live
  // copy would otherwise hold the guest stopped throughout.
  if (opts.live && running) await target.resume();
  (format === "lime" ? writeLime : writeRaw)(target.memory.source, path, opts.progress);
  const sidecar: DumpSidecar = {
    format,
    ranges: ranges.map((r) => ({ start: hex(r.start), size: hex(r.size) })),
    cpus,
  };
  writeFileSync(sidecarPath(path), `${JSON.stringify(sidecar, null, 2)}\n`);
  return { format, path, sidecar: sidecarPath(path), bytes, live: opts.live === true };
}

/** QEMU writes at disk speed; a dump taking longer than this is stuck. */
const ELF_DUMP_TIMEOUT_MS = 600_000;
const ELF_POLL_MS = 200;

interface QueryDump {
  readonly status: "none" | "active" | "completed" | "failed";
  readonly completed: number;
  readonly total: number;
}

/**
 * QEMU's dump-guest-memory in the background (`detach`), polled with query-dump: the command
 * alone says nothing until it ends, and `query-dump` is how QEMU tells how far it is.
 */
async function qemuElfDump(target: Target, path: string, progress: DumpOptions["progress"]): Promise<void> {
  await target.qmp.execute("dump-guest-memory", { paging: false, protocol: `file:${path}`, detach: true });
  const deadline = Date.now() + ELF_DUMP_TIMEOUT_MS;
  for (;;) {
    const q = await target.qmp.execute<QueryDump>("query-dump");
    if (q.status === "failed")
      throw new VmsightError(
        "E_DUMP",
        `QEMU failed to write ${path} (after ${q.completed} of ${q.total} bytes)`,
        {
          hint: "check that the directory exists, is writable by QEMU, and has room for the guest's RAM",
        },
      );
    if (q.status === "completed") {
      progress?.(BigInt(q.total), BigInt(q.total));
      return;
    }
    if (q.status === "active") progress?.(BigInt(q.completed), BigInt(q.total));
    if (Date.now() > deadline)
      throw new VmsightError(
        "E_DUMP",
        `QEMU's dump to ${path} did not end in ${ELF_DUMP_TIMEOUT_MS / 1000} s`,
        {
          hint: "QEMU may still be writing it: wait for query-dump to say completed, then retry",
        },
      );
    await new Promise((r) => setTimeout(r, ELF_POLL_MS));
  }
}
