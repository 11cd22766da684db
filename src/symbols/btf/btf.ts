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

/** A parsed BTF blob: the vmlinux BTF, or a module's split BTF on top of it. */
export class Btf {
  /** The first type id this blob defines (1 for a base BTF). */
  readonly firstId: number;
  /** The highest valid type id, base included; ids run 1..typeCount (0 is void). */
  readonly typeCount: number;

  constructor(
    readonly base: Btf | undefined,
    readonly strings: BtfStrings,
    private readonly own: readonly BtfType[],
  ) {
    this.firstId = base === undefined ? 1 : base.typeCount + 1;
    this.typeCount = this.firstId + own.length - 1;
  }

  /** The type with this id (0 gives void); an id out of range is a GuestDataError. */
  type(id: number): BtfType {
    if (id >= this.firstId) {
      const t = this.own[id - this.firstId];
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
    yield* this.own;
  }

  /** Only the types this blob adds to its base. */
  ownTypes(): readonly BtfType[] {
    return this.own;
  }

  private outOfRange(id: number): GuestDataError {
    return new GuestDataError(`BTF: type id ${id} is out of range (valid ids are 0..${this.typeCount})`);
  }
}
