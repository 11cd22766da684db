import { pa } from "../../util/address.js";
import type { Translation } from "./walk.js";

const SMALL_PAGE = 4096;

/**
 * Translations keyed by 4 KiB virtual page number (va >> 12, exact as a number since it is below
 * 2^52). A large page is kept once, under its own index, so that every 4 KiB page inside it
 * (the kernel's direct map is 1 GiB and 2 MiB pages) hits without a walk of its own.
 *
 * The cache does not know when the guest changes its page tables: whoever owns it must call
 * `invalidate()` every time the guest has run (after a resume/stop cycle, a step, or a write
 * to the page tables through vmsight itself). Between two stops page tables cannot change.
 */
export class TranslationCache {
  readonly maxEntries: number;
  hits = 0;
  misses = 0;
  private readonly pages = new Map<number, Translation>();
  /** Per large page size (in 4 KiB pages): large page index → translation of its first byte. */
  private readonly large = new Map<number, Map<number, Translation>>();
  /** The same maps as a list: looked through on every lookup, where a Map's iterator would allocate. */
  private largeList: { readonly span: number; readonly bySpan: Map<number, Translation> }[] = [];

  constructor(maxEntries = 65536) {
    this.maxEntries = Math.max(1, Math.floor(maxEntries));
  }

  get size(): number {
    let n = this.pages.size;
    for (const m of this.large.values()) n += m.size;
    return n;
  }

  /** The translation of the first byte of the page, if cached. */
  get(page: number): Translation | undefined {
    const t = this.pages.get(page) ?? this.fromLarge(page);
    if (t) this.hits++;
    else this.misses++;
    return t;
  }

  /**
   * The physical address of the page's first byte, if cached: `get(page)?.phys` without building
   * a Translation for a page inside a large one (every kernel field read lands in one).
   */
  physOf(page: number): bigint | undefined {
    const phys = this.physNumberOf(page);
    return phys === undefined ? undefined : BigInt(phys);
  }

  /** `physOf(page)` as a number (physical addresses are below 2^52): no bigint made on a hit. */
  physNumberOf(page: number): number | undefined {
    const t = this.pages.get(page);
    if (t) {
      this.hits++;
      return Number(t.phys);
    }
    for (let i = 0; i < this.largeList.length; i++) {
      const { span, bySpan } = this.largeList[i]!;
      const l = bySpan.get(Math.floor(page / span));
      if (l) {
        this.hits++;
        return Number(l.phys) + (page % span) * SMALL_PAGE;
      }
    }
    this.misses++;
    return undefined;
  }

  set(page: number, t: Translation): void {
    if (t.pageSize > SMALL_PAGE) {
      const span = t.pageSize / SMALL_PAGE;
      let bySpan = this.large.get(span);
      if (!bySpan) {
        bySpan = new Map();
        this.large.set(span, bySpan);
        this.largeList.push({ span, bySpan });
      }
      evictOne(bySpan, this.maxEntries);
      bySpan.set(Math.floor(page / span), { ...t, phys: pa(t.phys - BigInt((page % span) * SMALL_PAGE)) });
      return;
    }
    if (!this.pages.has(page)) evictOne(this.pages, this.maxEntries);
    this.pages.set(page, t);
  }

  invalidate(): void {
    this.pages.clear();
    this.large.clear();
    this.largeList = [];
  }

  private fromLarge(page: number): Translation | undefined {
    for (const [span, bySpan] of this.large) {
      const t = bySpan.get(Math.floor(page / span));
      if (t) return { ...t, phys: pa(t.phys + BigInt((page % span) * SMALL_PAGE)) };
    }
    return undefined;
  }
}

/**
 * FIFO eviction through the Map's insertion order: O(1), and the hot working set of an
 * introspection pass (kernel data structures) is refilled cheaply if evicted.
 */
function evictOne(map: Map<number, Translation>, max: number): void {
  if (map.size < max) return;
  const oldest = map.keys().next();
  if (!oldest.done) map.delete(oldest.value);
}
