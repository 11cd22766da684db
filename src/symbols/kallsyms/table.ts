import { hex } from "../../util/address.js";
import { VmsightError } from "../../util/errors.js";
import { addToEach, isAscending } from "../../util/u64-column.js";
import { buildNameIndex, lookupName } from "./name-index.js";

export interface KernelSymbol {
  readonly name: string;
  readonly address: bigint;
  /** The kallsyms / nm type letter: "T", "t", "D", "A", ... */
  readonly type: string;
  /**
   * Not moved by `rebase`: per-CPU variables, whose "address" is an offset into each CPU's
   * per-CPU area, stay put when KASLR slides the image.
   */
  readonly absolute?: boolean;
  /** `[module]` column of /proc/kallsyms. */
  readonly module?: string;
}

export interface Symbolized {
  readonly name: string;
  readonly offset: bigint;
}

const byAddress = (a: KernelSymbol, b: KernelSymbol): number =>
  a.address < b.address ? -1 : a.address > b.address ? 1 : 0;

function isSorted(symbols: readonly KernelSymbol[]): boolean {
  for (let i = 1; i < symbols.length; i++) {
    if (symbols[i - 1]!.address > symbols[i]!.address) return false;
  }
  return true;
}

/**
 * A table's contents as plain arrays in table order: what kallsyms recovery produces and what the
 * kernel cache writes, so that neither builds an object (name, BigInt, letter) per symbol.
 */
export interface SymbolArrays {
  readonly count: number;
  /**
   * Per-CPU (absolute) symbols hold their offsets, as they are; the others their address, less
   * the base the table was given (SymbolTable.fromArrays).
   */
  readonly addresses: BigUint64Array;
  /** 1 where the symbol is absolute. */
  readonly absolute: Uint8Array;
  /** The type letters, as char codes. */
  readonly types: Uint8Array;
  /** Every name, back to back: name i is names.slice(starts[i], starts[i + 1]). */
  readonly names: string;
  /**
   * The same names as bytes, when every one is ASCII (a byte a UTF-16 unit): name i is then read
   * from them alone, and `names` may be a getter that decodes them all only if asked for whole.
   * A kept build's names (2 MB for 6.1) are read this way from the mapped file: decoding them all
   * copied them into memory the process had not touched (~6 ms of page faults here).
   */
  readonly asciiNames?: Buffer;
  readonly starts: Uint32Array;
  /** buildNameIndex over the names. */
  readonly byName: Uint32Array;
}

/**
 * An immutable kernel symbol table sorted by address. Names are not unique (static functions
 * in different files share names): every entry is kept, and lookups by name answer the first
 * one in address order.
 */
export class SymbolTable {
  private list: readonly KernelSymbol[] | undefined;
  private readonly arrays: SymbolArrays | undefined;
  /** What every non-absolute entry of `arrays.addresses` is short of its address. */
  private readonly base: bigint = 0n;
  /** Ascending; built on first use for a table over arrays given a base. */
  private sortedAddresses: BigUint64Array | undefined;
  private byName: Map<string, number> | undefined;
  private builtArrays: SymbolArrays | undefined;

