import { GuestDataError, VmsightError } from "../../util/errors.js";
import type { Btf } from "./btf.js";
import { parseMemberPath } from "./path.js";
import { MAX_TYPE_DEPTH, resolveType, sizeOfType, typeName } from "./resolve.js";
import { similarNames } from "./similar.js";
import { type BtfMember, type BtfStruct, type BtfType, isComposite } from "./types.js";

export interface MemberInfo {
  /** Byte offset from the start of the outer struct (rounded down for bitfields). */
  readonly offset: number;
  /** Bit offset from the start of the outer struct. */
  readonly bitOffset: number;
  /** Bitfield width, 0 when the member is not a bitfield. */
  readonly bitSize: number;
  /** The member's type with typedefs and qualifiers stripped. */
  readonly type: BtfType;
  /** The member's declared type id (before stripping). */
  readonly typeId: number;
  /** C-like spelling of the declared type: "struct list_head", "char[16]", "pid_t". */
  readonly typeName: string;
  /** sizeof() the member's type, in bytes. */
  readonly size: number;
}

/** A member reachable by name from a struct, anonymous struct/union members looked through. */
interface Flat {
  readonly member: BtfMember;
  readonly bitOffset: number;
}

/** A failed lookup; the error (and its hint, which costs a scan) is only built when thrown. */
class Miss {
  constructor(readonly error: () => VmsightError) {}
}

/**
 * Members one flattening may copy. The kernel's largest structs have a few hundred; hostile
 * BTF can name one wide anonymous type from thousands of members.
 */
export const MAX_FLATTEN_WORK = 1 << 20;

const PREFIXES = ["struct ", "union ", "enum "] as const;

/**
 * Name-indexed view of a Btf: struct layouts, sizes and enum values, the questions an
 * introspector asks. Indexes are built once; lookups are map hits.
 */
export class TypeDb {
  /** What each name asked for so far stands for, per namespace. */
  private readonly names = new Map<string, Named>();
  private enumerators: Map<string, bigint> | undefined;
  private readonly flatCache = new Map<number, Map<string, Flat>>();
  /** Structs whose flattening is under way: meeting one again is a cycle. */
  private readonly flattening = new Set<number>();

  /**
   * Names are looked up in the BTF when first asked for (`Btf.named`), not indexed up front: with
   * lazily decoded BTF only the types a command needs are ever decoded.
   */
  constructor(readonly btf: Btf) {}

  /** The struct, union, typedef, base type and enum named `name`, by the rules the index had. */
  private named(name: string): Named {
    const known = this.names.get(name);
    if (known) return known;
    const n: Named = {};
    for (const t of name === "" ? [] : this.btf.named(name)) {
      switch (t.kind) {
        case "struct":
          n.struct = better(n.struct, t);
          break;
        case "union":
          n.union = better(n.union, t);
          break;
        case "typedef":
          n.typedef ??= t;
          break;
        case "int":
        case "float":
          n.base ??= t;
          break;
        case "enum":
        case "enum64":
          n.enum ??= t;
          break;
      }
    }
    this.names.set(name, n);
    return n;
  }

  /** The highest type id (ids run 1..typeCount). */
  get typeCount(): number {
    return this.btf.typeCount;
  }

  /** A struct or union by tag ("task_struct", "struct task_struct", "union thread_union"). */
  findStruct(name: string): BtfStruct | undefined {
    if (name.startsWith("struct ")) return this.named(name.slice(7)).struct;
    if (name.startsWith("union ")) return this.named(name.slice(6)).union;
    const n = this.named(name);
    return n.struct ?? n.union;
  }

  getStruct(name: string): BtfStruct {
    return this.findStruct(name) ?? throwIt(this.unknownType(name));
  }

  /**
   * A named type. A bare name is tried as a struct tag, union tag, typedef, base type
   * (int/float) and enum tag, in that order; "struct x"/"union x"/"enum x" pick the tag.
   */
  findType(name: string): BtfType | undefined {
    const n = name.trim();
    if (n.startsWith("enum ")) return this.named(n.slice(5)).enum;
    if (PREFIXES.some((p) => n.startsWith(p))) return this.findStruct(n);
    const t = this.named(n);
    return t.struct ?? t.union ?? t.typedef ?? t.base ?? t.enum;
  }

  getType(name: string): BtfType {
    return this.findType(name) ?? throwIt(this.unknownType(name));
  }

  /** sizeof(name) in bytes. */
  sizeof(name: string): number {
    return sizeOfType(this.btf, this.getType(name).id);
  }

