import {
  ISF_FORMAT,
  type IsfBaseType,
  type IsfDocument,
  type IsfEnum,
  type IsfSymbol,
  type IsfUserType,
  KNOWN_SYMBOL_TYPES,
  type TypeDescriptor,
} from "./isf.js";
import type { SymbolTable } from "./kallsyms/table.js";

/**
 * A partial Volatility 3 symbol file for a kernel without BTF: symbols from kallsyms, the
 * banner, and the members an offsets profile knows. A profile holds offsets only, so each
 * member's C type comes from the kernel's own declaration of it (MEMBER_TYPES: declarations
 * that have not changed since 4.x); a member whose type vmsight does not know is left out and
 * named. Struct sizes are unknown: each is the end of its furthest known member, a lower bound.
 */
export interface ProfileIsfInput {
  readonly profile: Readonly<Record<string, number>>;
  /** Symbols at their link-time addresses. */
  readonly symbols: SymbolTable;
  readonly banner: Uint8Array;
  readonly producerVersion: string;
}

export interface ProfileIsf {
  readonly doc: IsfDocument;
  /** Profile keys not written, their C type being unknown here. */
  readonly untyped: readonly string[];
  /** For each Volatility plugin that cannot run with this file, the members it lacks. */
  readonly lacking: readonly { readonly plugin: string; readonly members: readonly string[] }[];
}

type Field = readonly [type: TypeDescriptor, size: number];

const base = (name: string): TypeDescriptor => ({ kind: "base", name });
const ptr = (subtype: TypeDescriptor): TypeDescriptor => ({ kind: "pointer", subtype });
const struct = (name: string): TypeDescriptor => ({ kind: "struct", name });
const chars = (count: number): TypeDescriptor => ({ kind: "array", count, subtype: base("char") });
const LIST: Field = [struct("list_head"), 16];
const ULONG: Field = [base("long unsigned int"), 8];

/** include/linux/sched.h, mm_types.h, module.h, kthread.c, workqueue_internal.h. */
const MEMBER_TYPES: Readonly<Record<string, Field>> = {
  "task_struct.tasks": LIST,
  "task_struct.thread_group": LIST,
  "task_struct.thread_node": LIST,
  "task_struct.pid": [base("int"), 4],
  "task_struct.tgid": [base("int"), 4],
  "task_struct.comm": [chars(16), 16],
  "task_struct.__state": [base("unsigned int"), 4],
  "task_struct.state": [base("long int"), 8],
  "task_struct.flags": [base("unsigned int"), 4],
  "task_struct.mm": [ptr(struct("mm_struct")), 8],
  "task_struct.active_mm": [ptr(struct("mm_struct")), 8],
  "task_struct.real_parent": [ptr(struct("task_struct")), 8],
  "task_struct.parent": [ptr(struct("task_struct")), 8],
  "task_struct.real_cred": [ptr(struct("cred")), 8],
  "task_struct.cred": [ptr(struct("cred")), 8],
  "task_struct.files": [ptr(struct("files_struct")), 8],
  "task_struct.signal": [ptr(struct("signal_struct")), 8],
  "task_struct.worker_private": [ptr(base("void")), 8],
  "mm_struct.pgd": [ptr(base("void")), 8],
  "mm_struct.start_code": ULONG,
  "mm_struct.end_code": ULONG,
  "mm_struct.start_data": ULONG,
  "mm_struct.end_data": ULONG,
  "mm_struct.start_brk": ULONG,
  "mm_struct.brk": ULONG,
  "mm_struct.start_stack": ULONG,
  "mm_struct.arg_start": ULONG,
  "mm_struct.arg_end": ULONG,
  "mm_struct.env_start": ULONG,
  "mm_struct.env_end": ULONG,
  "module.list": LIST,
  "module.name": [chars(56), 56],
  "module.state": [{ kind: "enum", name: "module_state" }, 4],
  "kthread.full_name": [ptr(base("char")), 8],
  "worker.pool": [ptr(base("void")), 8],
  "worker.current_work": [ptr(base("void")), 8],
};

/** include/linux/types.h: the same in every kernel, and every list walk needs it. */
const LIST_HEAD: IsfUserType = {
  kind: "struct",
  size: 16,
  fields: {
    next: { type: ptr(struct("list_head")), offset: 0 },
    prev: { type: ptr(struct("list_head")), offset: 8 },
  },
};

const MODULE_STATE: IsfEnum = {
  size: 4,
  base: "int",
  constants: {
    MODULE_STATE_LIVE: 0n,
    MODULE_STATE_COMING: 1n,
    MODULE_STATE_GOING: 2n,
    MODULE_STATE_UNFORMED: 3n,
  },
};

/**
 * Types Volatility's Linux symbol table sets classes on when it loads a file (symbols/linux
 * LinuxKernelIntermedSymbols): absent, it refuses the file. Those the profile does not describe
 * are written empty (size 0, no fields), as a forward declaration is.
 */
const VOLATILITY_TYPES = [
  "file",
  "list_head",
  "hlist_head",
  "mm_struct",
  "super_block",
  "task_struct",
  "vm_area_struct",
  "qstr",
  "dentry",
  "fs_struct",
  "files_struct",
  "kobject",
  "cred",
  "inode",
  "idr",
  "address_space",
  "page",
  "vfsmount",
  "net",
  "socket",
  "sock",
  "inet_sock",
  "unix_sock",
];