  constructor(symbols: readonly KernelSymbol[] | { readonly arrays: SymbolArrays; readonly base: bigint }) {
    if (!Array.isArray(symbols)) {
      const over = symbols as { readonly arrays: SymbolArrays; readonly base: bigint };
      this.arrays = over.arrays;
      this.base = over.base;
      if (over.base === 0n) this.sortedAddresses = over.arrays.addresses;
      return;
    }
    // Array.prototype.sort is stable, so aliases keep their source order.
    const sorted = isSorted(symbols) ? symbols.slice() : symbols.slice().sort(byAddress);
    this.list = sorted;
    this.arrays = undefined;
    this.sortedAddresses = new BigUint64Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      this.sortedAddresses[i] = BigInt.asUintN(64, sorted[i]!.address);
    }
  }

  /**
   * A table over arrays in address order, as they are. Arrays with no base (kallsyms just
   * recovered) are checked now, and a little disorder is sorted as a list of symbols is. Arrays
   * whose addresses are `base` short (a kept build, base the KASLR image base) are moved, and
   * their order checked, only when an address-ordered lookup first needs them: a loop over
   * 100,000 elements that a command looking symbols up by name never pays for.
   */
  static fromArrays(a: SymbolArrays, base = 0n): SymbolTable {
    if (base === 0n && !isAscending(a.addresses)) return new SymbolTable(symbolsOf(a));
    return new SymbolTable({ arrays: a, base });
  }

  /** The table as arrays with no base (those it was made from, else built from its symbols). */
  toArrays(): SymbolArrays {
    if (this.arrays && this.base === 0n) return this.arrays;
    this.builtArrays ??= this.arrays ? { ...this.arrays, addresses: this.addresses } : arraysOf(this.symbols);
    return this.builtArrays;
  }

  /** Every address in order: the arrays moved by their base, once. */
  private get addresses(): BigUint64Array {
    if (this.sortedAddresses) return this.sortedAddresses;
    const a = this.arrays!;
    const moved = a.addresses.slice();
    addToEach(moved, this.base, (i) => a.absolute[i] !== 1);
    if (!isAscending(moved)) {
      throw new VmsightError("E_SYMBOL_MAP", "the kept symbol table is not in address order", {
        hint: "run `vmsight cache clear`: the next command reads the symbols from the guest again",
      });
    }
    this.sortedAddresses = moved;
    return moved;
  }

  private addressAt(i: number): bigint {
    if (this.sortedAddresses) return this.sortedAddresses[i]!;
    const a = this.arrays!;
    const o = a.addresses[i]!;
    return a.absolute[i] === 1 ? o : BigInt.asUintN(64, o + this.base);
  }

  /** Every symbol, in address order (built on first use for a table over arrays). */
  get symbols(): readonly KernelSymbol[] {
    this.list ??= Array.from({ length: this.size }, (_, i) => this.at(i));
    return this.list;
  }

  private at(i: number): KernelSymbol {
    if (this.list) return this.list[i]!;
    const a = this.arrays!;
    const s = { name: nameOf(a, i), address: this.addressAt(i), type: String.fromCharCode(a.types[i]!) };
    return a.absolute[i] === 1 ? { ...s, absolute: true } : s;
  }

  private nameAt(i: number): string {
    return this.list ? this.list[i]!.name : nameOf(this.arrays!, i);
  }

  /** Index of the first symbol (in address order) named `name`. */
  private firstIndex(name: string): number | undefined {
    const a = this.arrays;
    if (!a) return this.firstByName().get(name);
    return lookupName(a.byName, a.count, (i) => nameOf(a, i), name);
  }

  /** Built on first use: address-only users (symbolizing stack traces) never pay for it. */
  private firstByName(): Map<string, number> {
    if (this.byName) return this.byName;
    const m = new Map<string, number>();
    this.symbols.forEach((s, i) => {
      if (!m.has(s.name)) m.set(s.name, i);
    });
    this.byName = m;
    return m;
  }

  get size(): number {
    return this.arrays ? this.arrays.count : this.sortedAddresses!.length;
  }

  findAddress(name: string): bigint | undefined {
    const i = this.firstIndex(name);
    return i === undefined ? undefined : this.at(i).address;
  }

  /** Every symbol of that name (usually one; static functions can repeat). */
  findAll(name: string): KernelSymbol[] {
    const i = this.firstIndex(name);
    if (i === undefined) return [];
    return this.symbols.filter((s) => s.name === name);
  }

  getAddress(name: string): bigint {
    const a = this.findAddress(name);
    if (a === undefined) {
      throw new VmsightError("E_SYMBOL_UNKNOWN", `no kernel symbol named "${name}"`, {
        hint: `the table has ${this.size} symbols; check the spelling, or whether this kernel build has the symbol (e.g. it may be inlined or renamed)`,
      });
    }
    return a;
  }

  /**
   * The symbol an address falls in: the nearest at or below it (the first of several aliases,
   * as the kernel's own lookup picks). Below the first or above the last symbol (kallsyms ends
   * with the image's end marker) nothing is known.
   */
  symbolize(addr: bigint): Symbolized | undefined {
    const a = this.addresses;
    if (a.length === 0 || addr < a[0]! || addr > a[a.length - 1]!) return undefined;
    let lo = 0;
    let hi = a.length; // invariant: a[lo] <= addr < a[hi]
    while (hi - lo > 1) {
      const mid = (lo + hi) >>> 1;
      if (a[mid]! <= addr) lo = mid;
      else hi = mid;
    }
    while (lo > 0 && a[lo - 1] === a[lo]) lo--;
    return { name: this.nameAt(lo), offset: addr - a[lo]! };
  }

  /** The lowest symbol address above `addr` (where the object at `addr` ends at the latest). */
  nextAddress(addr: bigint): bigint | undefined {
    const a = this.addresses;
    let lo = 0;
    let hi = a.length; // first index with a[i] > addr
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid]! <= addr) lo = mid + 1;
      else hi = mid;
    }
    return a[lo];
  }

  /** "name+0x12" or the bare address when nothing covers it. */
  format(addr: bigint): string {
    const s = this.symbolize(addr);
    if (!s) return hex(addr);
    return s.offset === 0n ? s.name : `${s.name}+${hex(s.offset)}`;
  }

  /** A copy with every non-absolute symbol moved by `delta` (a KASLR slide), modulo 2^64. */
  rebase(delta: bigint): SymbolTable {
    if (delta === 0n) return this;
    return new SymbolTable(
      this.symbols.map((s) => (s.absolute ? s : { ...s, address: BigInt.asUintN(64, s.address + delta) })),
    );
  }
}

function nameOf(a: SymbolArrays, i: number): string {
  if (a.asciiNames) return a.asciiNames.toString("latin1", a.starts[i]!, a.starts[i + 1]!);
  return a.names.slice(a.starts[i]!, a.starts[i + 1]!);
}

function symbolsOf(a: SymbolArrays): KernelSymbol[] {
  return Array.from({ length: a.count }, (_, i) => {
    const s = { name: nameOf(a, i), address: a.addresses[i]!, type: String.fromCharCode(a.types[i]!) };
    return a.absolute[i] === 1 ? { ...s, absolute: true } : s;
  });
}

function arraysOf(symbols: readonly KernelSymbol[]): SymbolArrays {
  const n = symbols.length;
  const names = symbols.map((s) => s.name);
  const starts = new Uint32Array(n + 1);
  for (let i = 0; i < n; i++) starts[i + 1] = starts[i]! + names[i]!.length;
  const addresses = new BigUint64Array(n);
  const absolute = new Uint8Array(n);
  const types = new Uint8Array(n);
  symbols.forEach((s, i) => {
    addresses[i] = BigInt.asUintN(64, s.address);
    absolute[i] = s.absolute ? 1 : 0;
    types[i] = s.type.charCodeAt(0);
  });
  const byName = buildNameIndex(n, (i) => names[i]!);
  return { count: n, addresses, absolute, types, names: names.join(""), starts, byName };
}
