import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/**
 * Optional memory mapping of files through native/vmsight-mem.c (built by setup when a C compiler
 * and Node's headers are there). Without it callers fall back to pread: same bytes, one system
 * call per read. VMSIGHT_MMAP=0 turns it off, to compare or to rule it out.
 */
interface Addon {
  mapFd(fd: number, offset: number, length: number, writable: boolean): ArrayBuffer;
}

const ADDON = new URL("../../../native/build/vmsight-mem.node", import.meta.url);
const PAGE = 4096n;
let addon: Addon | null | undefined;

function load(): Addon | null {
  if (addon !== undefined) return addon;
  addon = null;
  if (process.env.VMSIGHT_MMAP === "0") return addon;
  try {
    addon = createRequire(import.meta.url)(fileURLToPath(ADDON)) as Addon;
  } catch {
    // Not built here: pread it is.
  }
  return addon;
}

export function canMapFiles(): boolean {
  return load() !== null;
}

/**
 * A live view of bytes [offset, offset+length) of the open file `fd` (MAP_SHARED: the guest's
 * writes show at once, and ours reach the guest), or undefined when mapping is unavailable or
 * refused. The mapping is released when the view is garbage-collected.
 */
export function mapFileRange(
  fd: number,
  offset: bigint,
  length: number,
  writable: boolean,
): Buffer | undefined {
  const a = load();
  if (!a || length <= 0) return undefined;
  const aligned = offset - (offset % PAGE);
  const lead = Number(offset - aligned);
  try {
    return Buffer.from(a.mapFd(fd, Number(aligned), length + lead, writable), lead, length);
  } catch {
    return undefined;
  }
}
