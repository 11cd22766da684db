import { type PhysAddr, pa } from "../util/address.js";
import { FaultError } from "../util/errors.js";
import { type PhysRange, type PhysicalMemory, type ReadRequest, type ReadResult, readEach } from "./types.js";

interface Segment {
  start: bigint;
  bytes: Buffer;
  name: string;
  writable: boolean;
}

/**
 * Guest-physical memory held in Node buffers: for tests that craft page tables or guest
 * structures, and for raw dumps. Gaps between segments are unbacked and fault.
 */
export class BufferPhysicalMemory implements PhysicalMemory {
  readonly description: string;
  private readonly segments: Segment[] = [];

  constructor(description = "buffer") {
    this.description = description;
  }

  /** Adds a segment of `size` zero bytes (or the given bytes) at `start`. */
  map(start: bigint | number, sizeOrBytes: number | Buffer, name = "ram", writable = true): Buffer {
    const bytes = typeof sizeOrBytes === "number" ? Buffer.alloc(sizeOrBytes) : sizeOrBytes;
    this.segments.push({ start: BigInt(start), bytes, name, writable });
    this.segments.sort((a, b) => (a.start < b.start ? -1 : 1));
    return bytes;
  }

  ranges(): readonly PhysRange[] {
    return this.segments.map((s) => ({
      start: pa(s.start),
      size: BigInt(s.bytes.length),
      name: s.name,
      writable: s.writable,
    }));
  }

  private locate(addr: bigint): Segment | undefined {
    return this.segments.find((s) => addr >= s.start && addr < s.start + BigInt(s.bytes.length));
  }

  read(addr: PhysAddr, length: number): Buffer {
    const out = Buffer.alloc(length);
    this.copy(addr, length, (seg, off, done, n) => seg.bytes.copy(out, done, off, off + n));
    return out;
  }

  readInto(addr: PhysAddr, into: Uint8Array): void {
    this.copy(addr, into.length, (seg, off, done, n) => seg.bytes.copy(into, done, off, off + n));
  }

  readMany(requests: readonly ReadRequest[]): ReadResult[] {
    return readEach(this, requests);
  }

  write(addr: PhysAddr, data: Uint8Array): void {
    this.copy(addr, data.length, (seg, off, done, n) => {
      if (!seg.writable) throw new FaultError("phys", addr + BigInt(done), `${seg.name} is read-only`);
      Buffer.from(data.buffer, data.byteOffset + done, n).copy(seg.bytes, off);
    });
  }

  private copy(
    addr: bigint,
    length: number,
    step: (seg: Segment, offset: number, done: number, n: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const at = addr + BigInt(done);
      const seg = this.locate(at);
      if (!seg) throw new FaultError("phys", at, "no guest RAM backs this address");
      const off = Number(at - seg.start);
      const n = Math.min(length - done, seg.bytes.length - off);
      step(seg, off, done, n);
      done += n;
    }
  }

  close(): void {}
}
