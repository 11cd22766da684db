import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LIME_HEADER, LIME_MAGIC, openLime, parseLime } from "../../src/memory/images.js";
import { pa } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";
import { fuzzTargets } from "./harness.js";
import { typed } from "./typed.js";

/** A LiME image of the given ranges, as LiME itself writes one. */
export function limeBytes(ranges: readonly { start: bigint; bytes: Uint8Array }[]): Uint8Array {
  return Buffer.concat(
    ranges.flatMap((r) => {
      const h = Buffer.alloc(LIME_HEADER);
      h.writeUInt32LE(LIME_MAGIC, 0);
      h.writeUInt32LE(1, 4);
      h.writeBigUInt64LE(r.start, 8);
      h.writeBigUInt64LE(r.start + BigInt(r.bytes.length) - 1n, 16);
      return [h, Buffer.from(r.bytes)];
    }),
  );
}

function seeds(): Uint8Array[] {
  const ram = (n: number, fill: number) => new Uint8Array(n).fill(fill);
  return [
    limeBytes([{ start: 0n, bytes: ram(4096, 0x11) }]),
    limeBytes([
      { start: 0n, bytes: ram(1024, 0x22) },
      { start: 0x10_0000n, bytes: ram(2048, 0x33) },
      { start: 0x1_0000_0000n, bytes: ram(512, 0x44) },
    ]),
  ];
}

function fromBuffer(bytes: Uint8Array): void {
  const b = Buffer.from(bytes);
  const readAt = (offset: number, length: number) => {
    if (offset + length > b.length) throw new GuestDataError(`read past the end at ${offset}`);
    return b.subarray(offset, offset + length);
  };
  const ranges = parseLime(readAt, b.length);
  const total = ranges.reduce((s, r) => s + r.size + BigInt(LIME_HEADER), 0n);
  assert.equal(total, BigInt(b.length), "the ranges and their headers are the whole file");
}

let dir: string | undefined;

/** The CLI's path: the file opened, each range's first and last byte read. */
function throughFile(bytes: Uint8Array): void {
  dir ??= mkdtempSync(join(tmpdir(), "vmsight-fuzz-"));
  process.once("exit", () => dir && rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "image.lime");
  writeFileSync(path, bytes);
  const mem = openLime(path);
  try {
    for (const r of mem.ranges())
      for (const at of [r.start, r.start + r.size - 1n]) typed(() => mem.read(pa(at), 1));
  } finally {
    mem.close();
  }
}

fuzzTargets(import.meta.url, [
  { name: "lime", seeds, run: fromBuffer, runs: 3000 },
  { name: "lime-file", seeds, run: throughFile, runs: 1000 },
]);
