import { GuestDataError } from "../../util/errors.js";
import { Btf, BtfStrings, type TypeTable } from "./btf.js";
import {
  BTF_KIND,
  type BtfEnumerator,
  type BtfLinkage,
  type BtfMember,
  type BtfParam,
  type BtfType,
  type BtfVarSecInfo,
  forEachReference,
} from "./types.js";

export { Btf, BtfStrings } from "./btf.js";

const BTF_MAGIC = 0xeb9f;
const HEADER_SIZE = 24;
const TYPE_HEADER_SIZE = 12;
const KIND_NAMES = [
  "UNKN",
  "INT",
  "PTR",
  "ARRAY",
  "STRUCT",
  "UNION",
  "ENUM",
  "FWD",
  "TYPEDEF",
  "VOLATILE",
  "CONST",
  "RESTRICT",
  "FUNC",
  "FUNC_PROTO",
  "VAR",
  "DATASEC",
  "FLOAT",
  "DECL_TAG",
  "TYPE_TAG",
  "ENUM64",
];
const LINKAGES: readonly BtfLinkage[] = ["static", "global", "extern"];

export interface BtfHeader {
  readonly version: number;
  readonly flags: number;
  readonly hdrLen: number;
  readonly typeOff: number;
  readonly typeLen: number;
  readonly strOff: number;
  readonly strLen: number;
}

/**
 * Parses a BTF blob. The bytes may come straight from guest memory, so every count and
 * offset is checked against the buffer and every type id against the id range.
 * With `base`, the blob is split BTF (a module's): its ids and string offsets continue
 * after the base's.
 */
export function parseBtf(bytes: Uint8Array, opts: { base?: Btf; lazy?: boolean } = {}): Btf {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hdr = parseBtfHeader(bytes);
  const data = hdr.hdrLen;
  const strings = new BtfStrings(
    bytes.subarray(data + hdr.strOff, data + hdr.strOff + hdr.strLen),
    opts.base?.strings,
  );
  const firstId = opts.base === undefined ? 1 : opts.base.typeCount + 1;
  const reader = new TypeReader(view, data + hdr.typeOff, data + hdr.typeOff + hdr.typeLen, strings, firstId);
  if (opts.lazy) return new Btf(opts.base, strings, new LazyTypes(reader, strings));
  const own = reader.all();
  checkReferences(own, firstId + own.length - 1);
  return new Btf(opts.base, strings, own);
}

/**
 * Types decoded when first asked for. Building it walks only the type headers (each type's
 * extent is checked as an eager parse checks it); decoding a type runs the same checks an eager
 * parse does on it, references included, so hostile BTF fails with the same typed errors, only
 * when the bad type is reached.
 */
class LazyTypes implements TypeTable {
  readonly length: number;
  private readonly decoded: (BtfType | undefined)[];
  private readonly at: Uint32Array;
  private readonly names: Uint32Array;
  private readonly maxId: number;

  constructor(
    private readonly reader: TypeReader,
    private readonly strings: BtfStrings,
  ) {
    const { at, names } = reader.index();
    this.at = at;
    this.names = names;
    this.length = at.length;
    this.decoded = new Array(at.length);
    this.maxId = reader.firstId + at.length - 1;
  }

  get(index: number): BtfType | undefined {
    if (index < 0 || index >= this.length) return undefined;
    let t = this.decoded[index];
    if (t === undefined) {
      t = this.reader.decodeAt(this.at[index]!, index + this.reader.firstId);
      checkReferences([t], this.maxId);
      this.decoded[index] = t;
    }
    return t;
  }

  all(): readonly BtfType[] {
    const out: BtfType[] = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.get(i)!;
    return out;
  }

  named(name: string): number[] {
    const offsets = new Set(this.strings.offsetsOf(name));
    const out: number[] = [];
    if (offsets.size === 0) return out;
    for (let i = 0; i < this.length; i++) if (offsets.has(this.names[i]!)) out.push(i);
    return out;
  }
}

