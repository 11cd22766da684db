import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, GuestDataError } from "../../util/errors.js";
import type { KernelContext } from "./context.js";
import { isKernelPointer } from "./walk.js";

/**
 * Reader of the kernel's maple tree (lib/maple_tree.c, 6.1+), the structure behind `mm->mm_mt`.
 *
 * Encoding, from include/linux/maple_tree.h and lib/maple_tree.c (the same in 6.1 and 6.12):
 * a node is 256-byte aligned, so an encoded node pointer ("enode") keeps its type in bits 3..6
 * (`MAPLE_NODE_TYPE_SHIFT` 3, mask 0xf) and flags in bits 0..2; `mte_to_node()` clears the low
 * byte (`MAPLE_NODE_MASK` 255). Only the root pointer in `maple_tree.ma_root` carries the
 * xarray "internal" tag (low bits 0b10, `MAPLE_ROOT_NODE`); any other root value is the tree's
 * only entry, stored at index 0. Child slots of internal nodes are enodes without that tag.
 */
export enum MapleType {
  Dense = 0,
  Leaf64 = 1,
  Range64 = 2,
  Arange64 = 3,
}

export interface MapleEntry {
  /** First index the entry covers (for mm_mt: vm_start). */
  readonly index: bigint;
  /** Last index, inclusive (for mm_mt: vm_end - 1). */
  readonly last: bigint;
  readonly entry: bigint;
}

export interface MapleTreeOptions {
  /** Deepest tree accepted; the kernel's own limit is 31 (MAPLE_HEIGHT_MAX). */
  readonly maxDepth?: number;
  readonly maxNodes?: number;
  readonly maxEntries?: number;
}

const NODE_SIZE = 256;
const NODE_MASK = 0xffn;
const ULONG_MAX = (1n << 64n) - 1n;
/** `mt_slots[]` / `mt_pivots[]` for 64-bit builds. */
const DENSE_SLOTS = 31;

interface NodeGeometry {
  readonly slots: number;
  readonly pivots: number;
  readonly pivotOffset: number;
  readonly slotOffset: number;
  /** Where `maple_metadata.end` sits; undefined for dense nodes, which have none. */
  readonly metaEndOffset: number | undefined;
}

/** Node layouts: from the layout where it knows them, else the 64-bit constants. */
function geometries(ctx: KernelContext): Record<MapleType, NodeGeometry> {
  const L = ctx.layout;
  const off = (s: string, p: string, dflt: number) => L.findOffset(s, p) ?? dflt;
  const metaEnd = L.findOffset("maple_metadata", "end") ?? 0;
  // maple_range_64: parent, pivot[15], union { slot[16]; { pad[15]; meta } }
  const range: NodeGeometry = {
    slots: 16,
    pivots: 15,
    pivotOffset: off("maple_range_64", "pivot", 8),
    slotOffset: off("maple_range_64", "slot", 128),
    metaEndOffset: off("maple_range_64", "meta", 248) + metaEnd,
  };
  // maple_arange_64: parent, pivot[9], slot[10], gap[10], meta
  const arange: NodeGeometry = {
    slots: 10,
    pivots: 9,
    pivotOffset: off("maple_arange_64", "pivot", 8),
    slotOffset: off("maple_arange_64", "slot", 80),
    metaEndOffset: off("maple_arange_64", "meta", 240) + metaEnd,
  };
  const dense: NodeGeometry = {
    slots: DENSE_SLOTS,
    pivots: 0,
    pivotOffset: 0,
    slotOffset: off("maple_node", "slot", 8),
    metaEndOffset: undefined,
  };
  return {
    [MapleType.Dense]: dense,
    [MapleType.Leaf64]: range,
    [MapleType.Range64]: range,
    [MapleType.Arange64]: arange,
  };
}

/** `xa_is_node()` on the root: internal tag and above the small internal values. */
export function isMapleRootNode(root: bigint): boolean {
  return (root & 3n) === 2n && root > 4096n;
}

export function mapleNodeType(enode: bigint): number {
  return Number((enode >> 3n) & 0xfn);
}

export function mapleNodeAddress(enode: bigint): VirtAddr {
  return va(enode & ~NODE_MASK);
}

interface Walk {
  readonly ctx: KernelContext;
  readonly geo: Record<MapleType, NodeGeometry>;
  readonly seen: Set<bigint>;
  readonly maxDepth: number;
  readonly maxNodes: number;
  readonly maxEntries: number;
  entries: number;
}

/**
 * Every non-NULL leaf entry of a maple tree, in index order, given the value of its
 * `ma_root`. Internal xarray values in leaves (XA_ZERO_ENTRY and the like, low bits 0b10) are
 * markers, not entries, and are skipped as the kernel's iterators skip them. Bounded: a node
 * seen twice, a tree deeper than `maxDepth`, more than `maxNodes` nodes or `maxEntries`
 * entries, pivots out of order, or an unreadable node raise GuestDataError.
 */