/**
 * What each plugin reads before it prints anything. linux.pslist prints `task->parent` (the
 * ptrace parent, beside real_parent), and Volatility finds the KASLR shift of any image through
 * `init_task.files` and `init_files`. The lsmod size is the module layout's (core_layout or mem[]).
 */
const TASK_LIST_NEEDS = [
  "task_struct.tasks",
  "task_struct.pid",
  "task_struct.tgid",
  "task_struct.comm",
  "task_struct.parent",
  "task_struct.files",
];
const PLUGIN_NEEDS: Readonly<Record<string, readonly string[]>> = {
  // pstree is pslist's listing drawn as a tree.
  "linux.pslist": TASK_LIST_NEEDS,
  "linux.pstree": TASK_LIST_NEEDS,
  "linux.lsmod": [
    "task_struct.comm",
    "task_struct.pid",
    "task_struct.files",
    "module.list",
    "module.name",
    "module.core_layout|module.mem",
  ],
  "linux.lsof": [
    "task_struct.files",
    "files_struct.fdt",
    "fdtable.fd",
    "fdtable.max_fds",
    "file.f_path",
    "path.dentry",
    "path.mnt",
    "dentry.d_name",
    "dentry.d_parent",
    "vfsmount.mnt_root",
  ],
};

const BASE_TYPES: Readonly<Record<string, IsfBaseType>> = {
  pointer: { kind: "int", size: 8, signed: false, endian: "little" },
  void: { kind: "void", size: 0, signed: false, endian: "little" },
  char: { kind: "char", size: 1, signed: true, endian: "little" },
  int: { kind: "int", size: 4, signed: true, endian: "little" },
  "unsigned int": { kind: "int", size: 4, signed: false, endian: "little" },
  "long int": { kind: "int", size: 8, signed: true, endian: "little" },
  "long unsigned int": { kind: "int", size: 8, signed: false, endian: "little" },
};

export function buildProfileIsf(input: ProfileIsfInput): ProfileIsf {
  const { userTypes, untyped } = profileTypes(input.profile);
  return {
    doc: {
      metadata: {
        format: ISF_FORMAT,
        producer: { name: "vmsight", version: input.producerVersion },
        linux: { symbols: [{ kind: "symtab", name: "kallsyms" }] },
      },
      base_types: { ...BASE_TYPES },
      user_types: userTypes,
      enums: { module_state: MODULE_STATE },
      symbols: profileSymbols(input.symbols, input.banner),
    },
    untyped,
    lacking: lackingMembers(input.profile),
  };
}

function profileTypes(profile: Readonly<Record<string, number>>): {
  userTypes: Record<string, IsfUserType>;
  untyped: string[];
} {
  const userTypes: Record<string, { kind: "struct"; size: number; fields: IsfUserType["fields"] }> = {};
  const untyped: string[] = [];
  for (const [key, offset] of Object.entries(profile)) {
    if (key.startsWith("list_head.")) continue; // written whole, below
    const known = MEMBER_TYPES[key];
    if (known === undefined) {
      untyped.push(key);
      continue;
    }
    const [structName, member] = key.split(".") as [string, string];
    const t = userTypes[structName] ?? { kind: "struct", size: 0, fields: {} };
    userTypes[structName] = t;
    t.fields[member] = { type: known[0], offset };
    t.size = Math.max(t.size, offset + known[1]);
  }
  userTypes.list_head = { kind: "struct", size: LIST_HEAD.size, fields: { ...LIST_HEAD.fields } };
  for (const name of [...VOLATILITY_TYPES, ...referencedStructs(userTypes)])
    userTypes[name] ??= { kind: "struct", size: 0, fields: {} };
  return { userTypes, untyped: untyped.sort() };
}

/** Structs the written fields point to or contain: each needs an entry to resolve. */
function referencedStructs(types: Readonly<Record<string, IsfUserType>>): string[] {
  const out = new Set<string>();
  const visit = (t: TypeDescriptor): void => {
    if (t.kind === "struct" || t.kind === "union") out.add(t.name);
    else if (t.kind === "pointer" || t.kind === "array") visit(t.subtype);
  };
  for (const t of Object.values(types)) for (const f of Object.values(t.fields)) visit(f.type);
  return [...out];
}

function profileSymbols(table: SymbolTable, banner: Uint8Array): Record<string, IsfSymbol> {
  const symbols: Record<string, IsfSymbol> = {};
  for (const s of table.symbols) {
    if (Object.hasOwn(symbols, s.name)) continue;
    const known = KNOWN_SYMBOL_TYPES[s.name];
    symbols[s.name] = { address: s.address, ...(known ? { type: struct(known) } : {}) };
  }
  const bannerAt = table.findAddress("linux_banner");
  if (bannerAt !== undefined)
    symbols.linux_banner = {
      address: bannerAt,
      type: { kind: "array", count: banner.length, subtype: base("char") },
      constant_data: Buffer.from(banner).toString("base64"),
    };
  return symbols;
}

/** `a|b`: either member will do (the module layout of 6.1 or of 6.4+). */
function lackingMembers(profile: Readonly<Record<string, number>>): ProfileIsf["lacking"] {
  const written = (key: string) => profile[key] !== undefined && MEMBER_TYPES[key] !== undefined;
  return Object.entries(PLUGIN_NEEDS)
    .map(([plugin, needs]) => ({ plugin, members: needs.filter((n) => !n.split("|").some(written)) }))
    .filter((p) => p.members.length > 0);
}
