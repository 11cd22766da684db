import { createHash } from "node:crypto";
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
  writevSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { mapFileRange } from "../../memory/mmap.js";
import { type SymbolArrays, SymbolTable } from "../../symbols/kallsyms/table.js";
import type { LayoutAnswers } from "../../symbols/recorded-layout.js";
import { ensurePrivateDir } from "../../util/private-dir.js";
import { addToEach } from "../../util/u64-column.js";

/**
 * What vmsight learned about one kernel build (its kallsyms, the struct layout answers its
 * commands asked of its BTF), kept on disk so that the next command on any guest running that
 * build skips reading the image and parsing BTF. An entry is only used after what it was learned
 * from is read again from the guest at the place the entry says it lies: the `linux_banner`
 * string, and a SHA-256 of the BTF bytes and of the kallsyms tables. A guest whose banner, BTF or
 * kallsyms differ gets a miss, never a stale answer: a damaged dump or a guest that rewrote its
 * kallsyms cannot hand its symbols to the next guest of that build.
 */

/** Where a build keeps what identifies it, relative to the start of the kernel image. */
export interface BuildPlace {
  readonly bannerOffset: bigint;
  readonly btfOffset: bigint;
  readonly btfSize: number;
  /** The kallsyms tables, first to last (kallsymsSpan). */
  readonly kallsymsOffset: bigint;
  readonly kallsymsSize: number;
}

export interface BuildIdentity {
  readonly banner: string;
  readonly btf: Uint8Array;
  /** SHA-256 (hex) of `btf`, where the source can hash it without holding it all. */
  btfSha256?(): string;
  /** SHA-256 (hex) of the kallsyms tables' bytes. */
  kallsymsSha256(): string;
}

export interface CachedBuild {
  readonly btf: Uint8Array;
  readonly typeCount: number;
  /** The kallsyms, moved to the image base the lookup was given. */
  readonly symbols: SymbolTable;
  readonly answers: LayoutAnswers;
  /** Keeps the answers a run added (the next command may ask other questions). */
  saveAnswers(answers: LayoutAnswers): void;
}

interface Header extends Omit<BuildPlace, "bannerOffset" | "btfOffset" | "kallsymsOffset"> {
  readonly version: 4;
  readonly banner: string;
  readonly bannerOffset: string;
  readonly btfOffset: string;
  readonly btfSha256: string;
  readonly kallsymsOffset: string;
  readonly kallsymsSha256: string;
  readonly typeCount: number;
}

/** Entries to consider at most: the directory is ours, but a lookup stays cheap whatever is in it. */
const MAX_ENTRIES = 64;

/** $VMSIGHT_CACHE_DIR, else $XDG_CACHE_HOME/vmsight/kernels-seen, else ~/.cache/vmsight/kernels-seen. */
export function kernelCacheDir(): string {
  if (process.env.VMSIGHT_CACHE_DIR) return process.env.VMSIGHT_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || join(homedir(), ".cache");
  return join(base, "vmsight", "kernels-seen");
}

/** SHA-256 in hex: how an entry names the BTF it was made from. */
export const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

export class KernelCache {
  constructor(readonly dir: string) {}

  /** The user's cache, or undefined when VMSIGHT_NO_CACHE=1. */
  static forUser(): KernelCache | undefined {
    return process.env.VMSIGHT_NO_CACHE === "1" ? undefined : new KernelCache(kernelCacheDir());
  }

