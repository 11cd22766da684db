import type { Target } from "../qemu/session.js";
import { hex, pa } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { KernelImage } from "./kernel-image.js";
import { scanRuns } from "./resident.js";
import { SAMPLE_BYTES, dataPhysFor, findAll, slideFromData } from "./slide.js";

/** Slide polling period: the relocation is seen ~1 s before the first fork; polling harder only
 * takes memory bandwidth from the guest. */
export const POLL_MS = 40;
export const SCAN_MS = 150;
export const RESCAN_EVERY = 5;
const RAW_TO_FINAL = 0x200000n;

/**
 * The KASLR slide of the kernel in `k` (a file the user gave), from guest RAM while the
 * decompressor runs: resolves once a copy of its .data has been relocated (see slide.ts).
 */
export async function pollSlide(
  target: Target,
  k: KernelImage,
  log: (line: string) => void,
  timeoutMs: number,
  running: Promise<unknown>,
): Promise<bigint> {
  let stopped = false;
  void running.then(() => {
    stopped = true;
  });
  const deadline = performance.now() + timeoutMs;
  let known: bigint[] = [];
  for (let poll = 0; ; poll++) {
    if (known.length === 0 || poll % RESCAN_EVERY === 0) known = scanForBanner(target, k);
    // The copy that gets relocated is written after the raw ELF copy, 2 MiB above it (FIELD-NOTES):
    // watch there too, so it is seen without waiting for the next full scan.
    const places = [...new Set([...known, ...known.map((a) => a + RAW_TO_FINAL)])];
    for (const at of places) {
      let ram: Buffer;
      try {
        ram = target.memory.read(pa(dataPhysFor(k, at)), Math.min(SAMPLE_BYTES, k.data.bytes.length));
      } catch {
        continue;
      }
      const r = slideFromData(k, ram);
      if (r.slide !== undefined) {
        log(
          `relocated kernel at ${hex(at - (k.bannerAddr - k.base))}: ${r.agreeing}/${r.compared} pointers moved by the slide`,
        );
        return r.slide;
      }
    }
    if (stopped)
      throw new VmsightError("E_GUEST_STOPPED", "the guest stopped before its kernel was relocated");
    if (performance.now() > deadline) {
      throw new VmsightError(
        "E_NO_SLIDE",
        known.length === 0
          ? "the kernel image's banner never appeared in guest RAM: is this the kernel the guest boots?"
          : "the relocated kernel was never seen (booted with nokaslr? then its slide is 0)",
        { hint: "give the guest's own kernel with --kernel/--vmlinux; for nokaslr guests pass --slide 0" },
      );
    }
    // A full scan reads every resident page: while nothing is found, scan seldom, so the
    // decompressor keeps its memory bandwidth; once the banner is there, check its copies often.
    await new Promise((r) => setTimeout(r, known.length === 0 ? SCAN_MS : POLL_MS));
  }
}

/**
 * Guest-physical addresses of the banner of this kernel in RAM the guest has written (from the
 * QEMU process's pagemap), or in all of RAM when the pagemap cannot be read.
 */
function scanForBanner(target: Target, k: KernelImage): bigint[] {
  const found: bigint[] = [];
  for (const run of scanRuns(target)) {
    for (let o = 0; o < run.size; o += SCAN_CHUNK) {
      const len = Math.min(SCAN_CHUNK + k.banner.length, run.size - o);
      let b: Buffer;
      try {
        b = target.memory.read(pa(run.start + BigInt(o)), len);
      } catch {
        continue;
      }
      for (const at of findAll(b, k.banner)) if (at < SCAN_CHUNK) found.push(run.start + BigInt(o + at));
    }
  }
  return found;
}

const SCAN_CHUNK = 32 << 20;
