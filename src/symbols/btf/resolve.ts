import { GuestDataError, VmsightError } from "../../util/errors.js";
import type { Btf } from "./btf.js";
import { type BtfType, isAlias } from "./types.js";

/**
 * How many typedef/qualifier/array links a walk follows before calling it a cycle. Real
 * kernels need fewer than 10; hostile BTF can make a typedef point at itself.
 */
export const MAX_TYPE_DEPTH = 64;

/** x86-64: BTF does not record pointer width. */
export const POINTER_SIZE = 8;

function tooDeep(btf: Btf, id: number, what: string): GuestDataError {
  const t = btf.type(id);
  return new GuestDataError(
    `BTF: ${what} from type [${id}] ${t.kind} '${t.name}' is longer than ${MAX_TYPE_DEPTH} links (a cycle?)`,
  );
}

/** Follows typedef/const/volatile/restrict/type_tag to the underlying type. */
export function resolveType(btf: Btf, id: number): BtfType {
  let t = btf.type(id);
  for (let depth = 0; isAlias(t); depth++) {
    if (depth >= MAX_TYPE_DEPTH) throw tooDeep(btf, id, "typedef/qualifier chain");
    t = btf.type(t.type);
  }
  return t;
}

/** sizeof() of a type id, in bytes. */
export function sizeOfType(btf: Btf, id: number): number {
  let count = 1;
  let cur = id;
  for (let depth = 0; depth < MAX_TYPE_DEPTH; depth++) {
    const t = resolveType(btf, cur);
    switch (t.kind) {
      case "array":
        count *= t.nelems;
        cur = t.type;
        continue;
      case "ptr":
        return checked(btf, id, count * POINTER_SIZE);
      case "int":
      case "float":
      case "struct":
      case "union":
      case "enum":
      case "enum64":
      case "datasec":
        return checked(btf, id, count * t.size);
      default:
        if (count === 0) return 0;
        throw new VmsightError("E_TYPE_INCOMPLETE", `type [${t.id}] ${t.kind} '${t.name}' has no size`);
    }
  }
  throw tooDeep(btf, id, "array nesting");
}

function checked(btf: Btf, id: number, size: number): number {
  if (!Number.isSafeInteger(size)) {
    throw new GuestDataError(`BTF: type [${id}] '${btf.type(id).name}' has an absurd size (${size} bytes)`);
  }
  return size;
}

/**
 * Bounds on one spelling. Depth alone does not bound the work: a func_proto whose parameters
 * are func_protos doubles the text at every level, so 64 levels would spell 2^64 types.
 */
export const MAX_SPELLING_STEPS = 4096;
export const MAX_SPELLING_LENGTH = 16384;

interface Spelling {
  readonly btf: Btf;
  readonly id: number;
  steps: number;
  /** A parameter's spelling does not depend on where it appears: each type is spelled once. */
  readonly params: Map<number, string>;
}

/** A C-like spelling of a type: "struct list_head", "char[16]", "pid_t", "const char *". */
export function typeName(btf: Btf, id: number): string {
  return spell({ btf, id, steps: 0, params: new Map() }, id, "", 0);
}

function tooLong(s: Spelling, what: string): GuestDataError {
  return new GuestDataError(`BTF: the spelling of type [${s.id}] ${what} (hostile or corrupt BTF?)`);
}

/** Spells type `id` around a declarator (`inner`), the way C does: int (*)(void), char *[4]. */
function spell(s: Spelling, id: number, inner: string, depth: number): string {
  if (depth >= MAX_TYPE_DEPTH) throw tooDeep(s.btf, id, "type spelling");
  if (++s.steps > MAX_SPELLING_STEPS) throw tooLong(s, `takes more than ${MAX_SPELLING_STEPS} steps`);
  if (inner.length > MAX_SPELLING_LENGTH) {
    throw tooLong(s, `is longer than ${MAX_SPELLING_LENGTH} characters`);
  }
  const btf = s.btf;
  const t = btf.type(id);
  const join = (base: string) => (inner === "" ? base : `${base} ${inner}`);
  switch (t.kind) {
    case "void":
      return join("void");
    case "int":
    case "float":
    case "typedef":
      return join(t.name);
    case "struct":
    case "union":
    case "enum":
      return join(`${t.kind} ${t.name || "(anon)"}`);
    case "enum64":
      return join(`enum ${t.name || "(anon)"}`);
    case "fwd":
      return join(`${t.union ? "union" : "struct"} ${t.name}`);
    case "ptr": {
      const target = btf.type(t.type);
      // A qualifier after the star keeps its space: char * const.
      const star = /^[a-z]/.test(inner) ? `* ${inner}` : `*${inner}`;
      const wrapped = target.kind === "array" || target.kind === "func_proto" ? `(${star})` : star;
      return spell(s, t.type, wrapped, depth + 1);
    }
    case "array":
      return spell(s, t.type, `${inner}[${t.nelems}]`, depth + 1).replace(" [", "[");
    case "const":
    case "volatile":
    case "restrict":
      return qualified(s, t.kind, t.type, inner, depth);
    case "type_tag":
      return spell(s, t.type, inner, depth + 1);
    case "func_proto": {
      return spell(s, t.returnType, `${inner}(${paramList(s, t.params, depth + 1)})`, depth + 1);
    }
    default:
      return join(`${t.kind} ${t.name}`);
  }
}

function paramList(s: Spelling, params: readonly { readonly type: number }[], depth: number): string {
  const texts: string[] = [];
  let length = 0;
  for (const p of params) {
    let text = p.type === 0 ? "..." : s.params.get(p.type);
    if (text === undefined) {
      text = spell(s, p.type, "", depth);
      s.params.set(p.type, text);
    }
    length += text.length + 2;
    if (length > MAX_SPELLING_LENGTH) throw tooLong(s, `is longer than ${MAX_SPELLING_LENGTH} characters`);
    texts.push(text);
  }
  return texts.join(", ") || "void";
}

function qualified(s: Spelling, q: string, target: number, inner: string, depth: number): string {
  // A qualified pointer puts the qualifier after the star: char * const.
  if (s.btf.type(target).kind === "ptr")
    return spell(s, target, inner === "" ? q : `${q} ${inner}`, depth + 1);
  const base = spell(s, target, "", depth + 1);
  return inner === "" ? `${q} ${base}` : `${q} ${base} ${inner}`;
}
