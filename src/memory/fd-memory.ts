import { closeSync, readSync, writeSync } from "node:fs";
import { type PhysAddr, hex, pa } from "../util/address.js";
import { FaultError, VmsightError } from "../util/errors.js";
import { canMapFiles, mapFileRange, preadMany, readProcessMany } from "./mmap.js";
import {
  type PackedReads,
  type PhysRange,
  type PhysicalMemory,
  type ReadRequest,
  type ReadResult,
  readEach,
} from "./types.js";

/** A guest-physical range served by descriptor `fd` at `fdOffset` (a host address or a file offset). */
export interface FdRegion extends PhysRange {
  readonly fd: number;
  readonly fdOffset: bigint;
  /** The same bytes memory-mapped, when the descriptor is a file that could be mapped. */
  readonly view?: Buffer;
  /** `fd` is this process's /proc/<pid>/mem (fdOffset a host address): batches use process_vm_readv. */
  readonly pid?: number;
}

interface NumericRegion extends FdRegion {
  readonly startN: number;
  readonly endN: number;
  readonly fdOffsetN: number;
}

/** Reads for the native reader: positions in one descriptor (or in one process's memory). */
interface NativeBatch {
  readonly fd: number;
  readonly pid: number | undefined;
  readonly offsets: readonly number[] | Float64Array;
}

/** The requests of one batch that go to one descriptor. */
interface Batch extends NativeBatch {
  readonly indexes: number[];
  readonly offsets: number[];
  bytes: number;
}

/** Largest single mapping: keeps each view within what a Buffer may span. */
const MAP_CHUNK = 1n << 30n;

/**
 * Maps each region of an open file into memory where possible, in pieces of at most 1 GiB;
 * a region that cannot be mapped is returned as it was (served by pread).
 */
export function mapFileRegions(regions: readonly FdRegion[]): FdRegion[] {
  if (!canMapFiles()) return [...regions];
  return regions.flatMap((r) => {
    const pieces: FdRegion[] = [];
    for (let done = 0n; done < r.size; done += MAP_CHUNK) {
      const size = r.size - done < MAP_CHUNK ? r.size - done : MAP_CHUNK;
      const view = mapFileRange(r.fd, r.fdOffset + done, Number(size), r.writable);
      if (!view) return [r];
      pieces.push({ ...r, start: pa(r.start + done), size, fdOffset: r.fdOffset + done, view });
    }
    return pieces;
  });
}

/**
 * Guest-physical memory read with pread/pwrite. The same code serves the QEMU process's
 * `/proc/<pid>/mem` (offsets are host virtual addresses) and a shared `memory-backend-file`
 * (offsets are file offsets): only the region table differs, and one table may mix both.
 */
export class FdPhysicalMemory implements PhysicalMemory {
  readonly description: string;
  /** Every RAM region is mapped: a read is a memory copy, not a system call. */
  readonly mapped: boolean;
  private readonly regions: FdRegion[];
  /** The same regions with number bounds, for batches (see readMany). */
  private readonly numeric: NumericRegion[];
  private closed = false;

  constructor(description: string, regions: readonly FdRegion[]) {
    this.regions = [...regions].sort((a, b) => (a.start < b.start ? -1 : 1));
    this.numeric = this.regions.map((r) => ({
      ...r,
      startN: Number(r.start),
      endN: Number(r.start + r.size),
      fdOffsetN: Number(r.fdOffset),
    }));
    this.mapped =
      this.regions.some((r) => r.view) && this.regions.every((r) => r.view !== undefined || !r.writable);
    this.description = this.mapped ? `${description} (mapped)` : description;
  }

  ranges(): readonly PhysRange[] {
    return this.regions;
  }

  read(addr: PhysAddr, length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    this.readInto(addr, out);
    return out;
  }

  readInto(addr: PhysAddr, into: Uint8Array): void {
    this.forEachPiece(addr, into.length, (region, at, done, n) => {
      if (region.view) {
        const from = Number(at - region.start);
        into.set(region.view.subarray(from, from + n), done);
        return;
      }
      // Host addresses and file offsets stay below 2^47: a number position is exact and faster.
      const got = readSync(region.fd, into, done, n, Number(region.fdOffset + (at - region.start)));
      if (got !== n) throw new FaultError("phys", pa(at + BigInt(got)), `short read from ${region.name}`);
    });
  }

