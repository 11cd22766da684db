import { type LinkMemory, isKernelPointer, listForEach, readFixedString } from "../../os/linux/walk.js";
import { FaultError } from "../../util/errors.js";
import type { GuestView } from "../types.js";
import { MAX_CODE_PAGES, PAGE, roundUp } from "./abi.js";

/** Bytes read per fetch of a lazily read object. */
const CHUNK = 512;

/**
 * A guest object as read at one event: eagerly (one buffer), or lazily in chunks, so that rules
 * left with a few candidates read a few words of each of ~60 tasks instead of all of them.
 * Bytes outside [from, to) or unreadable read as -1.
 */
export class Obj {
  private readonly chunks = new Map<number, Buffer | null>();
  private constructor(
    readonly addr: bigint,
    private readonly from: number,
    private readonly to: number,
    private readonly whole: Buffer | undefined,
    private readonly view: GuestView | undefined,
  ) {}

  static of(addr: bigint, bytes: Buffer, base = 0): Obj {
    return new Obj(addr, base, base + bytes.length, bytes, undefined);
  }

  static lazy(view: GuestView, addr: bigint, from: number, to: number): Obj {
    return new Obj(addr, from, to, undefined, view);
  }

  slice(off: number, n: number): Buffer | undefined {
    if (off < this.from || off + n > this.to) return undefined;
    if (this.whole) return this.whole.subarray(off - this.from, off - this.from + n);
    const c = Math.floor(off / CHUNK);
    if (Math.floor((off + n - 1) / CHUNK) !== c) return this.view!.read(this.addr + BigInt(off), n);
    let chunk = this.chunks.get(c);
    if (chunk === undefined) {
      const start = Math.max(this.from, c * CHUNK);
      chunk = this.view!.read(this.addr + BigInt(start), Math.min(this.to, (c + 1) * CHUNK) - start) ?? null;
      this.chunks.set(c, chunk);
    }
    if (chunk === null) return undefined;
    const at = off - Math.max(this.from, c * CHUNK);
    return chunk.subarray(at, at + n);
  }

  u32(off: number): number {
    return this.slice(off, 4)?.readUInt32LE(0) ?? -1;
  }

  u64(off: number): bigint {
    return this.slice(off, 8)?.readBigUInt64LE(0) ?? -1n;
  }

  /** A char[len] member up to its NUL, or undefined where unreadable. */
  str(off: number, len: number): string | undefined {
    const b = this.slice(off, len);
    return b && readFixedString(b, 0, len);
  }
}

/**
 * comm / module name: printable, not empty, NUL-terminated inside its array. `highBytes` lets
 * bytes from 0x80 up pass, for comm: a process may name itself in UTF-8 (or cut a character).
 */
export function isNameString(b: Buffer | undefined, len: number, highBytes = false): boolean {
  if (!b || b.length < len) return false;
  if (b[0] === 0) return false;
  for (let i = 0; i < len; i++) {
    const c = b[i]!;
    if (c === 0) return true;
    if (c < 0x20 || c === 0x7f || (c > 0x7f && !highBytes)) return false;
  }
  return false;
}

/** Nodes of a ring from `head` (excluded) if it closes consistently within `max` nodes. */
export function ringNodes(
  view: GuestView,
  head: bigint,
  max: number,
  checkBack = true,
): bigint[] | undefined {
  let broken = false;
  const warn = () => {
    broken = true;
  };
  const policy = { onBroken: "stop", max, checkBack, warn } as const;
  const nodes = [...listForEach(linkView(view), head, "candidate ring", policy)];
  return broken ? undefined : nodes;
}

/** The booting guest's memory as the list walker reads it: a hole is a fault, as in a live kernel. */
function linkView(view: GuestView): LinkMemory {
  return {
    bounds: view.bounds,
    readU64(addr) {
      const b = view.read(addr, 8);
      if (!b) throw new FaultError("guest view", addr, "nothing readable");
      return b.readBigUInt64LE(0);
    },
  };
}

/** Length of the ring at `head`, or -1 when it is not a consistent ring of at most `max` nodes. */
export function ringLength(view: GuestView, head: bigint, max: number): number {
  return ringNodes(view, head, max)?.length ?? -1;
}

/**
 * [start, end) is non-empty, no present page of it is something else than code, and at least
 * one is present code (bounded).
 */
export function codeRange(
  start: bigint,
  end: bigint,
  notCode: (a: bigint) => boolean,
  isCode: (a: bigint) => boolean,
): boolean {
  if (!(start < end)) return false;
  const pages = (roundUp(end) - (start / PAGE) * PAGE) / PAGE;
  if (pages > BigInt(MAX_CODE_PAGES)) return false;
  let seen = false;
  for (let a = (start / PAGE) * PAGE; a < end; a += PAGE) {
    if (notCode(a)) return false;
    seen ||= isCode(a);
  }
  return seen;
}

/**
 * The bytes around `center` from `from` to `to`, cut to the pages mapped contiguously with
 * `center`'s own (a module's struct may sit at the start of its allocation, after a guard page).
 */
export function readWindow(
  view: GuestView,
  center: bigint,
  from: number,
  to: number,
): { base: number; bytes: Buffer } | undefined {
  const page = center & ~(PAGE - 1n);
  let lo = page;
  while (lo > center + BigInt(from) && view.read(lo - PAGE, 1)) lo -= PAGE;
  let hi = page + PAGE;
  while (hi < center + BigInt(to) && view.read(hi, 1)) hi += PAGE;
  const start = lo > center + BigInt(from) ? lo : center + BigInt(from);
  const end = hi < center + BigInt(to) ? hi : center + BigInt(to);
  const bytes = view.read(start, Number(end - start));
  return bytes ? { base: Number(start - center), bytes } : undefined;
}
