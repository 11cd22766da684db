import type { PhysicalMemory } from "../memory/types.js";
import { DEFAULT_TEXT } from "../os/linux/kernel.js";
import { ImageReader } from "../symbols/kallsyms/bytes.js";
import { type KallsymsLayout, recoverKallsymsAt } from "../symbols/kallsyms/recover.js";
import type { SymbolTable } from "../symbols/kallsyms/table.js";
import { findTokenTables } from "../symbols/kallsyms/tokens.js";
import { hex, pa } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { PausableRun } from "./guest-run.js";
import type { KernelImage } from "./kernel-image.js";
import type { ResidentRam } from "./resident.js";
import { POLL_MS, RESCAN_EVERY, SCAN_MS } from "./slide-poll.js";
import { SLIDE_ALIGN, plausibleSlide } from "./slide.js";

/**
 * The kernel with no file at all: its own kallsyms tables, read from guest RAM once the
 * decompressor has written and relocated it, before it runs.
 *
 * The decompressor writes the ELF image, moves its segments to the load address and then
 * relocates them. kallsyms_relative_base is one of the words relocation changes (by the
 * virtual slide); the names, tokens and offsets are not. So the tables are decoded once from
 * the first copy seen, and after that only the relative_base word of each copy in RAM is
 * watched (8 bytes a poll): when one holds `_text` + a plausible slide, that copy is the
 * relocated kernel. The caller then stops the guest, and `readRelocatedKernel` decodes that
 * copy again from the stopped RAM, so what the traps are built on is what the kernel will run.
 *
 * The slide is `_text` minus its usual link address (0xffffffff81000000, as for a running
 * kernel in os/linux/kernel.ts): with no file there is no other record of the link address.
 */
export interface RelocatedCopy {
  /** Guest-physical address of this copy's kallsyms_token_table. */
  readonly tokenTable: bigint;
  /** Its kallsyms_relative_base as relocated. */
  readonly relativeBase: bigint;
  readonly slide: bigint;
  /** The symbol count of the tables decoded while waiting. */
  readonly symbols: number;
}

export interface RamWaitOptions {
  readonly log: (line: string) => void;
  readonly timeoutMs: number;
  /** Accept only this slide (0 for a guest booted with nokaslr, where nothing is relocated). */
  readonly slide?: bigint;
  /**
   * The guest's run. It is held still while tables are decoded (a fraction of a second to a
   * few seconds on a loaded host): the kernel must not get to its first fork meanwhile.
   */
  readonly run: PausableRun;
}

/**
 * Polls at which tables found but not yet decodable are tried again without a full scan; after
 * that (tables that never decode: not kallsyms after all) only at full scans.
 */
const QUICK_DECODE_RETRIES = 40;
/** Polls between full scans once the tables are decoded. */
const RESCAN_DECODED = 25;
/** The decompressor's raw ELF copy and the moved one are 2 MiB apart. */
const COPY_SHIFT = 0x200000n;
/** Bytes read per step of the token-table scan; neighbours overlap by a token table's size. */
const SCAN_CHUNK = 32 << 20;
const SCAN_OVERLAP = 64 << 10;
/** kallsyms tables sit within this window around their token table (see recover.ts). */
const BEFORE_TOKENS = 64 << 20;
const AFTER_TOKENS = 16 << 20;
/** The kernel image is at most this large (KERNEL_IMAGE_SIZE window). */
const MAX_IMAGE = 256 << 20;

interface Decoded {
  readonly table: SymbolTable;
  /** kallsyms_token_table's bytes: another copy of this kernel's tables starts with the same. */
  readonly tokens: Buffer;
  readonly layout: KallsymsLayout & { readonly relativeBaseAddr: bigint; readonly relativeBase: bigint };
  readonly text: bigint;
}

