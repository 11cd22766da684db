import { AddressSpace } from "../arch/x86/address-space.js";
import type { PagingFormat } from "../arch/x86/formats.js";
import { enumerateMappings } from "../arch/x86/mappings.js";
import type { PhysicalMemory } from "../memory/types.js";
import { addressBounds } from "../os/linux/walk.js";
import { pa, va } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { GuestView, PageRights, PageRun } from "./types.js";

/** A process has a few thousand present pages; a bigger walk is cut short (runs then undefined). */
const MAX_ENTRIES = 1 << 16;

/**
 * GuestView over guest-physical memory and the kernel's page tables at one stop. Built fresh
 * for every event: the guest changes its page tables while it runs, so nothing is cached
 * across events. Read failures become `undefined`: to the filter an unreadable candidate is
 * simply one that does not hold the property.
 */
export function guestView(
  mem: PhysicalMemory,
  format: PagingFormat,
  kernelRoot: bigint,
  directMap?: { readonly base: bigint; readonly size: bigint },
): GuestView {
  const kernel = new AddressSpace(mem, format, pa(kernelRoot));
  const bounds = addressBounds(format);
  const users = new Map<bigint, AddressSpace | null>();
  const quiet = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof VmsightError) return undefined;
      throw error;
    }
  };
  // Page rights are asked for page by page over code ranges, by many candidates: walk once.
  const seen = new Map<AddressSpace, Map<bigint, PageRights | undefined>>();
  const rights = (space: AddressSpace, addr: bigint): PageRights | undefined => {
    let m = seen.get(space);
    if (!m) {
      m = new Map();
      seen.set(space, m);
    }
    const page = addr >> 12n;
    if (m.has(page)) return m.get(page);
    const t = quiet(() => space.findTranslation(va(addr)));
    const r = t ? { user: t.user, writable: t.writable, executable: t.executable } : undefined;
    m.set(page, r);
    return r;
  };
  const runs = new Map<bigint, PageRun[] | null>();
  const userRunsOf = (pgd: bigint): PageRun[] | undefined => {
    let r = runs.get(pgd);
    if (r === undefined) {
      const s = userSpace(pgd);
      const list = s
        ? quiet(() =>
            enumerateMappings(mem, format, s.root, { end: bounds.userEnd, maxEntries: MAX_ENTRIES }),
          )
        : undefined;
      r =
        list && !list.truncated
          ? list.mappings.map((m) => ({
              start: m.start as bigint,
              end: m.end as bigint,
              user: m.user,
              writable: m.writable,
              executable: m.executable,
            }))
          : null;
      runs.set(pgd, r);
    }
    return r ?? undefined;
  };
  const userSpace = (pgd: bigint): AddressSpace | undefined => {
    let s = users.get(pgd);
    if (s === undefined) {
      const root = quiet(() => kernel.findTranslation(va(pgd)));
      s = root && pgd % 4096n === 0n ? new AddressSpace(mem, format, root.phys) : null;
      users.set(pgd, s);
    }
    return s ?? undefined;
  };
  // The direct map is linear by definition (virtual = physical + page_offset_base): reads of
  // task_structs and mm_structs there need no page walk, which is most of an event's cost.
  const direct = (addr: bigint, length: number): bigint | undefined => {
    if (!directMap || addr < directMap.base) return undefined;
    const off = addr - directMap.base;
    return off + BigInt(length) <= directMap.size ? off : undefined;
  };
  return {
    bounds,
    read(addr, length) {
      const phys = direct(addr, length);
      if (phys !== undefined) return quiet(() => mem.read(pa(phys), length));
      return quiet(() => kernel.read(va(addr), length));
    },
    translate: (addr) => quiet(() => kernel.findTranslation(va(addr))?.phys),
    kernelPage: (addr) => rights(kernel, addr),
    userPage(pgd, addr) {
      const list = userRunsOf(pgd);
      if (list) return findRun(list, addr);
      const s = userSpace(pgd);
      return s ? rights(s, addr) : undefined;
    },
    userRuns(pgd, start, end) {
      const list = userRunsOf(pgd);
      return list?.filter((r) => r.start < end && r.end > start);
    },
    readUser(pgd, addr, length) {
      const s = userSpace(pgd);
      return s ? quiet(() => s.read(va(addr), length)) : undefined;
    },
  };
}

function findRun(list: readonly PageRun[], addr: bigint): PageRights | undefined {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const r = list[mid]!;
    if (addr < r.start) hi = mid;
    else if (addr >= r.end) lo = mid + 1;
    else return { user: r.user, writable: r.writable, executable: r.executable };
  }
  return undefined;
}
