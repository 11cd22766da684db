import type { Btf } from "./btf/btf.js";
import {
  type BtfInt,
  type BtfMember,
  type BtfStruct,
  type BtfType,
  isAlias,
  isComposite,
} from "./btf/types.js";
import type { SymbolTable } from "./kallsyms/table.js";

/**
 * A Volatility 3 symbol file (ISF, format 6.2.0, the newest Volatility 2.11 reads) built from a
 * kernel's BTF (types), kallsyms (symbols) and `linux_banner` (which Volatility matches against
 * the image to pick the file). BTF has typedefs and qualifiers that ISF has not: they are looked
 * through. Unnamed structs, unions and enums get `unnamed_<btf id>` names, because Volatility
 * flattens members marked `"anonymous": true` by looking their type up by name.
 */
export const ISF_FORMAT = "6.2.0";

export type TypeDescriptor =
  | { readonly kind: "base"; readonly name: string }
  | { readonly kind: "pointer"; readonly subtype: TypeDescriptor }
  | { readonly kind: "array"; readonly count: number; readonly subtype: TypeDescriptor }
  | { readonly kind: "struct" | "union" | "enum"; readonly name: string }
  | { readonly kind: "function" }
  | {
      readonly kind: "bitfield";
      readonly bit_position: number;
      readonly bit_length: number;
      readonly type: TypeDescriptor;
    };

export interface IsfBaseType {
  readonly kind: "void" | "int" | "float" | "char" | "bool";
  readonly size: number;
  readonly signed: boolean;
  readonly endian: "little";
}

export interface IsfField {
  readonly type: TypeDescriptor;
  readonly offset: number;
  readonly anonymous?: true;
}

export interface IsfUserType {
  readonly kind: "struct" | "union";
  readonly size: number;
  readonly fields: Record<string, IsfField>;
}

export interface IsfEnum {
  readonly size: number;
  readonly base: string;
  readonly constants: Record<string, bigint>;
}

export interface IsfSymbol {
  /** Link-time address (KASLR slide removed): Volatility finds the slide in the image itself. */
  readonly address: bigint;
  readonly type?: TypeDescriptor;
  /** Base64 of the bytes at the symbol (only `linux_banner`). */
  readonly constant_data?: string;
}

export interface IsfDocument {
  readonly metadata: {
    readonly format: string;
    readonly producer: { readonly name: string; readonly version: string };
    readonly linux: { readonly symbols: readonly { readonly kind: string; readonly name: string }[] };
  };
  readonly base_types: Record<string, IsfBaseType>;
  readonly user_types: Record<string, IsfUserType>;
  readonly enums: Record<string, IsfEnum>;
  readonly symbols: Record<string, IsfSymbol>;
}

export interface IsfInput {
  readonly btf: Btf;
  /** Symbols at their link-time addresses. */
  readonly symbols: SymbolTable;
  /** The bytes of `linux_banner` as the guest holds them, trailing NUL included. */
  readonly banner: Uint8Array;
  readonly producerVersion: string;
}

/**
 * Variables whose type BTF does not record (vmlinux BTF describes per-CPU variables only) but
 * which Volatility's Linux plugins read: their types are fixed by the kernel's own declarations.
 */
export const KNOWN_SYMBOL_TYPES: Readonly<Record<string, string>> = {
  init_task: "task_struct",
  init_files: "files_struct",
  init_mm: "mm_struct",
  modules: "list_head",
  // linux.sockstat: the namespaces it walks, and the two it tells socket files by (net/socket.c).
  net_namespace_list: "list_head",
  socket_file_ops: "file_operations",
  sockfs_dentry_operations: "dentry_operations",
};

const POINTER: IsfBaseType = { kind: "int", size: 8, signed: false, endian: "little" };
const VOID_BASE: IsfBaseType = { kind: "void", size: 0, signed: false, endian: "little" };

