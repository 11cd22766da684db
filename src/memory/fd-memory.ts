import { closeSync, readSync, writeSync } from "node:fs";
import { type PhysAddr, hex, pa } from "../util/address.js";
import { FaultError, VmsightError } from "../util/errors.js";
import { canMapFiles, mapFileRange, preadMany, readProcessMany } from "./mmap.js";
import { type PhysRange, type PhysicalMemory, type ReadRequest, type ReadResult, readEach } from "./types.js";

/** A guest-physical range served by descriptor `fd` at `fdOffset` (a host address or a file offset). */
export interface FdRegion extends PhysRange {
  readonly fd: number;
  readonly fdOffset: bigint;
  /** The same bytes memory-mapped, when the descriptor is a file that could be mapped. */
  readonly view?: Buffer;
  /** `fd` is this process's /proc/<pid>/mem (fdOffset a host address): batches use process_vm_readv. */
  readonly pid?: number;
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
  private closed = false;

  constructor(description: string, regions: readonly FdRegion[]) {
    this.regions = [...regions].sort((a, b) => (a.start < b.start ? -1 : 1));
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
   */
  readMany(requests: readonly ReadRequest[]): ReadResult[] {
    const results: ReadResult[] = new Array(requests.length);
    const byFd = new Map<number, { region: FdRegion; index: number }[]>();
    requests.forEach((r, index) => {
      const region = this.closed ? undefined : this.regionAt(r.addr);
      if (region && !region.view && r.length > 0 && r.addr + BigInt(r.length) <= region.start + region.size) {
        const group = byFd.get(region.fd) ?? byFd.set(region.fd, []).get(region.fd)!;
        group.push({ region, index });
      } else results[index] = readEach(this, [r])[0]!;
    });
    for (const [fd, group] of byFd) {
      const offsets = new Float64Array(group.length);
      const lengths = new Uint32Array(group.length);
      group.forEach(({ region, index }, k) => {
        const r = requests[index]!;
        offsets[k] = Number(region.fdOffset + (r.addr - region.start));
        lengths[k] = r.length;
      });
      const out = Buffer.allocUnsafe(lengths.reduce((a, b) => a + b, 0));
      const pid = group[0]!.region.pid;
      const got =
        (pid !== undefined ? readProcessMany(pid, offsets, lengths, out) : undefined) ??
        preadMany(fd, offsets, lengths, out);
      let at = 0;
      group.forEach(({ index }, k) => {
        const n = lengths[k]!;
        results[index] =
          got?.[k] === n
            ? { ok: true, data: out.subarray(at, at + n) }
            : readEach(this, [requests[index]!])[0]!;
        at += n;
      });
    }
    return results;
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
