import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/**
 * Optional memory mapping of files through native/vmsight-mem.c (built by setup when a C compiler
 * and Node's headers are there). Without it callers fall back to pread: same bytes, one system
 * call per read. VMSIGHT_MMAP=0 turns it off, to compare or to rule it out.
 */
interface Addon {
  mapFd(fd: number, offset: number, length: number, writable: boolean): ArrayBuffer;
  /** Older builds of the addon lack it. */
  preadMany?(fd: number, offsets: Float64Array, lengths: Uint32Array, out: Buffer): Int32Array;
  readProcess?(pid: number, addresses: Float64Array, lengths: Uint32Array, out: Buffer): Int32Array;
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

/**
 * Many preads from one native call: `out` receives the requests back to back; the result holds
 * the bytes read per request (negative: -errno). Undefined when the addon is not there.
 */
export function preadMany(
  fd: number,
  offsets: Float64Array,
  lengths: Uint32Array,
  out: Buffer,
): Int32Array | undefined {
  return load()?.preadMany?.(fd, offsets, lengths, out);
}

const EFAULT = 14;

/**
 * Many reads of another process's memory (process_vm_readv, up to 1024 a system call), laid out
 * like `preadMany`'s. Undefined without the addon, or when the kernel refuses the call itself
 * (no ptrace rights): then /proc/<pid>/mem, opened with the same rights, is the way.
 */
export function readProcessMany(
  pid: number,
  addresses: Float64Array,
  lengths: Uint32Array,
  out: Buffer,
): Int32Array | undefined {
  const got = load()?.readProcess?.(pid, addresses, lengths, out);
  return got?.some((n) => n < 0 && n !== -EFAULT) ? undefined : got;
}
