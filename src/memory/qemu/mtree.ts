import { type PhysAddr, pa } from "../../util/address.js";

/** One line of a flat view: a guest-physical range and the memory region that serves it. */
export interface FlatRange {
  readonly start: PhysAddr;
  readonly size: bigint;
  readonly kind: string;
  readonly region: string;
  /** Offset of `start` inside the region (QEMU prints it as `@…` when not zero). */
  readonly regionOffset: bigint;
}

const LINE = /^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ([a-z/]+)\): (\S+)(?: @([0-9a-f]+))?/;

/**
 * Parses HMP `info mtree -f` and returns the flat view of the CPU's "memory" address space.
 * QEMU groups address spaces that share a view under one "FlatView #N" heading.
 */
export function parseFlatView(text: string, addressSpace = "memory"): FlatRange[] {
  const ranges: FlatRange[] = [];
  let inView = false;
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("FlatView")) {
      if (inView) break;
      continue;
    }
    if (line.trimStart().startsWith("AS ")) {
      if (line.includes(`AS "${addressSpace}"`)) inView = true;
      continue;
    }
    if (!inView) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const start = BigInt(`0x${m[1]}`);
    const end = BigInt(`0x${m[2]}`);
    ranges.push({
      start: pa(start),
      size: end - start + 1n,
      kind: m[3]!,
      region: m[4]!,
      regionOffset: m[5] ? BigInt(`0x${m[5]}`) : 0n,
    });
  }
  return ranges;
}

/** `gpa2hva` answers "Host virtual address for 0x1000 (pc.ram) is 0x7f…" or an error sentence. */
export function parseGpa2hva(text: string): bigint | undefined {
  const m = /is (0x[0-9a-f]+)/.exec(text);
  return m ? BigInt(m[1]!) : undefined;
}

export interface HostMapping {
  readonly start: bigint;
  readonly end: bigint;
  readonly perms: string;
  readonly offset: bigint;
  readonly path: string;
}

/** Parses `/proc/<pid>/maps`. */
export function parseProcMaps(text: string): HostMapping[] {
  const out: HostMapping[] = [];
  for (const line of text.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      start: BigInt(`0x${m[1]}`),
      end: BigInt(`0x${m[2]}`),
      perms: m[3]!,
      offset: BigInt(`0x${m[4]}`),
      path: m[5]!.trim(),
    });
  }
  return out;
}