/** Waits, with the guest running, until some copy of kallsyms in RAM has been relocated. */
export async function waitForRelocatedKallsyms(ram: ResidentRam, o: RamWaitOptions): Promise<RelocatedCopy> {
  const mem = ram.memory;
  const t0 = performance.now();
  const deadline = t0 + o.timeoutMs;
  const since = () => `${((performance.now() - t0) / 1000).toFixed(2)} s`;
  let decoded: Decoded | undefined;
  let tables: bigint[] = [];
  let scans = 0;
  let scanMs = 0;
  let undecodable = 0;
  for (let poll = 0; ; poll++) {
    // Once the tables are known the relocated copy is most likely 2 MiB from a copy already
    // seen (FIELD-NOTES), and those places are checked at every poll: full scans can be rare.
    const fullScan = tables.length === 0 || poll % (decoded ? RESCAN_DECODED : RESCAN_EVERY) === 0;
    if (fullScan) {
      const s0 = performance.now();
      tables = findTokenTablesInRam(ram);
      scans++;
      scanMs += performance.now() - s0;
    }
    // Tables that did not decode are still being written: try them again at every poll, not
    // only at the next full scan (750 ms on, longer on a loaded host), or the relocation is seen
    // late and the kernel may have forked before the traps are armed.
    if (!decoded && tables.length > 0 && (fullScan || undecodable <= QUICK_DECODE_RETRIES)) {
      const d0 = performance.now();
      const candidates = fullScan ? tables : [...tables, ...tablesAtCopyShift(ram, tables)];
      decoded = await o.run.whilePaused(() => decodeFirst(ram, candidates));
      const held = `${((performance.now() - d0) / 1000).toFixed(2)} s`;
      if (decoded)
        o.log(
          `kallsyms in guest RAM after ${since()}: ${decoded.table.size} symbols (decoded in ${held}, guest paused); waiting for the relocated copy`,
        );
      else if (undecodable++ === 0)
        o.log(
          `token tables in guest RAM after ${since()} do not decode yet (guest paused ${held}); trying again`,
        );
    }
    if (decoded) {
      const near = tables.flatMap((t) => [t - COPY_SHIFT, t + COPY_SHIFT]);
      const found = relocatedAmong(mem, [...new Set([...tables, ...near])], decoded, o.slide);
      if (found) {
        o.log(
          `relocated kallsyms after ${since()} (${scans} scans of the RAM the guest wrote, ${(scanMs / 1000).toFixed(2)} s of reading)`,
        );
        return found;
      }
    }
    if (o.run.ended)
      throw new VmsightError("E_GUEST_STOPPED", "the guest stopped before its kernel was relocated");
    if (performance.now() > deadline) throw noKernel(tables.length, decoded !== undefined);
    await new Promise((r) => setTimeout(r, decoded ? POLL_MS : SCAN_MS));
  }
}

function noKernel(tables: number, decoded: boolean): VmsightError {
  const hint =
    "give the guest's kernel with --kernel BZIMAGE or --vmlinux FILE; for a guest booted with nokaslr pass --slide 0";
  if (tables === 0)
    return new VmsightError("E_NO_KERNEL", "no kallsyms tables ever appeared in guest RAM", { hint });
  if (!decoded)
    return new VmsightError(
      "E_NO_KERNEL",
      `kallsyms-like token tables appeared in guest RAM (${tables}) but none decoded to a symbol table`,
      { hint },
    );
  return new VmsightError(
    "E_NO_SLIDE",
    "the kernel's kallsyms were found in guest RAM but never relocated (booted with nokaslr?)",
    { hint },
  );
}

/** Guest-physical addresses of every kallsyms_token_table in RAM the guest has written. */
function findTokenTablesInRam(ram: ResidentRam): bigint[] {
  const found = new Set<bigint>();
  const buf = Buffer.alloc(SCAN_CHUNK + SCAN_OVERLAP);
  for (const run of ram.runs()) {
    for (let o = 0; o < run.size; o += SCAN_CHUNK) {
      const len = Math.min(SCAN_CHUNK + SCAN_OVERLAP, run.size - o);
      const at = run.start + BigInt(o);
      const view = buf.subarray(0, len);
      try {
        ram.memory.readInto(pa(at), view);
      } catch {
        continue;
      }
      for (const tt of findTokenTables(new ImageReader(view, at))) found.add(at + BigInt(tt.table));
    }
  }
  return [...found].sort((a, b) => (a < b ? -1 : 1));
}

/**
 * Token tables that appeared exactly 2 MiB from known ones since the last full scan: the copy the
 * decompressor moves is written there, and its tables may decode before the raw copy's do.
 */
function tablesAtCopyShift(ram: ResidentRam, tables: readonly bigint[]): bigint[] {
  const found: bigint[] = [];
  for (const at of new Set(tables.flatMap((t) => [t - COPY_SHIFT, t + COPY_SHIFT]))) {
    if (tables.includes(at)) continue;
    let window: Buffer;
    try {
      window = ram.memory.read(pa(at), SCAN_OVERLAP);
    } catch {
      continue;
    }
    for (const tt of findTokenTables(new ImageReader(window, at))) if (tt.table === 0) found.push(at);
  }
  return found;
}

/** The tables around one token table, decoded from RAM as it is now. */
function decodeAt(ram: ResidentRam, tokenTable: bigint): Decoded | undefined {
  const run = ram.runs().find((r) => tokenTable >= r.start && tokenTable < r.start + BigInt(r.size));
  if (!run) return undefined;
  const from =
    tokenTable - BigInt(BEFORE_TOKENS) > run.start ? tokenTable - BigInt(BEFORE_TOKENS) : run.start;
  const runEnd = run.start + BigInt(run.size);
  const to = tokenTable + BigInt(AFTER_TOKENS) < runEnd ? tokenTable + BigInt(AFTER_TOKENS) : runEnd;
  let bytes: Buffer;
  try {
    bytes = ram.memory.read(pa(from), Number(to - from));
  } catch {
    return undefined;
  }
  const tt = [...findTokenTables(new ImageReader(bytes, from))].find(
    (t) => from + BigInt(t.table) === tokenTable,
  );
  if (!tt) return undefined;
  try {
    const { table, layout } = recoverKallsymsAt(bytes, from, tt);
    const text = table.findAddress("_text") ?? table.findAddress("_stext");
    if (layout.relativeBaseAddr === undefined || layout.relativeBase === undefined || text === undefined)
      return undefined;
    return {
      table,
      tokens: Buffer.from(bytes.subarray(tt.table, tt.index)),
      layout: { ...layout, relativeBaseAddr: layout.relativeBaseAddr, relativeBase: layout.relativeBase },
      text,
    };
  } catch {
    // Still being written (a partial copy): the next scan tries again.
    return undefined;
  }
}

