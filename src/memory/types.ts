import { type PhysAddr, pa } from "../util/address.js";

/** A contiguous range of guest-physical address space backed by something readable. */
export interface PhysRange {
  readonly start: PhysAddr;
  /** Length in bytes. */
  readonly size: bigint;
  readonly name: string;
  readonly writable: boolean;
}

export interface ReadRequest {
  readonly addr: PhysAddr;
  readonly length: number;
}

/** One request of a batch: either the bytes, or why they could not be read. */
export type ReadResult = { ok: true; data: Buffer } | { ok: false; error: Error };

/**
 * Reads of one length each, packed for callers that decode them in place (a level of page-table
 * entries for a thousand walks): request k's bytes are at k × length in `out` where `ok[k]` is 1.
 */
export interface PackedReads {
  readonly out: Buffer;
  readonly ok: Uint8Array;
}

/**
 * Guest-physical memory. Synchronous on purpose: the fast sources (the QEMU process's memory,
 * a shared RAM file, a dump) answer in about a microsecond, and page-table and list walks issue
 * many small dependent reads that would pay more for promise scheduling than for the read.
 */
export interface PhysicalMemory {
  /** Human-readable name of the path that serves reads (logged so users know which one is used). */
  readonly description: string;
  /** Reads are memory copies (a mapped file), not system calls: a cache in front only adds work. */
  readonly mapped?: boolean;
  ranges(): readonly PhysRange[];
  /** Reads exactly `length` bytes or throws FaultError naming the first unbacked address. */
  read(addr: PhysAddr, length: number): Buffer;
  /**
   * Fills `into` from `addr`, like `read`. For bulk readers that reuse one buffer: allocating a
   * fresh multi-megabyte buffer per read costs more than the read itself.
   */
  readInto(addr: PhysAddr, into: Uint8Array): void;
  /**
   * Like `read`, but where the bytes are mapped it returns a view of guest RAM instead of a copy:
   * valid only while the guest stays stopped and unwritten. For values decoded at once (a
   * page-table entry, a struct's fields), never for bytes kept. Sources without it copy.
   */
  peek?(addr: PhysAddr, length: number): Buffer;
  /**
   * A hint that exactly these reads will be made soon (same address, at most that length): a
   * cache fetches them in one batch. Never throws; an unreadable one is left for the read that
   * needs it to report.
   */
  prefetch?(requests: readonly ReadRequest[]): void;
  /** Batched reads: never throws for a bad request, reports it in its slot instead. */
  readMany(requests: readonly ReadRequest[]): ReadResult[];
  /**
   * `length` bytes at each of `addrs` (exact numbers: physical addresses are below 2^52), with
   * no object per read and nothing cached; never throws. Sources without it: `readPacked()`.
   */
  readPacked?(addrs: Float64Array, length: number): PackedReads;
  write(addr: PhysAddr, data: Uint8Array): void;
  close(): void;
}

/** `readMany` in terms of `read`, for sources with no cheaper way to batch. */
export function readEach(mem: Pick<PhysicalMemory, "read">, requests: readonly ReadRequest[]): ReadResult[] {
  return requests.map((r) => {
    try {
      return { ok: true, data: mem.read(r.addr, r.length) };
    } catch (error) {
      return { ok: false, error: error as Error };
    }
  });
}

/** `mem.readPacked`, or the same answer built from `readMany`. */
export function readPacked(mem: PhysicalMemory, addrs: Float64Array, length: number): PackedReads {
  if (mem.readPacked) return mem.readPacked(addrs, length);
  const out = Buffer.alloc(addrs.length * length);
  const ok = new Uint8Array(addrs.length);
  const results = mem.readMany(Array.from(addrs, (a) => ({ addr: pa(BigInt(a)), length })));
  results.forEach((r, k) => {
    if (!r.ok) return;
    r.data.copy(out, k * length);
    ok[k] = 1;
  });
  return { out, ok };
}