  /** A live view where the range is mapped (no copy): see PhysicalMemory.peek. */
  peek(addr: PhysAddr, length: number): Buffer {
    const region = this.closed ? undefined : this.regionAt(addr);
    if (region?.view && length >= 0 && addr + BigInt(length) <= region.start + region.size) {
      const from = Number(addr - region.start);
      return region.view.subarray(from, from + length);
    }
    return this.read(addr, length);
  }

  /**
   * Requests that lie in one pread-served region go to the native reader together, one call per
   * descriptor (a walk's level over a thousand tasks is a thousand scattered reads); anything
   * else, or a request that comes back short, is read alone so its error names the exact address.
   * Positions are numbers here: guest-physical addresses stay below 2^52 and host addresses and
   * file offsets below 2^47, so they are exact, and a batch of thousands allocates no bigints.
   */
  readMany(requests: readonly ReadRequest[]): ReadResult[] {
    const results: ReadResult[] = new Array(requests.length);
    const byFd = new Map<number, Batch>();
    for (let index = 0; index < requests.length; index++) {
      const r = requests[index]!;
      const at = Number(r.addr);
      const region = this.closed ? undefined : this.spanAt(at, r.length);
      if (region === undefined || region.view) {
        results[index] = readEach(this, [r])[0]!;
        continue;
      }
      let batch = byFd.get(region.fd);
      if (!batch) {
        batch = { fd: region.fd, pid: region.pid, indexes: [], offsets: [], bytes: 0 };
        byFd.set(region.fd, batch);
      }
      batch.indexes.push(index);
      batch.offsets.push(region.fdOffsetN + (at - region.startN));
      batch.bytes += r.length;
    }
    for (const batch of byFd.values()) this.readBatch(batch, requests, results);
    return results;
  }

  private readBatch(batch: Batch, requests: readonly ReadRequest[], results: ReadResult[]): void {
    const { indexes } = batch;
    const lengths = new Uint32Array(indexes.length);
    for (let k = 0; k < indexes.length; k++) lengths[k] = requests[indexes[k]!]!.length;
    const out = Buffer.allocUnsafe(batch.bytes);
    const got = readNative(batch, lengths, out);
    let at = 0;
    for (let k = 0; k < indexes.length; k++) {
      const n = lengths[k]!;
      const index = indexes[k]!;
      results[index] =
        got?.[k] === n
          ? { ok: true, data: out.subarray(at, at + n) }
          : readEach(this, [requests[index]!])[0]!;
      at += n;
    }
  }

  /**
   * readPacked (see PhysicalMemory): mapped regions are copied from, the rest goes to the native
   * reader in one call when it lies behind one descriptor (all of a QEMU's RAM is behind its
   * /proc/<pid>/mem); a request anywhere else is read alone.
   */
  readPacked(addrs: Float64Array, length: number): PackedReads {
    const n = addrs.length;
    const out = Buffer.allocUnsafe(n * length);
    const ok = new Uint8Array(n);
    const indexes = new Uint32Array(n);
    const offsets = new Float64Array(n);
    let count = 0;
    let batch: NumericRegion | undefined;
    // Nearly every address lies in the region of the one before: a guest's RAM is a region or two.
    let region: NumericRegion | undefined;
    for (let k = 0; k < n; k++) {
      const at = addrs[k]!;
      if (region === undefined || at < region.startN || at + length > region.endN)
        region = this.closed ? undefined : this.spanAt(at, length);
      if (region?.view) {
        const from = at - region.startN;
        region.view.copy(out, k * length, from, from + length);
        ok[k] = 1;
      } else if (region && (batch === undefined || region.fd === batch.fd)) {
        batch ??= region;
        indexes[count] = k;
        offsets[count++] = region.fdOffsetN + (at - region.startN);
      } else this.readOneInto(at, length, out, ok, k);
    }
    if (batch !== undefined) {
      const read = { fd: batch.fd, pid: batch.pid, offsets: offsets.subarray(0, count) };
      this.readPackedBatch(read, indexes.subarray(0, count), addrs, length, out, ok);
    }
    return { out, ok };
  }

