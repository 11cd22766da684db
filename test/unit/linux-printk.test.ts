/**
 * The printk ring buffer reader against a crafted ring: records in id order from tail to head,
 * a text block that wraps to the start of the data ring, a data-less record, descriptors that are
 * reserved or hold another id (skipped), and hostile sizes and ids (a typed error, no hang).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dmesgRows, formatDmesgLine } from "../../src/commands/forensics.js";
import { logRecords } from "../../src/os/linux/printk.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel, type LayoutSpec } from "../support/crafted-kernel.js";

const LAYOUT: LayoutSpec = {
  printk_ringbuffer: {
    size: 72,
    members: {
      "desc_ring.count_bits": [0, 4],
      "desc_ring.descs": [8, 8],
      "desc_ring.infos": [16, 8],
      "desc_ring.head_id": [24, 8],
      "desc_ring.tail_id": [32, 8],
      "text_data_ring.size_bits": [48, 4],
      "text_data_ring.data": [56, 8],
    },
  },
  prb_desc: { size: 24, members: { "text_blk_lpos.begin": [8, 8], "text_blk_lpos.next": [16, 8] } },
  printk_info: { size: 32, members: { seq: [0, 8], ts_nsec: [8, 8], text_len: [16, 2], facility: [18, 1] } },
};

const COMMITTED = 1n;
const FINALIZED = 2n;
const RESERVED = 0n;

interface Rec {
  readonly id: bigint;
  readonly state: bigint;
  readonly seq: bigint;
  readonly text: string;
  readonly begin: bigint;
  readonly next: bigint;
  /** Where the block's bytes go in the data ring (its index, or 0 when it wrapped). */
  readonly at?: number;
}

/** A 4-descriptor, 64-byte ring holding `recs`, `prb` pointing at it. */
function ring(recs: readonly Rec[], opts: { countBits?: number; tail?: bigint; head?: bigint } = {}) {
  const k = new CraftedKernel({ layout: LAYOUT });
  const rb = k.defineSymbol("printk_rb_static", 72);
  k.writeU64(k.defineSymbol("prb", 8), rb);
  const descs = k.alloc(4 * 24);
  const infos = k.alloc(4 * 32);
  const data = k.alloc(64);
  k.writeU32(rb, opts.countBits ?? 2);
  k.writeU64(rb + 8n, descs);
  k.writeU64(rb + 16n, infos);
  k.writeU64(rb + 24n, opts.head ?? recs[recs.length - 1]!.id);
  k.writeU64(rb + 32n, opts.tail ?? recs[0]!.id);
  k.writeU32(rb + 48n, 6);
  k.writeU64(rb + 56n, data);
  for (const r of recs) {
    const idx = Number(r.id % 4n);
    k.writeU64(descs + BigInt(idx * 24), (r.state << 62n) | r.id);
    k.writeU64(descs + BigInt(idx * 24 + 8), r.begin);
    k.writeU64(descs + BigInt(idx * 24 + 16), r.next);
    const info = infos + BigInt(idx * 32);
    k.writeU64(info, r.seq);
    k.writeU64(info + 8n, 3_287_126_000n + r.seq);
    k.write(info + 16n, Buffer.of(r.text.length, 0, 0, 6 << 5));
    const at = r.at ?? Number(r.begin % 64n);
    if ((r.begin & 1n) === 0n) {
      k.writeU64(data + BigInt(at), r.id);
      k.write(data + BigInt(at + 8), Buffer.from(r.text));
    }
  }
  return k.context();
}

const RECORDS: Rec[] = [
  { id: 5n, state: FINALIZED, seq: 1n, text: "hello", begin: 24n, next: 40n },
  { id: 6n, state: COMMITTED, seq: 2n, text: "a\nb", begin: 40n, next: 56n },
  // Did not fit in the 8 bytes left at the end of the ring: stored from index 0 of the next wrap.
  { id: 7n, state: FINALIZED, seq: 3n, text: "wrap!", begin: 56n, next: 64n + 16n, at: 0 },
  { id: 8n, state: FINALIZED, seq: 4n, text: "", begin: 81n, next: 81n },
];

test("records from tail to head, wrapped and data-less blocks included", () => {
  const recs = logRecords(ring(RECORDS));
  assert.deepEqual(
    recs.map((r) => [r.seq, r.text.toString(), r.level, r.facility]),
    [
      [1n, "hello", 6, 0],
      [2n, "a\nb", 6, 0],
      [3n, "wrap!", 6, 0],
      [4n, "", 6, 0],
    ],
  );
});

test("dmesg rows split a record at its newlines and print as dmesg does", () => {
  const rows = dmesgRows(ring(RECORDS));
  assert.deepEqual(
    rows.map((r) => [r.seq, r.text]),
    [
      [1, "hello"],
      [2, "a"],
      [2, "b"],
      [3, "wrap!"],
      [4, ""],
    ],
  );
  assert.equal(formatDmesgLine(rows[0]!), "[    3.287126] hello");
});

test("a reserved descriptor, or one that holds another id, is skipped", () => {
  const recs = RECORDS.map((r) =>
    r.id === 6n ? { ...r, state: RESERVED } : r.id === 7n ? { ...r, id: 11n, at: 0 } : r,
  );
  // id 11 sits in slot 3, where the walk expects id 7.
  const seqs = logRecords(ring(recs, { tail: 5n, head: 8n })).map((r) => r.seq);
  assert.deepEqual(seqs, [1n, 4n]);
});

test("hostile rings fail with a typed error instead of reading or walking without bound", () => {
  assert.throws(() => logRecords(ring(RECORDS, { countBits: 40 })), GuestDataError);
  // A head the walk from the tail never reaches: bounded by the ring's size.
  assert.throws(() => logRecords(ring(RECORDS, { head: 5n + 1000n })), GuestDataError);
});