export function* mapleTreeEntries(
  ctx: KernelContext,
  root: bigint,
  opts: MapleTreeOptions = {},
): Generator<MapleEntry> {
  if (root === 0n) return;
  if (!isMapleRootNode(root)) {
    yield { index: 0n, last: 0n, entry: root };
    return;
  }
  const w: Walk = {
    ctx,
    geo: geometries(ctx),
    seen: new Set(),
    maxDepth: opts.maxDepth ?? 16,
    maxNodes: opts.maxNodes ?? 1 << 17,
    maxEntries: opts.maxEntries ?? 1 << 20,
    entries: 0,
  };
  yield* walkNode(w, root, 0n, ULONG_MAX, 1);
}

function* walkNode(w: Walk, enode: bigint, min: bigint, max: bigint, depth: number): Generator<MapleEntry> {
  const node = mapleNodeAddress(enode);
  const type = mapleNodeType(enode);
  if (type > MapleType.Arange64)
    throw new GuestDataError(`maple node ${hex(enode)} has unknown type ${type}`);
  if (depth > w.maxDepth) throw new GuestDataError(`maple tree is deeper than ${w.maxDepth} levels`);
  if (!isKernelPointer(node, w.ctx.bounds))
    throw new GuestDataError(`maple node pointer ${hex(enode)} is not a kernel pointer`);
  if (w.seen.has(node)) throw new GuestDataError(`maple tree reaches node ${hex(node)} twice (a loop)`);
  if (w.seen.size >= w.maxNodes) throw new GuestDataError(`maple tree has more than ${w.maxNodes} nodes`);
  w.seen.add(node);
  const bytes = readNode(w.ctx, node);
  // ma_dead_node(): a freed node's parent points at itself; the tree changed under us.
  if ((bytes.readBigUInt64LE(0) & ~NODE_MASK) === node) {
    throw new GuestDataError(`maple node ${hex(node)} is dead (the tree changed while it was read)`);
  }
  const g = w.geo[type as MapleType];
  const slot = (i: number) => bytes.readBigUInt64LE(g.slotOffset + 8 * i);
  if (type === MapleType.Dense) {
    for (let i = 0; i < g.slots; i++) {
      const e = slot(i);
      if (e !== 0n && !isInternalValue(e))
        yield count(w, { index: min + BigInt(i), last: min + BigInt(i), entry: e });
    }
    return;
  }
  const pivot = (i: number) => bytes.readBigUInt64LE(g.pivotOffset + 8 * i);
  const end = dataEnd(bytes, g, type, pivot, max, node);
  const leaf = type === MapleType.Leaf64;
  let lo = min;
  for (let i = 0; i <= end; i++) {
    const hi = i < end ? pivot(i) : max;
    if (hi < lo || hi > max) {
      throw new GuestDataError(
        `maple node ${hex(node)} pivot ${i} (${hex(hi)}) is outside ${hex(lo)}..${hex(max)}`,
      );
    }
    const e = slot(i);
    if (leaf) {
      if (e !== 0n && !isInternalValue(e)) yield count(w, { index: lo, last: hi, entry: e });
    } else {
      if (e === 0n) throw new GuestDataError(`maple node ${hex(node)} has an empty child slot ${i}`);
      yield* walkNode(w, e, lo, hi, depth + 1);
    }
    if (hi === max) break;
    lo = hi + 1n;
  }
}

/**
 * `ma_data_end()`: the last used slot. arange nodes always keep it in their metadata; range
 * and leaf nodes only when the last pivot is unused (a full node has no room for metadata).
 */
function dataEnd(
  bytes: Buffer,
  g: NodeGeometry,
  type: number,
  pivot: (i: number) => bigint,
  max: bigint,
  node: VirtAddr,
): number {
  const meta = () => {
    const end = bytes.readUInt8(g.metaEndOffset!);
    if (end >= g.slots)
      throw new GuestDataError(`maple node ${hex(node)} metadata end ${end} is past its slots`);
    return end;
  };
  if (type === MapleType.Arange64) return meta();
  const last = g.pivots - 1;
  if (pivot(last) === 0n) return meta();
  if (pivot(last) === max) return last;
  return g.pivots;
}

function isInternalValue(e: bigint): boolean {
  return (e & 3n) === 2n && e < 4096n;
}

function count(w: Walk, e: MapleEntry): MapleEntry {
  if (++w.entries > w.maxEntries)
    throw new GuestDataError(`maple tree has more than ${w.maxEntries} entries`);
  return e;
}

function readNode(ctx: KernelContext, node: VirtAddr): Buffer {
  try {
    return ctx.kernel.read(node, NODE_SIZE);
  } catch (error) {
    if (error instanceof FaultError) {
      throw new GuestDataError(`maple node ${hex(node)} is unreadable`, { cause: error });
    }
    throw error;
  }
}