  /** The batch's reads into their places in `out`: straight there when the batch is all of them. */
  private readPackedBatch(
    batch: NativeBatch,
    indexes: Uint32Array,
    addrs: Float64Array,
    length: number,
    out: Buffer,
    ok: Uint8Array,
  ): void {
    const whole = indexes.length === addrs.length;
    const packed = whole ? out : Buffer.allocUnsafe(indexes.length * length);
    const got = readNative(batch, new Uint32Array(indexes.length).fill(length), packed);
    for (let i = 0; i < indexes.length; i++) {
      const k = indexes[i]!;
      if (got?.[i] !== length) this.readOneInto(addrs[k]!, length, out, ok, k);
      else {
        if (!whole) packed.copy(out, k * length, i * length, (i + 1) * length);
        ok[k] = 1;
      }
    }
  }

  private readOneInto(at: number, length: number, out: Buffer, ok: Uint8Array, k: number): void {
    try {
      this.readInto(pa(BigInt(at)), out.subarray(k * length, (k + 1) * length));
      ok[k] = 1;
    } catch (error) {
      if (!(error instanceof VmsightError)) throw error;
    }
  }

  /** The region holding all of [at, at+length), by number; undefined when none does. */
  private spanAt(at: number, length: number): NumericRegion | undefined {
    const rs = this.numeric;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = rs[mid]!;
      if (at < r.startN) hi = mid - 1;
      else if (at >= r.endN) lo = mid + 1;
      else return length > 0 && at + length <= r.endN ? r : undefined;
    }
    return undefined;
  }

  write(addr: PhysAddr, data: Uint8Array): void {
    this.forEachPiece(addr, data.length, (region, at, done, n) => {
      if (!region.writable) throw new FaultError("phys", pa(at), `${region.name} is read-only`);
      if (region.view) {
        region.view.set(data.subarray(done, done + n), Number(at - region.start));
        return;
      }
      const put = writeSync(region.fd, data, done, n, Number(region.fdOffset + (at - region.start)));
      if (put !== n) throw new FaultError("phys", pa(at + BigInt(put)), `short write to ${region.name}`);
    });
  }

  private forEachPiece(
    addr: bigint,
    length: number,
    step: (region: FdRegion, at: bigint, done: number, n: number) => void,
  ): void {
    if (this.closed) throw new VmsightError("E_CLOSED", "guest memory was already closed");
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new VmsightError("E_LENGTH", `invalid read length ${length}`);
    }
    let done = 0;
    while (done < length) {
      const at = addr + BigInt(done);
      const region = this.regionAt(at);
      if (!region) {
        throw new FaultError(
          "phys",
          pa(at),
          `no guest RAM backs this address (read of ${length} bytes from ${hex(addr)})`,
        );
      }
      const n = Math.min(length - done, Number(region.start + region.size - at));
      step(region, at, done, n);
      done += n;
    }
  }

  private regionAt(addr: bigint): FdRegion | undefined {
    let lo = 0;
    let hi = this.regions.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.regions[mid]!;
      if (addr < r.start) hi = mid - 1;
      else if (addr >= r.start + r.size) lo = mid + 1;
      else return r;
    }
    return undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of new Set(this.regions.map((r) => r.fd))) closeSync(fd);
  }
}

/**
 * One native call for a batch, laid out in request order in `out`: process_vm_readv where the
 * descriptor is a process's memory (and the kernel allows it), else a pread each.
 */
function readNative(batch: NativeBatch, lengths: Uint32Array, out: Buffer): Int32Array | undefined {
  const offsets = batch.offsets instanceof Float64Array ? batch.offsets : Float64Array.from(batch.offsets);
  return (
    (batch.pid !== undefined ? readProcessMany(batch.pid, offsets, lengths, out) : undefined) ??
    preadMany(batch.fd, offsets, lengths, out)
  );
}
