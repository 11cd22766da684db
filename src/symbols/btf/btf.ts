import { GuestDataError } from "../../util/errors.js";
import { type BtfType, VOID } from "./types.js";

/**
 * BTF string section. Offsets of a split BTF continue after its base's strings, so a
 * table answers for the whole chain.
 */
export class BtfStrings {
  /** Offset of this table's first byte in the combined (base + own) string space. */
  readonly start: number;
  /** Size of the combined string space. */
  readonly end: number;
  // latin1 maps bytes 1:1 to UTF-16 units, so string offsets stay byte offsets.
  private readonly text: string;
  private readonly base: BtfStrings | undefined;

  constructor(bytes: Uint8Array, base: BtfStrings | undefined) {
    if (bytes.length > 0 && bytes[bytes.length - 1] !== 0) {
      throw new GuestDataError("BTF: string section does not end with a NUL byte");
    }
    if (base === undefined && (bytes.length === 0 || bytes[0] !== 0)) {
      throw new GuestDataError("BTF: string section must start with an empty string");
    }
    this.text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
    this.base = base;
    this.start = base?.end ?? 0;
    this.end = this.start + bytes.length;
  }

  /** Every offset (in the combined space) at which exactly the string `name` is stored. */
  offsetsOf(name: string): number[] {
    const out = this.base?.offsetsOf(name) ?? [];
    if (name === "" || name.includes("\0")) return out;
    const needle = `\0${name}\0`;
    for (let at = this.text.indexOf(needle); at >= 0; at = this.text.indexOf(needle, at + 1)) {
      out.push(this.start + at + 1);
    }
    return out;
  }

  /** The NUL-terminated string at `offset`; `what` names the referrer for the error message. */
  get(offset: number, what: string): string {
    if (offset < this.start) return this.base!.get(offset, what);
    const local = offset - this.start;
    if (local >= this.text.length) {
      throw new GuestDataError(
        `BTF: ${what}: string offset ${offset} is past the end of the string section (${this.end} bytes)`,
      );
    }
    const nul = this.text.indexOf("\0", local);
    return this.text.slice(local, nul);
  }
}

/**
 * The types a blob defines, by index (id - firstId): all decoded up front, or decoded when first
 * asked for (a kernel's BTF has ~100k types; `ps` needs a few dozen).
 */
export interface TypeTable {
  readonly length: number;
  get(index: number): BtfType | undefined;
  all(): readonly BtfType[];
  /** Indexes of the types whose name is exactly `name`, in id order. */
  named(name: string): number[];
}

/** A TypeTable over types already decoded. */
export class DecodedTypes implements TypeTable {
  private byName: Map<string, number[]> | undefined;

  constructor(private readonly types: readonly BtfType[]) {}

  get length(): number {
    return this.types.length;
  }

  get(index: number): BtfType | undefined {
    return this.types[index];
  }

  all(): readonly BtfType[] {
    return this.types;
  }

  named(name: string): number[] {
    if (!this.byName) {
      this.byName = new Map();
      this.types.forEach((t, i) => {
        const ids = this.byName!.get(t.name);
        if (ids) ids.push(i);
        else this.byName!.set(t.name, [i]);
      });
    }
    return this.byName.get(name) ?? [];
  }
}

/** A parsed BTF blob: the vmlinux BTF, or a module's split BTF on top of it. */
export class Btf {
  /** The first type id this blob defines (1 for a base BTF). */
  readonly firstId: number;
  /** The highest valid type id, base included; ids run 1..typeCount (0 is void). */
  readonly typeCount: number;
  private readonly own: TypeTable;

  constructor(
    readonly base: Btf | undefined,
    readonly strings: BtfStrings,
    own: readonly BtfType[] | TypeTable,
  ) {
    this.own = Array.isArray(own) ? new DecodedTypes(own as readonly BtfType[]) : (own as TypeTable);
    this.firstId = base === undefined ? 1 : base.typeCount + 1;
    this.typeCount = this.firstId + this.own.length - 1;
  }

  /** The type with this id (0 gives void); an id out of range is a GuestDataError. */
  type(id: number): BtfType {
    if (id >= this.firstId) {
      const t = Number.isInteger(id) ? this.own.get(id - this.firstId) : undefined;
      if (t === undefined) throw this.outOfRange(id);
      return t;
    }
    if (id === 0) return VOID;
    if (this.base === undefined || !Number.isInteger(id) || id < 0) throw this.outOfRange(id);
    return this.base.type(id);
  }

  /** Every type of this blob and its base, in id order (void excluded). */
  *types(): IterableIterator<BtfType> {
    if (this.base) yield* this.base.types();
    yield* this.own.all();
  }

  /** Only the types this blob adds to its base. */
  ownTypes(): readonly BtfType[] {
    return this.own.all();
  }

  /** The types named exactly `name`, base first, in id order. */
  named(name: string): BtfType[] {
    const own = this.own.named(name).map((i) => this.type(i + this.firstId));
    return this.base ? [...this.base.named(name), ...own] : own;
  }

  private outOfRange(id: number): GuestDataError {
    return new GuestDataError(`BTF: type id ${id} is out of range (valid ids are 0..${this.typeCount})`);
  }
}