export function buildIsf(input: IsfInput): IsfDocument {
  const types = new IsfTypes(input.btf);
  const symbols: Record<string, IsfSymbol> = {};
  for (const s of input.symbols.symbols) {
    if (Object.hasOwn(symbols, s.name)) continue; // the first of several, as SymbolTable answers
    const type = types.symbolType(s.name);
    symbols[s.name] = { address: s.address, ...(type ? { type } : {}) };
  }
  const bannerAt = input.symbols.findAddress("linux_banner");
  if (bannerAt !== undefined) {
    symbols.linux_banner = {
      address: bannerAt,
      type: { kind: "array", count: input.banner.length, subtype: { kind: "base", name: "char" } },
      constant_data: Buffer.from(input.banner).toString("base64"),
    };
  }
  return {
    metadata: {
      format: ISF_FORMAT,
      producer: { name: "vmsight", version: input.producerVersion },
      // The schema allows only dwarf|symtab|system-map. kallsyms is the kernel's own symbol
      // table (names, addresses, nm-style type letters), which is what "symtab" describes;
      // there is no DWARF here and no System.map file.
      linux: { symbols: [{ kind: "symtab", name: "kallsyms" }] },
    },
    base_types: types.baseTypes,
    user_types: types.userTypes,
    enums: types.enums,
    symbols,
  };
}

/** Converts BTF types to ISF entries; one instance per document (names are assigned once). */
class IsfTypes {
  readonly baseTypes: Record<string, IsfBaseType> = { pointer: POINTER, void: VOID_BASE };
  readonly userTypes: Record<string, IsfUserType> = {};
  readonly enums: Record<string, IsfEnum> = {};
  private readonly names = new Map<number, string>();
  private readonly descriptors = new Map<number, TypeDescriptor>();
  private readonly varTypes = new Map<string, number>();
  private readonly funcs = new Set<string>();

  constructor(private readonly btf: Btf) {
    this.nameTypes();
    for (const t of btf.types()) {
      if (isComposite(t)) this.userTypes[this.names.get(t.id)!] = this.userType(t);
      else if (t.kind === "enum" || t.kind === "enum64") this.enums[this.names.get(t.id)!] = this.enumType(t);
      else if (t.kind === "int") this.baseTypes[t.name] ??= intBase(t);
      else if (t.kind === "float")
        this.baseTypes[t.name] ??= { kind: "float", size: t.size, signed: true, endian: "little" };
      else if (t.kind === "var" && !this.varTypes.has(t.name)) this.varTypes.set(t.name, t.type);
      else if (t.kind === "func") this.funcs.add(t.name);
    }
    this.addForwardOnly();
  }

  symbolType(name: string): TypeDescriptor | undefined {
    const v = this.varTypes.get(name);
    if (v !== undefined) return this.descriptor(v);
    const known = KNOWN_SYMBOL_TYPES[name];
    if (known !== undefined && Object.hasOwn(this.userTypes, known)) return { kind: "struct", name: known };
    return this.funcs.has(name) ? { kind: "function" } : undefined;
  }

  /** ISF has one namespace for structs and unions and one for enums; later duplicates get the id. */
  private nameTypes(): void {
    const taken = { user: new Set<string>(), enum: new Set<string>() };
    for (const t of this.btf.types()) {
      const space = isComposite(t)
        ? taken.user
        : t.kind === "enum" || t.kind === "enum64"
          ? taken.enum
          : undefined;
      if (space === undefined) continue;
      const name =
        t.name === "" || space.has(t.name) ? `${t.name === "" ? "unnamed" : t.name}_${t.id}` : t.name;
      space.add(name);
      this.names.set(t.id, name);
    }
  }

  /** A forward declaration never defined in this BTF still needs an entry to point at. */
  private addForwardOnly(): void {
    for (const t of this.btf.types()) {
      if (t.kind !== "fwd" || Object.hasOwn(this.userTypes, t.name)) continue;
      this.userTypes[t.name] = { kind: t.union ? "union" : "struct", size: 0, fields: {} };
    }
  }