function decodeFirst(ram: ResidentRam, tables: readonly bigint[]): Decoded | undefined {
  for (const tt of tables) {
    const d = decodeAt(ram, tt);
    if (d) return d;
  }
  return undefined;
}

/**
 * The copy whose relative_base word now says the kernel moved by a plausible slide (or by the
 * slide the user gave). Every copy of the same kernel keeps that word at the same distance
 * from its token table.
 */
function relocatedAmong(
  mem: PhysicalMemory,
  tables: readonly bigint[],
  d: Decoded,
  want: bigint | undefined,
): RelocatedCopy | undefined {
  const delta = d.layout.relativeBaseAddr - d.layout.tokenTableAddr;
  for (const tokenTable of tables) {
    let rb: bigint;
    try {
      if (!mem.read(pa(tokenTable), d.tokens.length).equals(d.tokens)) continue;
      rb = mem.read(pa(tokenTable + delta), 8).readBigUInt64LE(0);
    } catch {
      continue;
    }
    const text = BigInt.asUintN(64, d.text + rb - d.layout.relativeBase);
    const slide = BigInt.asUintN(64, text - DEFAULT_TEXT);
    if (want === undefined ? plausibleSlide(slide) : slide === want) {
      return { tokenTable, relativeBase: rb, slide, symbols: d.table.size };
    }
  }
  return undefined;
}

/**
 * The relocated kernel, decoded again from RAM now that the guest is stopped: its symbols at
 * link-time addresses (moved back by the slide, as a file would give them) and its image bytes
 * from where it sits in RAM. Throws when the copy no longer decodes or changed since it was seen.
 */
export function readRelocatedKernel(
  ram: ResidentRam,
  copy: RelocatedCopy,
  log: (line: string) => void,
): Pick<KernelImage, "symbols" | "image" | "base"> {
  const mem = ram.memory;
  const d = decodeAt(ram, copy.tokenTable);
  if (!d || d.layout.relativeBase !== copy.relativeBase || d.table.size !== copy.symbols) {
    throw new VmsightError(
      "E_GUEST_DATA",
      `the relocated kallsyms at ${hex(copy.tokenTable)} changed between two reads of the stopped guest`,
      { hint: "give the guest's kernel with --kernel BZIMAGE or --vmlinux FILE" },
    );
  }
  const slide = copy.slide;
  const linked = d.table.rebase(-slide);
  const end = d.table.findAddress("_end");
  const size =
    end !== undefined && end > d.text && end - d.text < BigInt(MAX_IMAGE) ? Number(end - d.text) : 0;
  const textPhys = findTextPhys(mem, d, copy.tokenTable, size);
  let image: Uint8Array = new Uint8Array();
  if (textPhys === undefined || size === 0) {
    log(
      "the kernel's text was not located in RAM: flush_sigqueue's first instruction cannot be checked, so task_struct.pending will not be placed",
    );
  } else {
    image = mem.read(pa(textPhys), size);
    log(`kernel image at guest-physical ${hex(textPhys)} (${(size / 2 ** 20).toFixed(1)} MiB)`);
  }
  return { symbols: linked, image, base: BigInt.asUintN(64, d.text - slide) };
}

/**
 * Where `_text` of this copy is in guest-physical memory. The loaded kernel is one physically
 * contiguous block starting 2 MiB-aligned, laid out like its virtual addresses, so it starts at
 * one of the 2 MiB boundaries below the token table; the right one has linux_banner where the
 * symbol says. The other copy (the unmoved ELF, 2 MiB away) is overwritten there by this one;
 * should two candidates still read a banner, neither is trusted.
 */
function findTextPhys(mem: PhysicalMemory, d: Decoded, tokenTable: bigint, size: number): bigint | undefined {
  const banner = d.table.findAddress("linux_banner");
  if (banner === undefined || size === 0) return undefined;
  const bannerOff = banner - d.text;
  const lowest = tokenTable - BigInt(size) > 0n ? tokenTable - BigInt(size) : 0n;
  const matches: bigint[] = [];
  for (let x = tokenTable - (tokenTable % SLIDE_ALIGN); x >= lowest; x -= SLIDE_ALIGN) {
    try {
      if (mem.read(pa(x + bannerOff), 14).toString("latin1") === "Linux version ") matches.push(x);
    } catch {}
    if (x === 0n) break;
  }
  return matches.length === 1 ? matches[0] : undefined;
}