  findSizeof(name: string): number | undefined {
    const t = this.findType(name);
    return t === undefined ? undefined : sizeOfType(this.btf, t.id);
  }

  /** offsetof(structName, path) in bytes; path as for member(). */
  offsetof(structName: string, path: string): number {
    return this.member(structName, path).offset;
  }

  findOffsetof(structName: string, path: string): number | undefined {
    return this.findMember(structName, path)?.offset;
  }

  /**
   * A member by path: "pid", "thread_info.flags", "numbers[0].nr". Anonymous struct and
   * union members are looked through, as C does.
   */
  member(structName: string, path: string): MemberInfo {
    const r = this.lookup(structName, path);
    if (r instanceof Miss) throw r.error();
    return r;
  }

  findMember(structName: string, path: string): MemberInfo | undefined {
    const r = this.lookup(structName, path);
    return r instanceof Miss ? undefined : r;
  }

  /** The names a struct answers to, anonymous members flattened, in declaration order. */
  memberNames(structName: string): string[] {
    return [...this.flatten(this.getStruct(structName)).keys()];
  }

  /** The value of an enumerator, searched across every enum ("TASK_COMM_LEN", "MODULE_STATE_LIVE"). */
  enumValue(name: string): bigint {
    const v = this.findEnumValue(name);
    if (v !== undefined) return v;
    const hint = similarNames(name, this.enumIndex().keys());
    throw new VmsightError("E_TYPE_UNKNOWN", `no enumerator named ${name} in the kernel's BTF`, {
      hint: hint.length ? `similar enumerators: ${hint.join(", ")}` : undefined,
    });
  }

  findEnumValue(name: string): bigint | undefined {
    return this.enumIndex().get(name);
  }

  /** The underlying type of an id, typedefs and qualifiers stripped. */
  resolve(id: number): BtfType {
    return resolveType(this.btf, id);
  }

  sizeOfId(id: number): number {
    return sizeOfType(this.btf, id);
  }

  typeName(id: number): string {
    return typeName(this.btf, id);
  }

  private enumIndex(): Map<string, bigint> {
    if (this.enumerators) return this.enumerators;
    const index = new Map<string, bigint>();
    for (const t of this.btf.types()) {
      if (t.kind !== "enum" && t.kind !== "enum64") continue;
      for (const v of t.values) if (!index.has(v.name)) index.set(v.name, v.value);
    }
    this.enumerators = index;
    return index;
  }

  private lookup(structName: string, path: string): MemberInfo | Miss {
    const outer = this.findType(structName);
    if (outer === undefined) return new Miss(() => this.unknownType(structName));
    const segments = parseMemberPath(path);
    let typeId = outer.id;
    let bitOffset = 0;
    let bitSize = 0;
    let where = typeName(this.btf, outer.id);
    for (const seg of segments) {
      const container = this.complete(this.resolve(typeId));
      if (!isComposite(container)) return notComposite(where, container, seg.name, this.btf);
      const flat = this.flatten(container);
      const hit = flat.get(seg.name);
      if (hit === undefined) return this.missingMember(where, seg.name, flat);
      bitOffset += hit.bitOffset;
      typeId = hit.member.type;
      bitSize = hit.member.bitSize;
      if (bitSize === 0) {
        // Without kind_flag a bitfield is an INT whose encoding holds its width and shift.
        const t = this.resolve(typeId);
        if (t.kind === "int" && (t.bitOffset !== 0 || t.bits !== t.size * 8)) {
          bitSize = t.bits;
          bitOffset += t.bitOffset;
        }
      }
      where = `${where}.${seg.name}`;
      for (const index of seg.indexes) {
        const arr = this.resolve(typeId);
        if (arr.kind !== "array") {
          return new Miss(
            () =>
              new VmsightError(
                "E_MEMBER_UNKNOWN",
                `${where} is not an array (${typeName(this.btf, typeId)})`,
              ),
          );
        }
        if (arr.nelems !== 0 && index >= arr.nelems) {
          return new Miss(
            () =>
              new VmsightError(
                "E_MEMBER_UNKNOWN",
                `${where}[${index}] is past the end of ${arr.nelems} elements`,
              ),
          );
        }
        bitOffset += index * this.completeSize(arr.type) * 8;
        typeId = arr.type;
        bitSize = 0;
        where = `${where}[${index}]`;
      }
    }
    return {
      offset: Math.floor(bitOffset / 8),
      bitOffset,
      bitSize,
      type: this.complete(this.resolve(typeId)),
      typeId,
      typeName: typeName(this.btf, typeId),
      size: this.completeSize(typeId),
    };
  }