export function parseBtfHeader(bytes: Uint8Array): BtfHeader {
  if (bytes.length < HEADER_SIZE) {
    throw new GuestDataError(`BTF: header is truncated (${bytes.length} bytes, need ${HEADER_SIZE})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint16(0, true);
  if (magic !== BTF_MAGIC) {
    const why = magic === 0x9feb ? " (big-endian BTF is not supported)" : "";
    throw new GuestDataError(`BTF: bad magic 0x${magic.toString(16)}, expected 0xeb9f${why}`);
  }
  const u32 = (o: number) => view.getUint32(o, true);
  const hdr: BtfHeader = {
    version: bytes[2]!,
    flags: bytes[3]!,
    hdrLen: u32(4),
    typeOff: u32(8),
    typeLen: u32(12),
    strOff: u32(16),
    strLen: u32(20),
  };
  if (hdr.version !== 1) throw new GuestDataError(`BTF: unsupported version ${hdr.version}`);
  if (hdr.hdrLen < HEADER_SIZE || hdr.hdrLen > bytes.length) {
    throw new GuestDataError(`BTF: hdr_len ${hdr.hdrLen} is outside 24..${bytes.length} (buffer size)`);
  }
  const dataLen = bytes.length - hdr.hdrLen;
  const section = (name: string, off: number, len: number) => {
    if (off + len > dataLen) {
      throw new GuestDataError(
        `BTF: ${name} section [${off}, ${off + len}) lies past the end of the data (${dataLen} bytes after the header)`,
      );
    }
  };
  section("type", hdr.typeOff, hdr.typeLen);
  section("string", hdr.strOff, hdr.strLen);
  if (hdr.typeOff % 4 !== 0) throw new GuestDataError(`BTF: type_off ${hdr.typeOff} is not 4-byte aligned`);
  return hdr;
}

function checkReferences(types: readonly BtfType[], maxId: number): void {
  for (const t of types) {
    forEachReference(t, (ref) => {
      if (ref > maxId) {
        throw new GuestDataError(
          `BTF: type [${t.id}] ${t.kind} '${t.name}' refers to type id ${ref}, but the last id is ${maxId}`,
        );
      }
    });
  }
}

/** A bounded cursor over the type section. */
class TypeReader {
  private pos: number;
  private id: number;

  constructor(
    private readonly view: DataView,
    private readonly start: number,
    private readonly end: number,
    private readonly strings: BtfStrings,
    readonly firstId: number,
  ) {
    this.pos = start;
    this.id = firstId;
  }

  all(): BtfType[] {
    const out: BtfType[] = [];
    // Each type consumes at least 12 bytes, so this ends after at most type_len/12 rounds.
    while (this.pos < this.end) {
      out.push(this.next());
      this.id++;
    }
    return out;
  }

  /** Where each type starts and its name offset, from the headers alone (extents checked). */
  index(): { at: Uint32Array; names: Uint32Array } {
    const at = new Uint32Array(Math.floor((this.end - this.start) / TYPE_HEADER_SIZE));
    const names = new Uint32Array(at.length);
    let n = 0;
    for (let pos = this.start, id = this.firstId; pos < this.end; n++, id++) {
      const left = this.end - pos;
      if (left < TYPE_HEADER_SIZE) throw truncatedHeader(id, pos - this.start, left);
      const info = this.u32(pos + 4);
      const kind = (info >>> 24) & 0x1f;
      const extra = extraSize(kind, info & 0xffff);
      if (extra === undefined) throw new GuestDataError(`BTF: type [${id}] has unknown kind ${kind}`);
      if (extra > left - TYPE_HEADER_SIZE) {
        throw new GuestDataError(
          `BTF: type [${id}] ${KIND_NAMES[kind]} vlen=${info & 0xffff} needs ${extra} more bytes, but only ${left - TYPE_HEADER_SIZE} remain in the type section`,
        );
      }
      at[n] = pos;
      names[n] = this.u32(pos);
      pos += TYPE_HEADER_SIZE + extra;
    }
    return { at: at.subarray(0, n), names: names.subarray(0, n) };
  }

  /** The type whose header is at buffer offset `pos` (from `index`), with id `id`. */
  decodeAt(pos: number, id: number): BtfType {
    this.pos = pos;
    this.id = id;
    return this.next();
  }

  private u32(o: number): number {
    return this.view.getUint32(o, true);
  }

  private str(offset: number, what: string): string {
    return this.strings.get(offset, what);
  }

  private next(): BtfType {
    const at = this.pos;
    const left = this.end - at;
    if (left < TYPE_HEADER_SIZE) throw truncatedHeader(this.id, at - this.start, left);
    const info = this.u32(at + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const kflag = info >>> 31 === 1;
    const sizeOrType = this.u32(at + 8);
    const kindName = KIND_NAMES[kind] ?? `kind ${kind}`;
    const name = this.str(this.u32(at), `type [${this.id}] ${kindName} name`);
    const extra = extraSize(kind, vlen);
    if (extra === undefined) {
      throw new GuestDataError(`BTF: type [${this.id}] '${name}' has unknown kind ${kind}`);
    }
    if (extra > left - TYPE_HEADER_SIZE) {
      throw new GuestDataError(
        `BTF: type [${this.id}] ${kindName} '${name}' vlen=${vlen} needs ${extra} more bytes, but only ${left - TYPE_HEADER_SIZE} remain in the type section`,
      );
    }
    this.pos = at + TYPE_HEADER_SIZE + extra;
    return this.decode(kind, { id: this.id, name, vlen, kflag, sizeOrType, body: at + TYPE_HEADER_SIZE });
  }

  private decode(kind: number, h: RawHeader): BtfType {
    const { id, name, sizeOrType: n } = h;
    switch (kind) {
      case BTF_KIND.INT:
        return this.int(h);
      case BTF_KIND.PTR:
        return { kind: "ptr", id, name, type: n };
      case BTF_KIND.ARRAY:
        return {
          kind: "array",
          id,
          name,
          type: this.u32(h.body),
          indexType: this.u32(h.body + 4),
          nelems: this.u32(h.body + 8),
        };
      case BTF_KIND.STRUCT:
      case BTF_KIND.UNION:
        return this.composite(kind === BTF_KIND.UNION ? "union" : "struct", h);
      case BTF_KIND.ENUM:
      case BTF_KIND.ENUM64:
        return this.enumeration(kind === BTF_KIND.ENUM64, h);
      case BTF_KIND.FWD:
        return { kind: "fwd", id, name, union: h.kflag };
      case BTF_KIND.TYPEDEF:
        return { kind: "typedef", id, name, type: n };
      case BTF_KIND.VOLATILE:
        return { kind: "volatile", id, name, type: n };
      case BTF_KIND.CONST:
        return { kind: "const", id, name, type: n };
      case BTF_KIND.RESTRICT:
        return { kind: "restrict", id, name, type: n };
      case BTF_KIND.TYPE_TAG:
        return { kind: "type_tag", id, name, type: n };
      case BTF_KIND.FUNC:
        return { kind: "func", id, name, type: n, linkage: this.linkage(h.vlen, h) };
      case BTF_KIND.FUNC_PROTO:
        return { kind: "func_proto", id, name, returnType: n, params: this.params(h) };
      case BTF_KIND.VAR:
        return { kind: "var", id, name, type: n, linkage: this.linkage(this.u32(h.body), h) };
      case BTF_KIND.DATASEC:
        return { kind: "datasec", id, name, size: n, vars: this.secinfos(h) };
      case BTF_KIND.FLOAT:
        return { kind: "float", id, name, size: n };
      case BTF_KIND.DECL_TAG:
        return { kind: "decl_tag", id, name, type: n, componentIdx: this.view.getInt32(h.body, true) };
      default:
        throw new GuestDataError(`BTF: type [${id}] '${name}' has unknown kind ${kind}`);
    }
  }

  private int(h: RawHeader): BtfType {
    const enc = this.u32(h.body);
    const bits = enc & 0xff;
    const bitOffset = (enc >>> 16) & 0xff;
    if (bits === 0 || bits > 128 || bitOffset + bits > h.sizeOrType * 8) {
      throw new GuestDataError(
        `BTF: type [${h.id}] INT '${h.name}' has ${bits} bits at bit ${bitOffset}, which do not fit its ${h.sizeOrType} bytes`,
      );
    }
    const encoding = (enc >>> 24) & 0xf;
    return {
      kind: "int",
      id: h.id,
      name: h.name,
      size: h.sizeOrType,
      signed: (encoding & 1) !== 0,
      char: (encoding & 2) !== 0,
      bool: (encoding & 4) !== 0,
      bitOffset,
      bits,
    };
  }

  private composite(kind: "struct" | "union", h: RawHeader): BtfType {
    const members: BtfMember[] = new Array(h.vlen);
    const sizeBits = h.sizeOrType * 8;
    for (let i = 0; i < h.vlen; i++) {
      const o = h.body + i * 12;
      const name = this.str(this.u32(o), `type [${h.id}] ${kind} '${h.name}' member ${i}`);
      const raw = this.u32(o + 8);
      const bitOffset = h.kflag ? raw & 0xffffff : raw;
      const bitSize = h.kflag ? raw >>> 24 : 0;
      if (bitOffset + bitSize > sizeBits) {
        throw new GuestDataError(
          `BTF: type [${h.id}] ${kind} '${h.name}' member '${name}' at bit ${bitOffset} lies past the end of its ${h.sizeOrType} bytes`,
        );
      }
      members[i] = { name, type: this.u32(o + 4), bitOffset, bitSize };
    }
    return { kind, id: h.id, name: h.name, size: h.sizeOrType, bitfieldMembers: h.kflag, members };
  }

  private enumeration(wide: boolean, h: RawHeader): BtfType {
    const values: BtfEnumerator[] = new Array(h.vlen);
    const stride = wide ? 12 : 8;
    for (let i = 0; i < h.vlen; i++) {
      const o = h.body + i * stride;
      const name = this.str(this.u32(o), `type [${h.id}] enum '${h.name}' value ${i}`);
      let value: bigint;
      if (wide) {
        const v = (BigInt(this.u32(o + 8)) << 32n) | BigInt(this.u32(o + 4));
        value = h.kflag ? BigInt.asIntN(64, v) : v;
      } else {
        value = BigInt(h.kflag ? this.view.getInt32(o + 4, true) : this.u32(o + 4));
      }
      values[i] = { name, value };
    }
    return {
      kind: wide ? "enum64" : "enum",
      id: h.id,
      name: h.name,
      size: h.sizeOrType,
      signed: h.kflag,
      values,
    };
  }

  private params(h: RawHeader): BtfParam[] {
    const out: BtfParam[] = new Array(h.vlen);
    for (let i = 0; i < h.vlen; i++) {
      const o = h.body + i * 8;
      out[i] = { name: this.str(this.u32(o), `type [${h.id}] FUNC_PROTO param ${i}`), type: this.u32(o + 4) };
    }
    return out;
  }

  private secinfos(h: RawHeader): BtfVarSecInfo[] {
    const out: BtfVarSecInfo[] = new Array(h.vlen);
    for (let i = 0; i < h.vlen; i++) {
      const o = h.body + i * 12;
      out[i] = { type: this.u32(o), offset: this.u32(o + 4), size: this.u32(o + 8) };
    }
    return out;
  }

  private linkage(raw: number, h: RawHeader): BtfLinkage {
    const l = LINKAGES[raw];
    if (l === undefined)
      throw new GuestDataError(`BTF: type [${h.id}] '${h.name}' has unknown linkage ${raw}`);
    return l;
  }
}

function truncatedHeader(id: number, offset: number, left: number): GuestDataError {
  return new GuestDataError(
    `BTF: type [${id}] header at type-section offset ${offset} is truncated (${left} bytes left, need 12)`,
  );
}

interface RawHeader {
  readonly id: number;
  readonly name: string;
  readonly vlen: number;
  readonly kflag: boolean;
  readonly sizeOrType: number;
  /** Buffer offset of the kind-specific data after the 12-byte header. */
  readonly body: number;
}

/** Bytes of kind-specific data after the common header; undefined for an unknown kind. */
function extraSize(kind: number, vlen: number): number | undefined {
  switch (kind) {
    case BTF_KIND.INT:
    case BTF_KIND.VAR:
    case BTF_KIND.DECL_TAG:
      return 4;
    case BTF_KIND.ARRAY:
      return 12;
    case BTF_KIND.STRUCT:
    case BTF_KIND.UNION:
    case BTF_KIND.ENUM64:
    case BTF_KIND.DATASEC:
      return vlen * 12;
    case BTF_KIND.ENUM:
    case BTF_KIND.FUNC_PROTO:
      return vlen * 8;
    case BTF_KIND.PTR:
    case BTF_KIND.FWD:
    case BTF_KIND.TYPEDEF:
    case BTF_KIND.VOLATILE:
    case BTF_KIND.CONST:
    case BTF_KIND.RESTRICT:
    case BTF_KIND.FUNC:
    case BTF_KIND.FLOAT:
    case BTF_KIND.TYPE_TAG:
      return 0;
    default:
      return undefined;
  }
}