  /**
   * The entry whose identity `read` finds again in the guest (banner and BTF hash equal), with
   * its symbols moved to `base`. `read` returns undefined when the place is not readable.
   */
  find(base: bigint, read: (place: BuildPlace) => BuildIdentity | undefined): CachedBuild | undefined {
    for (const name of this.headers()) {
      try {
        const h = JSON.parse(readFileSync(join(this.dir, name), "utf8")) as Header;
        if (h.version !== 4) continue;
        const place = {
          bannerOffset: BigInt(h.bannerOffset),
          btfOffset: BigInt(h.btfOffset),
          btfSize: h.btfSize,
          kallsymsOffset: BigInt(h.kallsymsOffset),
          kallsymsSize: h.kallsymsSize,
        };
        const id = read(place);
        if (!id || id.banner !== h.banner || (id.btfSha256?.() ?? sha256(id.btf)) !== h.btfSha256) continue;
        if (id.kallsymsSha256() !== h.kallsymsSha256) continue;
        const key = name.slice(0, -".json".length);
        const answersPath = join(this.dir, `${key}.layout.json`);
        return {
          // Read only if a command asks a question the entry's answers lack.
          get btf() {
            return id.btf;
          },
          typeCount: h.typeCount,
          symbols: decodeSymbols(mapOrRead(join(this.dir, `${key}.syms`)), base),
          answers: readAnswers(answersPath),
          saveAnswers: (answers) => this.write(answersPath, JSON.stringify(answers)),
        };
      } catch {
        // A damaged or half-written entry is a miss; the next store replaces it.
      }
    }
    return undefined;
  }

  /** Keeps a build; returns how to keep its layout answers once the command has asked them. */
  store(
    base: bigint,
    place: BuildPlace,
    id: BuildIdentity,
    symbols: SymbolTable,
    typeCount: number,
  ): (answers: LayoutAnswers) => void {
    const btfSha256 = sha256(id.btf);
    const key = sha256(`${id.banner}\0${btfSha256}`).slice(0, 24);
    const header: Header = {
      version: 4,
      banner: id.banner,
      bannerOffset: place.bannerOffset.toString(),
      btfOffset: place.btfOffset.toString(),
      btfSize: place.btfSize,
      btfSha256,
      kallsymsOffset: place.kallsymsOffset.toString(),
      kallsymsSize: place.kallsymsSize,
      kallsymsSha256: id.kallsymsSha256(),
      typeCount,
    };
    this.ensureDir();
    this.writePieces(join(this.dir, `${key}.syms`), encodeSymbols(symbols.toArrays(), base));
    // The header last: an entry is visible only once its symbols are complete.
    this.write(join(this.dir, `${key}.json`), JSON.stringify(header));
    return (answers) => this.write(join(this.dir, `${key}.layout.json`), JSON.stringify(answers));
  }