  private completeSize(id: number): number {
    const t = this.complete(this.resolve(id));
    return isComposite(t) ? t.size : sizeOfType(this.btf, id);
  }

  /** A forward declaration stands for the full definition of the same name, when there is one. */
  private complete(t: BtfType): BtfType {
    if (t.kind !== "fwd") return t;
    const n = this.named(t.name);
    return (t.union ? n.union : n.struct) ?? t;
  }

  /**
   * Each struct is flattened once and its anonymous members reuse their own cached maps, so
   * shared anonymous types cost their size, not one walk per path to them. The budget still
   * caps what one lookup may copy: a struct can name a wide anonymous type many times.
   */
  private flatten(s: BtfStruct, work = { left: MAX_FLATTEN_WORK }, depth = 0): Map<string, Flat> {
    const cached = this.flatCache.get(s.id);
    if (cached !== undefined) return cached;
    if (depth >= MAX_TYPE_DEPTH || this.flattening.has(s.id)) {
      throw new GuestDataError(
        `BTF: anonymous members nest deeper than ${MAX_TYPE_DEPTH} in [${s.id}] (a cycle?)`,
      );
    }
    this.flattening.add(s.id);
    try {
      const flat = new Map<string, Flat>();
      for (const m of s.members) {
        if (m.name !== "") {
          spend(work, s);
          if (!flat.has(m.name)) flat.set(m.name, { member: m, bitOffset: m.bitOffset });
          continue;
        }
        const inner = this.resolve(m.type);
        if (!isComposite(inner)) continue;
        for (const [name, f] of this.flatten(inner, work, depth + 1)) {
          spend(work, s);
          if (!flat.has(name)) flat.set(name, { member: f.member, bitOffset: m.bitOffset + f.bitOffset });
        }
      }
      this.flatCache.set(s.id, flat);
      return flat;
    } finally {
      this.flattening.delete(s.id);
    }
  }

  private missingMember(where: string, name: string, flat: Map<string, Flat>): Miss {
    return new Miss(() => {
      const similar = similarNames(name, flat.keys());
      return new VmsightError("E_MEMBER_UNKNOWN", `${where} has no member named ${name}`, {
        hint: similar.length ? `similar members: ${similar.join(", ")}` : `${where} has ${flat.size} members`,
      });
    });
  }

  private unknownType(name: string): VmsightError {
    const bare = PREFIXES.reduce((n, p) => (n.startsWith(p) ? n.slice(p.length) : n), name.trim());
    // The error path may decode everything: it names the types that are there.
    const kinds = new Set(["struct", "union", "typedef", "int", "float"]);
    const all = new Set<string>();
    for (const t of this.btf.types()) if (t.name !== "" && kinds.has(t.kind)) all.add(t.name);
    const similar = similarNames(bare, all);
    return new VmsightError("E_TYPE_UNKNOWN", `no type named ${name} in the kernel's BTF`, {
      hint: similar.length ? `similar types: ${similar.join(", ")}` : undefined,
    });
  }
}

interface Named {
  struct?: BtfStruct;
  union?: BtfStruct;
  typedef?: BtfType;
  base?: BtfType;
  enum?: BtfType;
}

/** The first of a name wins, except that a definition with members wins over an empty one. */
function better(prev: BtfStruct | undefined, t: BtfStruct): BtfStruct {
  return prev === undefined || (prev.members.length === 0 && t.members.length > 0) ? t : prev;
}

function notComposite(where: string, t: BtfType, name: string, btf: Btf): Miss {
  return new Miss(
    () =>
      new VmsightError(
        "E_MEMBER_UNKNOWN",
        `cannot look up member ${name}: ${where} is ${typeName(btf, t.id)}, not a struct or union`,
        {
          hint:
            t.kind === "ptr"
              ? "offsets do not follow pointers; start again from the pointed-to struct"
              : undefined,
        },
      ),
  );
}

function spend(work: { left: number }, s: BtfStruct): void {
  if (--work.left < 0) {
    throw new GuestDataError(
      `BTF: flattening the anonymous members of [${s.id}] '${s.name}' takes more than ${MAX_FLATTEN_WORK} steps (hostile or corrupt BTF?)`,
    );
  }
}

function throwIt(e: Error): never {
  throw e;
}
