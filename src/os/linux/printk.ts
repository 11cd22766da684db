import { type VirtAddr, hex, va } from "../../util/address.js";
import { GuestDataError } from "../../util/errors.js";
import type { KernelContext } from "./context.js";
import { checkKernelPointer } from "./walk.js";

/**
 * The kernel log from outside: the lockless `printk_ringbuffer` of kernel/printk/
 * printk_ringbuffer.[ch] (5.10+), which `prb` points at. A descriptor ring (state word and
 * text block positions per record, `printk_info` alongside) indexes a data ring of text blocks,
 * each an `unsigned long id` and the text. Records are read from `tail_id` to `head_id`, as
 * `prb_read_valid()` walks them; a descriptor that is being written or recycled is skipped.
 */

export interface LogRecord {
  readonly seq: bigint;
  readonly tsNsec: bigint;
  readonly facility: number;
  readonly level: number;
  /** The message bytes (`text_len` of them), newlines included. */
  readonly text: Buffer;
}

/** The desc state lives in the top two bits of `state_var` (DESC_FLAGS_SHIFT = BITS_PER_LONG - 2). */
const DESC_FLAGS_SHIFT = 62n;
const DESC_ID_MASK = (1n << DESC_FLAGS_SHIFT) - 1n;
const DESC_COMMITTED = 1n;
const DESC_FINALIZED = 2n;
/** Larger rings than this (log_buf_len is at most 1 << 25 in Kconfig, 2 GiB on the command line) are corrupt. */
const MAX_DATA_BITS = 31;
const MAX_DESC_BITS = 26;
/** The id field ahead of each text block. */
const BLOCK_ID_SIZE = 8n;

function offset(ctx: KernelContext, struct: string, path: string): bigint {
  return BigInt(ctx.layout.offsetof(struct, path));
}

interface Ring {
  readonly descCount: bigint;
  readonly descs: Buffer;
  readonly descSize: number;
  readonly infos: Buffer;
  readonly infoSize: number;
  readonly headId: bigint;
  readonly tailId: bigint;
  readonly dataBits: bigint;
  readonly data: Buffer;
}

function readRing(ctx: KernelContext, rb: VirtAddr): Ring {
  const k = ctx.kernel;
  const at = (path: string) => va(rb + offset(ctx, "printk_ringbuffer", path));
  const ptr = (path: string) =>
    checkKernelPointer(k.readU64(at(path)), ctx.bounds, `printk_ringbuffer.${path}`);
  const countBits = k.readU32(at("desc_ring.count_bits"));
  const dataBits = k.readU32(at("text_data_ring.size_bits"));
  if (countBits > MAX_DESC_BITS || dataBits > MAX_DATA_BITS)
    throw new GuestDataError(
      `printk ring at ${hex(rb)} is absurd: 2^${countBits} records, 2^${dataBits} bytes`,
    );
  const descSize = ctx.layout.findSize("prb_desc") ?? 24;
  const infoSize = ctx.layout.findSize("printk_info") ?? 88;
  const count = 1 << countBits;
  return {
    descCount: BigInt(count),
    descs: k.read(ptr("desc_ring.descs"), count * descSize),
    descSize,
    infos: k.read(ptr("desc_ring.infos"), count * infoSize),
    infoSize,
    headId: k.readU64(at("desc_ring.head_id")),
    tailId: k.readU64(at("desc_ring.tail_id")),
    dataBits: BigInt(dataBits),
    data: k.read(ptr("text_data_ring.data"), 2 ** dataBits),
  };
}

/** `get_data()`: the text block a descriptor's lpos pair names, without its id; undefined if invalid. */
function blockText(ring: Ring, begin: bigint, next: bigint): Buffer | undefined {
  if ((begin & 1n) === 1n && (next & 1n) === 1n) return Buffer.alloc(0); // data-less record
  const size = 1n << ring.dataBits;
  const wraps = (lpos: bigint) => lpos >> ring.dataBits;
  const index = (lpos: bigint) => Number(lpos & (size - 1n));
  let from: number;
  let length: bigint;
  if (wraps(begin) === wraps(next)) {
    from = index(begin);
    length = next - begin;
  } else if (wraps(begin + size) === wraps(next)) {
    from = 0; // the block did not fit at the end of the ring and starts over at its beginning
    length = BigInt(index(next));
  } else return undefined;
  if (length < BLOCK_ID_SIZE || length > size) return undefined;
  return ring.data.subarray(from + Number(BLOCK_ID_SIZE), from + Number(length));
}

interface InfoOffsets {
  readonly seq: number;
  readonly ts: number;
  readonly textLen: number;
  readonly facility: number;
  readonly textBegin: number;
  readonly textNext: number;
}

function infoOffsets(ctx: KernelContext): InfoOffsets {
  const n = (s: string, p: string) => ctx.layout.offsetof(s, p);
  return {
    seq: n("printk_info", "seq"),
    ts: n("printk_info", "ts_nsec"),
    textLen: n("printk_info", "text_len"),
    facility: n("printk_info", "facility"),
    textBegin: n("prb_desc", "text_blk_lpos.begin"),
    textNext: n("prb_desc", "text_blk_lpos.next"),
  };
}

/** Every record the ring holds that is committed or finalized, oldest first. */
export function logRecords(ctx: KernelContext): LogRecord[] {
  const rb = checkKernelPointer(ctx.kernel.readU64(va(ctx.symbols.getAddress("prb"))), ctx.bounds, "prb");
  const ring = readRing(ctx, rb);
  const o = infoOffsets(ctx);
  const out: LogRecord[] = [];
  let id = ring.tailId & DESC_ID_MASK;
  const head = ring.headId & DESC_ID_MASK;
  // The ring holds descCount descriptors: a walk from tail to head is never longer.
  for (let steps = 0n; steps <= ring.descCount; steps++) {
    const idx = Number(id % ring.descCount);
    const d = idx * ring.descSize;
    const sv = ring.descs.readBigUInt64LE(d);
    const state = sv >> DESC_FLAGS_SHIFT;
    if ((sv & DESC_ID_MASK) === id && (state === DESC_COMMITTED || state === DESC_FINALIZED)) {
      const i = idx * ring.infoSize;
      const text = blockText(
        ring,
        ring.descs.readBigUInt64LE(d + o.textBegin),
        ring.descs.readBigUInt64LE(d + o.textNext),
      );
      if (text !== undefined) {
        const flagsLevel = ring.infos[i + o.facility + 1]!;
        out.push({
          seq: ring.infos.readBigUInt64LE(i + o.seq),
          tsNsec: ring.infos.readBigUInt64LE(i + o.ts),
          facility: ring.infos[i + o.facility]!,
          // `u8 flags:5; u8 level:3;` after facility: GCC packs the level into the top bits.
          level: flagsLevel >> 5,
          text: text.subarray(0, Math.min(ring.infos.readUInt16LE(i + o.textLen), text.length)),
        });
      }
    }
    if (id === head) return out.sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
    id = (id + 1n) & DESC_ID_MASK;
  }
  throw new GuestDataError(
    `printk ring at ${hex(rb)}: head_id ${hex(head)} is not within a ring of the tail`,
  );
}
