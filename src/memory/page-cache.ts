import { type PhysAddr, pa } from "../util/address.js";
import {
  type PackedReads,
  type PhysRange,
  type PhysicalMemory,
  type ReadRequest,
  type ReadResult,
  readEach,
  readPacked,
} from "./types.js";

const PAGE = 4096;
/** Reads larger than this (kernel image, BTF, user dumps) go straight through: caching them would only evict. */
const BYPASS = 64 * 1024;
/** Pages fetched together on a miss (an aligned 16 KiB block). */
const READ_AHEAD = 4;
/** Reads this short that miss are served uncached. */
const SMALL = 16;
/**
 * Reads at least this long (whole objects, or an object's span of fields: a task_struct's,
 * an mm_struct's pgd..env_end) trigger read-ahead: such objects sit side by side in slabs.
 */
const READ_AHEAD_MIN = 256;

/**
 * A page cache over guest-physical memory, valid only while the guest is stopped: walks over
 * guest structures re-read the same page-table and slab pages many times, and each uncached read
 * is a system call. The owner must call `invalidate()` whenever the guest may have run
 * (Target does, on every resume it causes or hears of). Writes go through and drop the pages they
 * touch. Buffers returned by `read` may be views into the cache: treat them as read-only.
 */
export class CachedPhysicalMemory implements PhysicalMemory {
  private pages = new Map<number, Buffer>();
  /** Pages read once by a small read: a second small read fills the page. */
  private touched = new Set<number>();
  /** Reads fetched ahead by `prefetch`, by their exact address (a number: exact below 2^53, and hashed faster than a bigint). */
  private spans = new Map<number, Buffer>();
  hits = 0;
  misses = 0;

  /** The source is mapped memory: every read goes straight to it. */
  private readonly direct: boolean;

  constructor(
    private readonly inner: PhysicalMemory,
    private readonly maxPages = 16_384,
  ) {
    this.direct = inner.mapped === true;
  }

  /** Reads go straight to mapped memory: batching and prefetching gain nothing. */
  get mapped(): boolean {
    return this.direct;
  }

  /** The memory under the cache, for bulk readers that gain nothing from it. */
  get source(): PhysicalMemory {
    return this.inner;
  }

  get description(): string {
    return this.inner.description;
  }

  ranges(): readonly PhysRange[] {
    return this.inner.ranges();
  }

  invalidate(): void {
    this.pages = new Map();
    this.touched = new Set();
    this.spans = new Map();
  }

  read(addr: PhysAddr, length: number): Buffer {
    if (length > BYPASS || this.direct) return this.inner.read(addr, length);
    // Guest-physical addresses stay below 2^52: as a number, exact and cheaper than bigint arithmetic.
    const at = Number(addr);
    const span = this.fromSpan(at, length);
    if (span) return span;
    const index = Math.floor(at / PAGE);
    if (length <= SMALL && !this.pages.has(index) && !this.touched.has(index)) {
      // A lone field or page-table entry in a page not seen yet: copying the whole page costs
      // more than the syscall it might save (user page tables are scattered, one entry each).
      // A page asked for twice is worth caching (shared creds, an mm's fields read one by one).
      this.touched.add(index);
      this.misses++;
      return this.inner.read(addr, length);
    }
    try {
      return this.readPages(addr, length);
    } catch {
      // Read again uncached: the error then names the exact first unbacked address.
      return this.inner.read(addr, length);
    }
  }

  private readPages(addr: PhysAddr, length: number): Buffer {
    const at = Number(addr);
    const first = Math.floor(at / PAGE);
    const offset = at % PAGE;
    const count = Math.ceil((offset + length) / PAGE);
    // A view, not a copy: callers treat read results as read-only, and this is the hot path.
    if (count === 1) return this.page(first, length).subarray(offset, offset + length);
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    for (let i = 0; i < count; i++) {
      const from = i === 0 ? offset : 0;
      const n = Math.min(PAGE - from, length - done);
      this.page(first + i, length).copy(out, done, from, from + n);
      done += n;
    }
    return out;
  }

  /** `want` is the size of the read that needs the page: only object-sized reads read ahead. */
  private page(index: number, want: number): Buffer {
    const cached = this.pages.get(index);
    if (cached) {
      this.hits++;
      return cached;
    }
    this.misses++;
    if (this.pages.size >= this.maxPages) this.pages = new Map();
    const block = want >= READ_AHEAD_MIN ? this.readAhead(index) : undefined;
    return block ?? this.fill(index, this.inner.read(pa(BigInt(index) * BigInt(PAGE)), PAGE));
  }