  private userType(s: BtfStruct): IsfUserType {
    const fields: Record<string, IsfField> = {};
    s.members.forEach((m, i) => {
      const anonymous = m.name === "";
      fields[anonymous ? `unnamed_field_${i}` : m.name] = {
        ...this.field(m),
        ...(anonymous ? { anonymous: true as const } : {}),
      };
    });
    return { kind: s.kind, size: s.size, fields };
  }

  private field(m: BtfMember): { type: TypeDescriptor; offset: number } {
    const target = this.strip(m.type);
    const intBits = target.kind === "int" && target.bits < target.size * 8 ? target : undefined;
    const bitLength = m.bitSize > 0 ? m.bitSize : (intBits?.bits ?? 0);
    const bit = m.bitOffset + (m.bitSize === 0 && intBits ? intBits.bitOffset : 0);
    if (bitLength === 0 || !("size" in target))
      return { type: this.descriptor(m.type), offset: Math.floor(bit / 8) };
    // Volatility reads the whole base type at `offset`, then shifts: keep the unit aligned to
    // the base type's size unless the field straddles it (packed structs).
    const unitBits = target.size * 8;
    let offset = Math.floor(bit / unitBits) * target.size;
    if (bit - offset * 8 + bitLength > unitBits) offset = Math.floor(bit / 8);
    return {
      offset,
      type: {
        kind: "bitfield",
        bit_position: bit - offset * 8,
        bit_length: bitLength,
        type: this.descriptor(m.type),
      },
    };
  }

  private enumType(t: Extract<BtfType, { kind: "enum" | "enum64" }>): IsfEnum {
    const base = enumBaseName(t.size, t.signed);
    this.baseTypes[base] ??= {
      kind: t.size === 1 ? "char" : "int",
      size: t.size,
      signed: t.signed,
      endian: "little",
    };
    const constants: Record<string, bigint> = {};
    for (const v of t.values) constants[v.name] ??= v.value;
    return { size: t.size, base, constants };
  }

  /** typedefs and qualifiers looked through, bounded against cycles in hostile BTF. */
  private strip(id: number): BtfType {
    let t = this.btf.type(id);
    for (let depth = 0; isAlias(t) && depth < 64; depth++) t = this.btf.type(t.type);
    return t;
  }

  descriptor(id: number): TypeDescriptor {
    const cached = this.descriptors.get(id);
    if (cached) return cached;
    // Pointers close cycles (struct list_head *next): the placeholder ends the recursion.
    this.descriptors.set(id, { kind: "base", name: "void" });
    const d = this.build(this.strip(id));
    this.descriptors.set(id, d);
    return d;
  }

  private build(t: BtfType): TypeDescriptor {
    switch (t.kind) {
      case "int":
      case "float":
        return { kind: "base", name: t.name };
      case "ptr":
        return { kind: "pointer", subtype: this.descriptor(t.type) };
      case "array":
        return { kind: "array", count: t.nelems, subtype: this.descriptor(t.type) };
      case "struct":
      case "union":
        return { kind: t.kind, name: this.names.get(t.id)! };
      case "enum":
      case "enum64":
        return { kind: "enum", name: this.names.get(t.id)! };
      case "fwd":
        return { kind: t.union ? "union" : "struct", name: t.name };
      case "func_proto":
      case "func":
        return { kind: "function" };
      default:
        return { kind: "base", name: "void" };
    }
  }
}

function intBase(t: BtfInt): IsfBaseType {
  const kind = t.bool || t.name === "_Bool" ? "bool" : t.char || /\bchar\b/.test(t.name) ? "char" : "int";
  return { kind, size: t.size, signed: t.signed, endian: "little" };
}

/** The C name of the integer an enum is stored in, as DWARF (and BTF) spell base types. */
const ENUM_BASES: Readonly<Record<number, readonly [string, string]>> = {
  1: ["signed char", "unsigned char"],
  2: ["short int", "short unsigned int"],
  4: ["int", "unsigned int"],
  8: ["long int", "long unsigned int"],
};

function enumBaseName(size: number, signed: boolean): string {
  const names = ENUM_BASES[size] ?? ENUM_BASES[4]!;
  return signed ? names[0] : names[1];
}
