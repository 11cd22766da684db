import { closeSync, openSync, readSync } from "node:fs";
import type { PhysicalMemory } from "../memory/types.js";
import type { Target } from "../qemu/session.js";
import { residentRuns } from "./slide.js";

/**
 * Runs of guest RAM the guest has written, from the QEMU process's pagemap, or all of RAM when
 * the pagemap cannot be read. Early in boot that is a few hundred MiB at most, so polling it
 * while the decompressor runs stays cheap.
 */
export function scanRuns(target: Target): { start: bigint; size: number }[] {
  const runs: { start: bigint; size: number }[] = [];
  let fd: number | undefined;
  try {
    fd = openSync(`/proc/${target.pid}/pagemap`, "r");
    for (const r of target.layout.regions) {
      if (!r.writable) continue;
      const entries = Buffer.alloc(Number(r.size / 4096n) * 8);
      const got = readSync(fd, entries, 0, entries.length, Number((r.hva / 4096n) * 8n));
      runs.push(...residentRuns(entries.subarray(0, got), r.start));
    }
    return runs;
  } catch {
    return target.memory.ranges().map((r) => ({ start: r.start as bigint, size: Number(r.size) }));
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Guest RAM as the boot-time pollers see it: uncached reads, and where the guest has written. */
export interface ResidentRam {
  /** Reads that go to RAM every time: the guest is running while it is polled. */
  readonly memory: PhysicalMemory;
  runs(): { start: bigint; size: number }[];
}

export function residentRam(target: Target): ResidentRam {
  return { memory: target.memory.source, runs: () => scanRuns(target) };
}
