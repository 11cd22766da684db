import { createHash } from "node:crypto";
import type { AddressSpace } from "../../arch/x86/address-space.js";
import { btfLayout } from "../../symbols/btf-layout.js";
import { TypeDb } from "../../symbols/btf/db.js";
import { parseBtf } from "../../symbols/btf/parse.js";
import { type KallsymsLayout, kallsymsSpan } from "../../symbols/kallsyms/recover.js";
import type { SymbolTable } from "../../symbols/kallsyms/table.js";
import type { StructLayout } from "../../symbols/layout.js";
import { type RecordedLayout, recordedLayout } from "../../symbols/recorded-layout.js";
import { va } from "../../util/address.js";
import {
  type BuildIdentity,
  type BuildPlace,
  type CachedBuild,
  type KernelCache,
  sha256,
} from "./kernel-cache.js";

/** The kernel's types as a command uses them, and the bytes they were read from. */
export interface LoadedBtf {
  readonly layout: StructLayout;
  readonly typeCount: number;
  readonly start: bigint;
  readonly bytes: Uint8Array;
}

export const BTF_SOURCE = "BTF in guest memory";
/** A BTF blob larger than this in a guest is a corrupted pointer, not a kernel. */
export const MAX_BTF = 64 << 20;

export function btfFromBytes(bytes: Uint8Array): { layout: StructLayout; typeCount: number } {
  // Lazily: a command asks about a few dozen of the kernel's ~100k types.
  const db = new TypeDb(parseBtf(bytes, { lazy: true }));
  return { layout: btfLayout(db, BTF_SOURCE), typeCount: db.btf.typeCount };
}

/**
 * The banner, BTF and kallsyms where a cache entry says they lie, or undefined when the banner
 * cannot be read. The BTF and kallsyms (megabytes) are read when first asked for, so an entry of
 * another build costs only its banner; bytes that cannot be read throw then (KernelCache.find
 * takes that as a miss).
 */
export function readIdentity(
  kernel: AddressSpace,
  base: bigint,
  place: BuildPlace,
): BuildIdentity | undefined {
  if (place.btfSize <= 0 || place.btfSize > MAX_BTF) return undefined;
  if (place.kallsymsSize <= 0 || place.kallsymsSize > MAX_KALLSYMS) return undefined;
  let banner: string;
  try {
    banner = kernel.readCString(va(base + place.bannerOffset), 512).trimEnd();
  } catch {
    return undefined;
  }
  let btf: Uint8Array | undefined;
  const hashing = new GuestHasher(kernel);
  return {
    banner,
    get btf() {
      btf ??= kernel.read(va(base + place.btfOffset), place.btfSize);
      return btf;
    },
    btfSha256: () =>
      btf === undefined ? hashing.sha256(base + place.btfOffset, place.btfSize) : sha256(btf),
    kallsymsSha256: () => hashing.sha256(base + place.kallsymsOffset, place.kallsymsSize),
  };
}

/** kallsyms of 2,000,000 symbols (recover.ts's MAX_SYMS) fit in this. */
const MAX_KALLSYMS = 256 << 20;

/** Bytes hashed at once: one buffer, reused, instead of megabytes of fresh memory for the whole blob. */
const HASH_CHUNK = 1 << 20;

/**
 * SHA-256 of guest bytes read a chunk at a time into one buffer, shared by the hashes of one
 * identity. Every command on a build seen before checks the BTF's and kallsyms' hashes, and
 * needs the BTF itself only for a question the entry's answers lack: holding all of it would
 * cost megabytes of memory the process touches for the first time.
 */
class GuestHasher {
  private chunk: Buffer | undefined;

  constructor(private readonly kernel: AddressSpace) {}

  sha256(start: bigint, size: number): string {
    const hash = createHash("sha256");
    this.chunk ??= Buffer.allocUnsafeSlow(HASH_CHUNK);
    for (let done = 0; done < size; ) {
      const part = this.chunk.subarray(0, Math.min(HASH_CHUNK, size - done));
      this.readChunk(start + BigInt(done), part);
      hash.update(part);
      done += part.length;
    }
    return hash.digest("hex");
  }

  /**
   * The kernel image is mapped linearly (__pa_symbol): a chunk whose first and last bytes
   * translate exactly that far apart is read physically, in one go. Read virtually, it cost a
   * walk for every 4 KiB page that boot split out of a large page (~230 for 6.1's BTF, every
   * run). Either way the bytes are the build's, where the image holds them.
   */
  private readChunk(start: bigint, part: Buffer): void {
    const span = BigInt(part.length - 1);
    const first = this.kernel.findTranslation(va(start));
    const last = this.kernel.findTranslation(va(start + span));
    if (first && last && last.phys - first.phys === span) this.kernel.mem.readInto(first.phys, part);
    else this.kernel.readInto(va(start), part);
  }
}

/** The symbols and types of a build seen before; BTF is parsed only for a question not asked then. */
export function fromCache(cached: CachedBuild): { symbols: SymbolTable; btf: LoadedBtf } {
  const recorded = recordedLayout(() => btfFromBytes(cached.btf).layout, cached.answers, BTF_SOURCE);
  keepAnswersAtExit(recorded, cached.saveAnswers);
  return {
    symbols: cached.symbols,
    btf: {
      layout: recorded.layout,
      typeCount: cached.typeCount,
      start: 0n,
      get bytes() {
        return cached.btf;
      },
    },
  };
}

/**
 * Stores a build seen for the first time, and returns its types behind a layout that records
 * the questions this command asks, kept with the build when the process ends.
 */
export function rememberBuild(
  cache: KernelCache,
  kernel: AddressSpace,
  base: bigint,
  banner: { text: string; address: bigint | undefined },
  kallsyms: { symbols: SymbolTable; layout: KallsymsLayout | undefined },
  btf: LoadedBtf,
  log: (line: string) => void,
): LoadedBtf {
  const span = kallsyms.layout && kallsymsSpan(kallsyms.layout);
  if (banner.address === undefined || banner.text === "" || span === undefined) return btf;
  try {
    const place = {
      bannerOffset: banner.address - base,
      btfOffset: btf.start - base,
      btfSize: btf.bytes.length,
      kallsymsOffset: span.start - base,
      kallsymsSize: span.size,
    };
    const id = {
      banner: banner.text,
      btf: btf.bytes,
      kallsymsSha256: () => new GuestHasher(kernel).sha256(span.start, span.size),
    };
    const save = cache.store(base, place, id, kallsyms.symbols, btf.typeCount);
    const recorded = recordedLayout(() => btf.layout, {}, BTF_SOURCE);
    keepAnswersAtExit(recorded, save);
    return { ...btf, layout: recorded.layout };
  } catch (error) {
    // The cache only saves time: a read-only home or a full disk must not fail the command.
    log(`not caching this kernel build: ${(error as Error).message}`);
    return btf;
  }
}

/**
 * The questions are asked after discovery returns (by the walks), so they are written when the
 * process ends; exit handlers run synchronously, and a failed write is only a slower next run.
 */
function keepAnswersAtExit(
  recorded: RecordedLayout,
  save: (answers: RecordedLayout["answers"]) => void,
): void {
  process.once("exit", () => {
    if (!recorded.changed()) return;
    try {
      save(recorded.answers);
    } catch {}
  });
}
