import { type PackedReads, type PhysicalMemory, type ReadRequest, readPacked } from "../../memory/types.js";
import { PAGE_SIZE, type PhysAddr, type VirtAddr, hex, pa, va } from "../../util/address.js";
import { FaultError, VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import { TranslationCache } from "./cache.js";
import type { PagingFormat } from "./formats.js";
import { type Translation, findTranslation as walkFind, translate as walkTranslate } from "./walk.js";

/** Largest single read or write: keeps a corrupted guest length from allocating gigabytes. */
export const MAX_ACCESS = 256 * 1024 * 1024;

const PAGE = BigInt(PAGE_SIZE);
const PAGE_MASK = PAGE - 1n;
const EXACT_LIMIT = 1n << 53n;
const U64_MAX = (1n << 64n) - 1n;
/** 4 KiB pages in a 64-bit address space. */
const PAGES = 2 ** 52;

interface Piece {
  readonly va: bigint;
  readonly phys: bigint;
  length: number;
}

export interface AddressSpaceOptions {
  /** Translation cache entries (4 KiB pages); 0 disables the cache. */
  readonly cacheSize?: number;
}

/**
 * A guest-virtual view of physical memory through one page-table root. Translations are cached;
 * the owner must call `invalidate()` whenever the guest has run, since the guest may have
 * changed its page tables meanwhile (see TranslationCache).
 *
 * Writes go through regardless of the guest's W bit, as a debugger's do.
 */
export class AddressSpace {
  readonly mem: PhysicalMemory;
  /** undefined: paging is off and virtual equals physical. */
  readonly format: PagingFormat | undefined;
  readonly root: PhysAddr;
  readonly cache: TranslationCache | undefined;

  constructor(
    mem: PhysicalMemory,
    format: PagingFormat | undefined,
    root: PhysAddr,
    opts: AddressSpaceOptions = {},
  ) {
    this.mem = mem;
    this.format = format;
    this.root = root;
    const size = opts.cacheSize ?? 65536;
    this.cache = format && size > 0 ? new TranslationCache(size) : undefined;
  }

  /** The address space of a CPU with paging off. */
  static identity(mem: PhysicalMemory): AddressSpace {
    return new AddressSpace(mem, undefined, pa(0));
  }

  /** The FaultError layer for this space. */
  get layer(): string {
    return this.format?.name ?? "identity";
  }

  /** Drops cached translations; call after the guest has run. */
  invalidate(): void {
    this.cache?.invalidate();
  }

  translate(addr: VirtAddr): Translation {
    const t = this.findTranslation(addr);
    if (t) return t;
    // Walk again without the cache to get the precise reason.
    return walkTranslate(this.mem, this.format!, this.root, addr);
  }

  findTranslation(addr: VirtAddr): Translation | undefined {
    const a = BigInt.asUintN(64, addr);
    if (!this.format) return identityTranslation(a);
    if (!this.cache) return walkFind(this.mem, this.format, this.root, va(a));
    const t = this.pageTranslation(a);
    const offset = a & PAGE_MASK;
    return t === undefined || offset === 0n ? t : { ...t, phys: pa(t.phys + offset) };
  }

  /** The cached (or walked, then cached) translation of the 4 KiB page holding `a`. */
  private pageTranslation(a: bigint): Translation | undefined {
    const page = Number(a >> 12n);
    let t = this.cache!.get(page);
    if (!t) {
      t = walkFind(this.mem, this.format!, this.root, va(a - (a & PAGE_MASK)));
      if (!t) return undefined;
      this.cache!.set(page, t);
    }
    return t;
  }

  isMapped(addr: VirtAddr): boolean {
    return this.findTranslation(addr) !== undefined;
  }

  read(addr: VirtAddr, length: number): Buffer {
    const a = BigInt.asUintN(64, addr);
    // Most reads (one object, one field) lie in one page: no piece list for them.
    if (length > 0 && length <= PAGE_SIZE && Number(a & PAGE_MASK) + length <= PAGE_SIZE) {
      checkLength(length);
      return this.readPiece({ va: a, phys: this.physOf(a), length });
    }
    const pieces = this.pieces(addr, length);
    if (pieces.length === 1) return this.readPiece(pieces[0]!);
    const reqs: ReadRequest[] = pieces.map((p) => ({ addr: pa(p.phys), length: p.length }));
    const results = this.mem.readMany(reqs);
    const out = Buffer.alloc(length);
    let done = 0;
    for (let i = 0; i < pieces.length; i++) {
      const r = results[i];
      if (!r?.ok) throw this.physFault(pieces[i]!, r?.error, "unreadable");
      r.data.copy(out, done);
      done += pieces[i]!.length;
    }
    return out;
  }

  /**
   * Like `read`, but a read within one page may come back as a live view of mapped guest RAM
   * (PhysicalMemory.peek): for fields decoded at once while the guest is stopped, never kept.
   */
  peek(addr: VirtAddr, length: number): Buffer {
    const a = BigInt.asUintN(64, addr);
    if (length <= 0 || length > PAGE_SIZE || Number(a & PAGE_MASK) + length > PAGE_SIZE)
      return this.read(addr, length);
    const phys = this.physOf(a);
    try {
      return this.mem.peek ? this.mem.peek(pa(phys), length) : this.mem.read(pa(phys), length);
    } catch (error) {
      throw this.physFault({ va: a, phys, length }, error, "unreadable");
    }
  }

  /** `translate(a).phys`, throwing as it does, without building a Translation on a cache hit. */
  private physOf(a: bigint): bigint {
    return this.physIfMapped(a) ?? this.translate(va(a)).phys;
  }

  /** `findTranslation(a)?.phys`, the hot path of every field read. */
  private physIfMapped(a: bigint): bigint | undefined {
    if (!this.format || !this.cache) return this.findTranslation(va(a))?.phys;
    const cached = this.cache.physOf(Number(a >> 12n));
    if (cached !== undefined) return cached + (a & PAGE_MASK);
    const t = this.pageTranslation(a);
    return t === undefined ? undefined : t.phys + (a & PAGE_MASK);
  }

  /**
   * `length` bytes (at most a page) `offset` bytes past each of `addrs`, packed back to back
   * (entry k at k*length) and read in one batch: on memory read by system calls, one call for a
   * thousand task_structs. ok[k] is 0 where entry k was not read here: its page is not mapped, or
   * it runs into a page that is not the physically next one. Never throws: the caller reads such
   * an entry alone, and that read names the fault. Positions are numbers past the first shift
   * (pages below 2^52, physical addresses too): two bigint operations an entry, where a bigint
   * translation took ten (~1 µs each before the JIT has compiled them).
   */
  readPacked(addrs: readonly bigint[], length: number, offset = 0): PackedReads {
    const n = addrs.length;
    if (length <= 0 || length > PAGE_SIZE || offset < 0)
      return { out: Buffer.alloc(n * Math.max(length, 0)), ok: new Uint8Array(n) };
    const phys = new Float64Array(n);
    const which = new Uint32Array(n);
    let count = 0;
    for (let k = 0; k < n; k++) {
      const at = this.packedPhys(addrs[k]!, offset, length);
      if (at < 0) continue;
      phys[count] = at;
      which[count++] = k;
    }
    const got = readPacked(this.mem, phys.subarray(0, count), length);
    if (count === n) return got;
    const out = Buffer.alloc(n * length);
    const ok = new Uint8Array(n);
    for (let i = 0; i < count; i++) {
      const k = which[i]!;
      if (!got.ok[i]) continue;
      got.out.copy(out, k * length, i * length, (i + 1) * length);
      ok[k] = 1;
    }
    return { out, ok };
  }

  /** Where [a+offset, a+offset+length) lies in physical memory if in one piece, else -1. */
  private packedPhys(a: bigint, offset: number, length: number): number {
    if (a < 0n || a > U64_MAX) return -1;
    const inPage = Number(a & PAGE_MASK) + offset;
    const page = Number(a >> 12n) + Math.floor(inPage / PAGE_SIZE);
    const from = inPage % PAGE_SIZE;
    if (page >= PAGES) return -1;
    const base = this.pagePhys(page);
    if (base === undefined) return -1;
    if (from + length <= PAGE_SIZE) return base + from;
    return this.pagePhys(page + 1) === base + PAGE_SIZE ? base + from : -1;
  }

  /** The physical address of 4 KiB virtual page `page`, as a number; undefined if unmapped or not exact. */
  private pagePhys(page: number): number | undefined {
    const cached = this.format && this.cache ? this.cache.physNumberOf(page) : undefined;
    if (cached !== undefined) return cached;
    const phys = this.physIfMapped(BigInt(page) << 12n);
    return phys === undefined || phys + PAGE >= EXACT_LIMIT ? undefined : Number(phys);
  }

  /** Fills `into` from `addr`, like `read`, without allocating the bytes (bulk readers reuse one buffer). */
  readInto(addr: VirtAddr, into: Uint8Array): void {
    this.eachPiece(addr, into, "unreadable", (phys, part) => this.mem.readInto(phys, part));
  }

  write(addr: VirtAddr, data: Uint8Array): void {
    this.eachPiece(addr, data, "not writable", (phys, part) => this.mem.write(phys, part));
  }

  /** `access` on each physically contiguous piece of [addr, addr+bytes.length) with its part of `bytes`. */
  private eachPiece(
    addr: VirtAddr,
    bytes: Uint8Array,
    what: string,
    access: (phys: PhysAddr, part: Uint8Array) => void,
  ): void {
    let done = 0;
    for (const p of this.pieces(addr, bytes.length)) {
      try {
        access(pa(p.phys), bytes.subarray(done, done + p.length));
      } catch (error) {
        throw this.physFault(p, error, what);
      }
      done += p.length;
    }
  }

  readU8(addr: VirtAddr): number {
    return this.small(addr, 1).readUInt8(0);
  }

  readU16(addr: VirtAddr): number {
    return this.small(addr, 2).readUInt16LE(0);
  }

  readU32(addr: VirtAddr): number {
    return this.small(addr, 4).readUInt32LE(0);
  }

  readU64(addr: VirtAddr): bigint {
    return this.small(addr, 8).readBigUInt64LE(0);
  }

  /**
   * Bytes up to the first NUL, decoded as every guest string is (`decodeGuestBytes`), reading one page at a time so an unmapped page
   * after the terminator does not fault. Without a NUL in `maxLength` bytes, returns those bytes.
   */
  readCString(addr: VirtAddr, maxLength: number): string {
    checkLength(maxLength);
    const chunks: Buffer[] = [];
    let cur = BigInt.asUintN(64, addr);
    let left = maxLength;
    while (left > 0) {
      const n = Math.min(left, Number(PAGE - (cur & PAGE_MASK)));
      const chunk = this.read(va(cur), n);
      const nul = chunk.indexOf(0);
      if (nul >= 0) {
        chunks.push(chunk.subarray(0, nul));
        break;
      }
      chunks.push(chunk);
      left -= n;
      cur = BigInt.asUintN(64, cur + BigInt(n));
    }
    return decodeGuestBytes(Buffer.concat(chunks));
  }

  /** Fast path for scalars: one translation and one read unless the value straddles a page. */
  private small(addr: VirtAddr, n: number): Buffer {
    const a = BigInt.asUintN(64, addr);
    if ((a & PAGE_MASK) > PAGE - BigInt(n)) return this.read(addr, n);
    return this.peek(va(a), n);
  }

  private readPiece(p: Piece): Buffer {
    try {
      return this.mem.read(pa(p.phys), p.length);
    } catch (error) {
      throw this.physFault(p, error, "unreadable");
    }
  }

  /** Splits [addr, addr+length) at page boundaries, merging physically contiguous runs. */
  private pieces(addr: VirtAddr, length: number): Piece[] {
    checkLength(length);
    const out: Piece[] = [];
    let cur = BigInt.asUintN(64, addr);
    let left = length;
    while (left > 0) {
      // Long reads (a BTF blob, a kernel image) step a whole large page at a time, not 4 KiB:
      // a few translations where there would be a thousand.
      const leaf = left > PAGE_SIZE ? this.findTranslation(va(cur)) : undefined;
      const phys = leaf ? leaf.phys : this.physOf(cur);
      const inLeaf = leaf
        ? leaf.pageSize - Number(cur % BigInt(leaf.pageSize))
        : Number(PAGE - (cur & PAGE_MASK));
      const n = Math.min(left, inLeaf);
      const last = out[out.length - 1];
      if (last && last.phys + BigInt(last.length) === phys) last.length += n;
      else out.push({ va: cur, phys, length: n });
      left -= n;
      cur = BigInt.asUintN(64, cur + BigInt(n));
    }
    if (out.length === 0) out.push({ va: BigInt.asUintN(64, addr), phys: 0n, length: 0 });
    return out;
  }

  /** Re-expresses a physical fault in virtual terms: the first virtual address that failed. */
  private physFault(p: Piece, error: unknown, what: string): FaultError {
    let at = p.va;
    let where = `physical ${hex(p.phys)}`;
    if (error instanceof FaultError && error.address >= p.phys && error.address < p.phys + BigInt(p.length)) {
      at = BigInt.asUintN(64, p.va + (error.address - p.phys));
      where = `physical ${hex(error.address)}`;
    }
    const reason = error instanceof Error ? error.message : String(error);
    return new FaultError(this.layer, at, `${where} ${what} (${reason})`, { cause: error });
  }
}

function identityTranslation(a: bigint): Translation {
  return { phys: pa(a), pageSize: PAGE_SIZE, writable: true, user: true, executable: true, level: 0 };
}

function checkLength(length: number): void {
  if (!Number.isSafeInteger(length) || length < 0 || length > MAX_ACCESS) {
    throw new VmsightError("E_BAD_LENGTH", `access length ${length} is not an integer in 0..${MAX_ACCESS}`);
  }
}
