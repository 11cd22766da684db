/**
 * The decoded form of BTF (BPF Type Format) types, as the kernel lays them out in
 * include/uapi/linux/btf.h. Every type knows its own id; references to other types
 * stay ids (0 is void) so that cycles through pointers cost nothing.
 */

export const BTF_KIND = {
  INT: 1,
  PTR: 2,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FWD: 7,
  TYPEDEF: 8,
  VOLATILE: 9,
  CONST: 10,
  RESTRICT: 11,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  FLOAT: 16,
  DECL_TAG: 17,
  TYPE_TAG: 18,
  ENUM64: 19,
} as const;

export type BtfKindName =
  | "void"
  | "int"
  | "ptr"
  | "array"
  | "struct"
  | "union"
  | "enum"
  | "fwd"
  | "typedef"
  | "volatile"
  | "const"
  | "restrict"
  | "func"
  | "func_proto"
  | "var"
  | "datasec"
  | "float"
  | "decl_tag"
  | "type_tag"
  | "enum64";

interface Base {
  readonly id: number;
  /** "" for anonymous types. */
  readonly name: string;
}

export interface BtfVoid extends Base {
  readonly kind: "void";
}

export interface BtfInt extends Base {
  readonly kind: "int";
  readonly size: number;
  readonly signed: boolean;
  readonly char: boolean;
  readonly bool: boolean;
  /** BTF_INT_OFFSET: bit offset of the value inside `size` bytes (old-style bitfields). */
  readonly bitOffset: number;
  /** BTF_INT_BITS. */
  readonly bits: number;
}

export interface BtfFloat extends Base {
  readonly kind: "float";
  readonly size: number;
}

export interface BtfPtr extends Base {
  readonly kind: "ptr";
  readonly type: number;
}

/** typedef and the qualifiers: they name or qualify another type without changing its layout. */
export interface BtfAlias extends Base {
  readonly kind: "typedef" | "volatile" | "const" | "restrict" | "type_tag";
  readonly type: number;
}

export interface BtfArray extends Base {
  readonly kind: "array";
  readonly type: number;
  readonly indexType: number;
  readonly nelems: number;
}

export interface BtfMember {
  readonly name: string;
  readonly type: number;
  /** Bit offset from the start of the enclosing struct/union. */
  readonly bitOffset: number;
  /** Bitfield width when the struct has kind_flag set, else 0 (old-style bitfields live in the INT). */
  readonly bitSize: number;
}

export interface BtfStruct extends Base {
  readonly kind: "struct" | "union";
  readonly size: number;
  /** kind_flag: members carry their bitfield size in the top 8 bits of the offset. */
  readonly bitfieldMembers: boolean;
  readonly members: readonly BtfMember[];
}

export interface BtfEnumerator {
  readonly name: string;
  readonly value: bigint;
}

export interface BtfEnum extends Base {
  readonly kind: "enum" | "enum64";
  readonly size: number;
  readonly signed: boolean;
  readonly values: readonly BtfEnumerator[];
}

export interface BtfFwd extends Base {
  readonly kind: "fwd";
  readonly union: boolean;
}

export type BtfLinkage = "static" | "global" | "extern";

export interface BtfFunc extends Base {
  readonly kind: "func";
  /** A FUNC_PROTO id. */
  readonly type: number;
  readonly linkage: BtfLinkage;
}

export interface BtfParam {
  readonly name: string;
  /** 0 for the trailing `...` of a variadic function. */
  readonly type: number;
}

export interface BtfFuncProto extends Base {
  readonly kind: "func_proto";
  readonly returnType: number;
  readonly params: readonly BtfParam[];
}

export interface BtfVar extends Base {
  readonly kind: "var";
  readonly type: number;
  readonly linkage: BtfLinkage;
}

export interface BtfVarSecInfo {
  readonly type: number;
  readonly offset: number;
  readonly size: number;
}

export interface BtfDatasec extends Base {
  readonly kind: "datasec";
  readonly size: number;
  readonly vars: readonly BtfVarSecInfo[];
}

export interface BtfDeclTag extends Base {
  readonly kind: "decl_tag";
  readonly type: number;
  /** -1 when the tag applies to the type itself, else a member/parameter index. */
  readonly componentIdx: number;
}

export type BtfType =
  | BtfVoid
  | BtfInt
  | BtfFloat
  | BtfPtr
  | BtfAlias
  | BtfArray
  | BtfStruct
  | BtfEnum
  | BtfFwd
  | BtfFunc
  | BtfFuncProto
  | BtfVar
  | BtfDatasec
  | BtfDeclTag;

export const VOID: BtfVoid = Object.freeze({ id: 0, name: "", kind: "void" });

export function isAlias(t: BtfType): t is BtfAlias {
  return (
    t.kind === "typedef" ||
    t.kind === "const" ||
    t.kind === "volatile" ||
    t.kind === "restrict" ||
    t.kind === "type_tag"
  );
}

export function isComposite(t: BtfType): t is BtfStruct {
  return t.kind === "struct" || t.kind === "union";
}

/** Calls `fn` with every id a type refers to, for range checks. */
export function forEachReference(t: BtfType, fn: (id: number) => void): void {
  switch (t.kind) {
    case "ptr":
    case "typedef":
    case "volatile":
    case "const":
    case "restrict":
    case "type_tag":
    case "func":
    case "var":
    case "decl_tag":
      fn(t.type);
      return;
    case "array":
      fn(t.type);
      fn(t.indexType);
      return;
    case "struct":
    case "union":
      for (const m of t.members) fn(m.type);
      return;
    case "func_proto":
      fn(t.returnType);
      for (const p of t.params) fn(p.type);
      return;
    case "datasec":
      for (const v of t.vars) fn(v.type);
      return;
  }
}