  clear(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  /**
   * The directory, made 0700 if missing (its parents too), and only if it is a real directory of
   * ours with mode 0700: entries someone else could plant would be trusted symbols.
   */
  private ensureDir(): void {
    mkdirSync(dirname(this.dir), { recursive: true, mode: 0o700 });
    ensurePrivateDir(this.dir);
  }

  private headers(): string[] {
    try {
      this.ensureDir();
      return readdirSync(this.dir)
        .filter((f) => f.endsWith(".json") && !f.endsWith(".layout.json"))
        .slice(0, MAX_ENTRIES);
    } catch {
      return [];
    }
  }

  /** Write then rename: a concurrent reader sees the old file or the new one, never half. */
  private write(path: string, data: string | Uint8Array): void {
    const tmp = `${path}.${process.pid}.tmp`;
    writeFileSync(tmp, data, { mode: 0o600 });
    renameSync(tmp, path);
  }

  /** As write, for a file made of pieces: written one after another, never joined in memory. */
  private writePieces(path: string, pieces: readonly Uint8Array[]): void {
    const tmp = `${path}.${process.pid}.tmp`;
    const fd = openSync(tmp, "w", 0o600);
    try {
      writeAll(fd, pieces);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  }
}

/**
 * The file's bytes, mapped where the native reader can map files: a command touches only the
 * symbol table's columns it looks up, and the names (read whole) come in with the kernel's
 * fault-around, several pages a fault, where a read copies every page into fresh memory. Our
 * files are replaced by rename, never rewritten in place, so a mapping never sees one shrink.
 */
function mapOrRead(path: string): Buffer {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    return (size > 0 ? mapFileRange(fd, 0n, size, false) : undefined) ?? readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

function readAnswers(path: string): LayoutAnswers {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as LayoutAnswers;
  } catch {
    return {};
  }
}

/**
 * Columns, so that a later run decodes nothing it does not ask for:
 * [u32 n][u32 0][n × u64 value][n+1 × u32 name start][u32 slots][slots × u32 name-index.ts table]
 * [n × u8 absolute: 1 or 0][n × u8 type letter][names, concatenated, UTF-8]. Values are offsets from the
 * image base, so one entry serves every KASLR slide; per-CPU (absolute) symbols are kept as
 * they are. Name starts count UTF-16 units of the decoded names, as String.slice does.
 * The table's own arrays are written as they are: only the values are made anew.
 */
function encodeSymbols(a: SymbolArrays, base: bigint): Uint8Array[] {
  const values = a.addresses.slice();
  addToEach(values, -base, (i) => a.absolute[i] !== 1);
  return [
    Uint32Array.of(a.count, 0),
    values,
    a.starts,
    Uint32Array.of(a.byName.length),
    a.byName,
    a.absolute,
    a.types,
    Buffer.from(a.names, "utf8"),
  ].map(bytesOf);
}

/** writev may write less than asked (a signal, a full pipe): the rest goes in further calls. */
function writeAll(fd: number, pieces: readonly Uint8Array[]): void {
  const left = pieces.filter((p) => p.length > 0);
  while (left.length > 0) {
    let done = writevSync(fd, left);
    while (left.length > 0 && done >= left[0]!.length) done -= left.shift()!.length;
    if (left.length > 0 && done > 0) left[0] = left[0]!.subarray(done);
  }
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function decodeSymbols(data: Buffer, base: bigint): SymbolTable {
  const n = data.readUInt32LE(0);
  let at = 8;
  const take = (bytes: number, align: number): Uint8Array => {
    if (at + bytes > data.length) throw new Error("damaged symbol file");
    const from = data.byteOffset + at;
    at += bytes;
    // A view where the file's buffer is aligned for the column (a large file read has its own
    // buffer, so this is the usual case); a copy where it is not.
    if (from % align === 0) return new Uint8Array(data.buffer, from, bytes);
    return new Uint8Array(data.subarray(at - bytes, at));
  };
  const column = <T>(
    make: (b: ArrayBuffer, offset: number, length: number) => T,
    bytes: number,
    size: number,
  ): T => {
    const b = take(bytes, size);
    return make(b.buffer as ArrayBuffer, b.byteOffset, bytes / size);
  };
  const addresses = column((b, o, l) => new BigUint64Array(b, o, l), n * 8, 8);
  const starts = column((b, o, l) => new Uint32Array(b, o, l), (n + 1) * 4, 4);
  const slots = column((b, o, l) => new Uint32Array(b, o, l), 4, 4)[0]!;
  if (slots > 4 * n + 16) throw new Error("damaged symbol file");
  const byName = column((b, o, l) => new Uint32Array(b, o, l), slots * 4, 4);
  const absolute = take(n, 1);
  const types = take(n, 1);
  // Kernel symbol names are ASCII: then each name is read from the file's bytes when looked up
  // (see SymbolArrays.asciiNames). UTF-8 is longer than its UTF-16 count exactly when a name is
  // not ASCII: then all are decoded now.
  const nameBytes = data.subarray(at);
  const arrays = { count: n, addresses, absolute, types, starts, byName };
  if (nameBytes.length === starts[n]) {
    let names: string | undefined;
    return SymbolTable.fromArrays(
      {
        ...arrays,
        asciiNames: nameBytes,
        get names() {
          names ??= nameBytes.toString("latin1");
          return names;
        },
      },
      base,
    );
  }
  const names = nameBytes.toString("utf8");
  if (names.length !== starts[n]) throw new Error("damaged symbol file");
  return SymbolTable.fromArrays({ ...arrays, names }, base);
}