  /**
   * One system call for the aligned block around a missed page: kernel objects such as
   * task_structs sit in multi-page slabs, so the neighbours are usually wanted next. Small reads
   * (page-table entries, single fields) do not read ahead: their neighbours rarely are. A block that
   * runs off backed memory is not an error here; the caller then reads the single page.
   */
  private readAhead(index: number): Buffer | undefined {
    const base = index - (index % READ_AHEAD);
    let block: Buffer;
    try {
      block = this.inner.read(pa(BigInt(base) * BigInt(PAGE)), READ_AHEAD * PAGE);
    } catch {
      return undefined;
    }
    for (let i = 0; i < READ_AHEAD; i++) {
      if (!this.pages.has(base + i)) this.pages.set(base + i, block.subarray(i * PAGE, (i + 1) * PAGE));
    }
    return this.pages.get(index);
  }

  private fill(index: number, bytes: Buffer): Buffer {
    this.pages.set(index, bytes);
    return bytes;
  }

  /** Cached reads are already views of stable copies; a mapped source may hand out its own view. */
  peek(addr: PhysAddr, length: number): Buffer {
    if (this.direct) return this.inner.peek?.(addr, length) ?? this.inner.read(addr, length);
    return this.read(addr, length);
  }

  /**
   * Fetches these reads in one batch (`readMany`, which the native reader serves with one call),
   * kept by exact address until the guest runs: a walk that knows the next level's addresses for
   * every task reads them all at once instead of one system call per dependent read. Exact reads,
   * not pages: a page-table entry or a struct's span is a few bytes of a page, and on
   * /proc/<pid>/mem the cost of a read grows with its length.
   */
  prefetch(requests: readonly ReadRequest[]): void {
    if (this.direct) return;
    const wanted: ReadRequest[] = [];
    for (const r of requests) {
      if (r.length > 0 && r.length <= BYPASS && !this.spans.has(Number(r.addr))) wanted.push(r);
    }
    if (wanted.length === 0) return;
    const results = this.inner.readMany(wanted);
    for (let k = 0; k < results.length; k++) {
      const r = results[k]!;
      if (r.ok) this.spans.set(Number(wanted[k]!.addr), r.data);
    }
  }

  readInto(addr: PhysAddr, into: Uint8Array): void {
    if (into.length > BYPASS || this.direct) this.inner.readInto(addr, into);
    else into.set(this.read(addr, into.length));
  }

  /**
   * What is cached is served from the cache; everything else goes to the memory underneath in
   * one batch (one call of the native reader) and is kept by its exact address, as a prefetch
   * would keep it.
   */
  readMany(requests: readonly ReadRequest[]): ReadResult[] {
    if (this.direct) return this.inner.readMany(requests);
    const results: ReadResult[] = new Array(requests.length);
    const missed: number[] = [];
    for (let k = 0; k < requests.length; k++) {
      const r = requests[k]!;
      const data = this.cached(r.addr, r.length);
      if (data) results[k] = { ok: true, data };
      else missed.push(k);
    }
    if (missed.length === 0) return results;
    const fetched = this.inner.readMany(missed.map((k) => requests[k]!));
    for (let i = 0; i < missed.length; i++) {
      const k = missed[i]!;
      const r = fetched[i]!;
      results[k] = r;
      // Kept like a prefetch: the same pieces asked for again (AddressSpace.read of an object
      // across pages) are served from here.
      if (r.ok && r.data.length <= BYPASS) this.spans.set(Number(requests[k]!.addr), r.data);
    }
    return results;
  }

  /**
   * Straight to the memory underneath, neither looked up nor kept: its callers read each entry
   * once (a level of a thousand processes' page walks), and keeping them cost more than reading.
   */
  readPacked(addrs: Float64Array, length: number): PackedReads {
    return readPacked(this.inner, addrs, length);
  }

  /** The first `length` bytes of a read prefetched at exactly `at`, if one was and is that long. */
  private fromSpan(at: number, length: number): Buffer | undefined {
    const span = this.spans.size === 0 ? undefined : this.spans.get(at);
    if (span === undefined || span.length < length) return undefined;
    this.hits++;
    return span.length === length ? span : span.subarray(0, length);
  }

  /** The bytes from a prefetched read or a cached page, without reading anything. */
  private cached(addr: PhysAddr, length: number): Buffer | undefined {
    if (length <= 0 || length > PAGE) return undefined;
    const at = Number(addr);
    const span = this.fromSpan(at, length);
    if (span) return span;
    const offset = at % PAGE;
    const page = offset + length <= PAGE ? this.pages.get(Math.floor(at / PAGE)) : undefined;
    if (page === undefined) return undefined;
    this.hits++;
    return page.subarray(offset, offset + length);
  }

  write(addr: PhysAddr, data: Uint8Array): void {
    this.inner.write(addr, data);
    this.spans = new Map();
    const first = Number(addr / BigInt(PAGE));
    const last = Number((addr + BigInt(Math.max(data.length, 1)) - 1n) / BigInt(PAGE));
    for (let i = first; i <= last; i++) this.pages.delete(i);
  }

  close(): void {
    this.pages = new Map();
    this.inner.close();
  }
}
