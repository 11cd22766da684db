import type { Translation } from "./walk.js";

/**
 * Translations of 4 KiB virtual pages, keyed by page number (va >> 12, exact as a number since
 * it is below 2^52). A large page fills one slot per 4 KiB page touched, so a lookup never needs
 * to know the page size first.
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

  constructor(maxEntries = 65536) {
    this.maxEntries = Math.max(1, Math.floor(maxEntries));
  }

  get size(): number {
    return this.pages.size;
  }

  /** The translation of the first byte of the page, if cached. */
  get(page: number): Translation | undefined {
    const t = this.pages.get(page);
    if (t) this.hits++;
    else this.misses++;
    return t;
  }

  set(page: number, t: Translation): void {
    // FIFO eviction through the Map's insertion order: O(1), and the hot working set of an
    // introspection pass (kernel data structures) is refilled cheaply if evicted.
    if (this.pages.size >= this.maxEntries && !this.pages.has(page)) {
      const oldest = this.pages.keys().next();
      if (!oldest.done) this.pages.delete(oldest.value);
    }
    this.pages.set(page, t);
  }

  invalidate(): void {
    this.pages.clear();
  }
}
