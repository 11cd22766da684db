import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, VmsightError } from "../../util/errors.js";
import type { KernelContext } from "./context.js";
import { checkKernelPointer, listForEachEntry, readFixedString } from "./walk.js";

/**
 * /proc/modules from outside: `m_show()` of kernel/module/procfs.c (6.1: core_layout; 6.4+:
 * mem[]) over the `modules` list, newest first as the kernel lists them, unformed modules
 * skipped.
 */
/** "Unknown" only for a module whose struct could not be read (see `warnings`). */
export type ModuleState = "Live" | "Loading" | "Unloading" | "Unknown";

export interface ModuleRow {
  /** The `struct module`. */
  readonly addr: VirtAddr;
  readonly name: string;
  readonly state: ModuleState;
  /** Base of the core text: `mem[MOD_TEXT].base` (6.4+), `core_layout.base`, or `module_core`. */
  readonly base: bigint;
  /** What /proc/modules prints as the size for this kernel version. */
  readonly size: number;
  /** `module_refcount()`, i.e. refcnt - 1; undefined without CONFIG_MODULE_UNLOAD. */
  readonly refcount: number | undefined;
  /** Names of the modules using this one (`source_list`), in list order. */
  readonly usedBy: readonly string[];
  /** Has an init but no exit function: cannot be unloaded; printed as "[permanent],". */
  readonly permanent: boolean;
  /** `module.taints` as a bit mask. */
  readonly taints: bigint;
  /**
   * What could not be read: the list of users (usedBy is then empty), or the struct itself
   * (then only the name, when readable, is known: "?" otherwise). Absent for a sound module.
   */
  readonly warnings?: readonly string[];
}

export interface ListModulesOptions {
  readonly maxModules?: number;
  readonly maxUsers?: number;
}

/** Per-module taint letters (kernel/panic.c taint_flags[] with .module = true), by bit. */
const MODULE_TAINTS: readonly [number, string][] = [
  [0, "P"],
  [1, "F"],
  [10, "C"],
  [12, "O"],
  [13, "E"],
  [15, "K"],
  [16, "X"],
  [17, "T"],
  [18, "N"],
  [19, "J"],
];

interface SizeRule {
  readonly base: number;
  /** Offsets of the u32 sizes m_show() adds up. */
  readonly sizes: readonly number[];
}

/**
 * 6.4+: `module_total_size()` sums every `mem[type].size`. 6.1–6.3: `init_layout.size +
 * core_layout.size` (+ `data_layout.size` where CONFIG_ARCH_WANTS_MODULES_DATA_IN_VMALLOC adds
 * it). Before 4.5: `init_size + core_size`, base `module_core`.
 */
function sizeRule(ctx: KernelContext): SizeRule {
  const L = ctx.layout;
  const mem = L.findOffset("module", "mem");
  if (mem !== undefined) {
    const stride = L.sizeof("module_memory");
    const count =
      Number(L.findEnumValue("MOD_MEM_NUM_TYPES") ?? 0n) ||
      Math.floor((L.memberSize("module", "mem") ?? 7 * stride) / stride);
    const text = Number(L.findEnumValue("MOD_TEXT") ?? 0n);
    const base = L.offsetof("module_memory", "base");
    const size = L.offsetof("module_memory", "size");
    return {
      base: mem + text * stride + base,
      sizes: Array.from({ length: count }, (_, i) => mem + i * stride + size),
    };
  }
  const core = L.findOffset("module", "core_layout");
  if (core !== undefined) {
    const size = L.offsetof("module_layout", "size");
    const layouts = ["core_layout", "init_layout", "data_layout"]
      .map((m) => L.findOffset("module", m))
      .filter((o): o is number => o !== undefined);
    return { base: core + L.offsetof("module_layout", "base"), sizes: layouts.map((o) => o + size) };
  }
  return {
    base: L.offsetof("module", "module_core"),
    sizes: [L.offsetof("module", "core_size"), L.offsetof("module", "init_size")],
  };
}

/** The loaded modules in /proc/modules order. A looping list raises GuestDataError. */
export function listModules(ctx: KernelContext, opts: ListModulesOptions = {}): ModuleRow[] {
  const head = va(ctx.symbols.getAddress("modules"));
  const reader = moduleReader(ctx, opts);
  const rows: ModuleRow[] = [];
  for (const mod of listForEachEntry(ctx, head, "module", "list", { max: opts.maxModules ?? 1 << 16 })) {
    const row = reader(mod);
    if (row) rows.push(row);
  }
  return rows;
}

/**
 * Reads one `struct module` wherever it was found (the list, sysfs, a scan of module memory):
 * its row, or undefined for a module not yet (or no longer) formed.
 */
export function moduleReader(
  ctx: KernelContext,
  opts: ListModulesOptions = {},
): (mod: VirtAddr) => ModuleRow | undefined {
  const L = ctx.layout;
  const rule = sizeRule(ctx);
  const off = (p: string) => L.offsetof("module", p);
  const maybe = (p: string) => L.findOffset("module", p);
  const nameAt = off("name");
  const nameLen = L.memberSize("module", "name") ?? 56;
  const states = stateValues(ctx);
  const refcnt = maybe("refcnt");
  const init = maybe("init");
  const exit = maybe("exit");
  const taints = maybe("taints");
  const span =
    Math.max(nameAt + nameLen, rule.base, ...rule.sizes, refcnt ?? 0, init ?? 0, exit ?? 0, taints ?? 0) + 8;
  return (mod) => {
    let b: Buffer;
    try {
      b = ctx.kernel.read(mod, span);
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      return unreadableModule(ctx, mod, nameAt, nameLen, error);
    }
    const warnings: string[] = [];
    const stateValue = BigInt(b.readInt32LE(off("state")));
    if (stateValue === states.unformed) return undefined;
    const state: ModuleState =
      stateValue === states.going ? "Unloading" : stateValue === states.coming ? "Loading" : "Live";
    const size = rule.sizes.reduce((sum, o) => (sum + b.readUInt32LE(o)) >>> 0, 0);
    return {
      addr: mod,
      name: readFixedString(b, nameAt, nameLen),
      state,
      base: b.readBigUInt64LE(rule.base),
      size,
      refcount: refcnt === undefined ? undefined : b.readInt32LE(refcnt) - 1,
      usedBy: refcnt === undefined ? [] : usersOrWarn(ctx, mod, opts.maxUsers ?? 4096, warnings),
      permanent:
        init !== undefined &&
        exit !== undefined &&
        b.readBigUInt64LE(init) !== 0n &&
        b.readBigUInt64LE(exit) === 0n,
      taints: taints === undefined ? 0n : b.readBigUInt64LE(taints),
      ...(warnings.length === 0 ? {} : { warnings }),
    };
  };
}

/**
 * The loaded modules sysfs knows (/sys/module/NAME): each kobject on `module_kset`'s list is the
 * `kobj` of a struct module_kobject whose `mod` is the module (NULL for built-in code that only
 * has parameters). It does not depend on the `modules` list: a module list_del'd from it (a
 * rootkit hiding itself) but left in sysfs is here and not in listModules(). Empty when the
 * symbol or the members are unknown (an offsets profile without them).
 */
export function sysfsModules(ctx: KernelContext): { addr: VirtAddr; name: string }[] {
  const L = ctx.layout;
  const ksetVar = ctx.symbols.findAddress("module_kset");
  const listAt = L.findOffset("kset", "list");
  const kobjAt = L.findOffset("module_kobject", "kobj");
  const modAt = L.findOffset("module_kobject", "mod");
  if (ksetVar === undefined || listAt === undefined || kobjAt === undefined || modAt === undefined) return [];
  const kset = checkKernelPointer(ctx.kernel.readU64(va(ksetVar)), ctx.bounds, "module_kset");
  const nameAt = BigInt(L.offsetof("module", "name"));
  const nameLen = L.memberSize("module", "name") ?? 56;
  const out: { addr: VirtAddr; name: string }[] = [];
  for (const kobj of listForEachEntry(ctx, va(kset + BigInt(listAt)), "kobject", "entry")) {
    const mk = kobj - BigInt(kobjAt);
    const mod = ctx.kernel.readU64(va(mk + BigInt(modAt)));
    if (mod === 0n) continue;
    const addr = checkKernelPointer(mod, ctx.bounds, `module_kobject ${hex(mk)} mod`);
    out.push({ addr, name: readFixedString(ctx.kernel.read(va(addr + nameAt), nameLen), 0, nameLen) });
  }
  return out;
}

/** Modules in sysfs but not on the modules list: one line each saying so. */
export function unlistedModuleWarnings(ctx: KernelContext, listed: readonly ModuleRow[]): string[] {
  const known = new Set(listed.map((m) => m.addr));
  return sysfsModules(ctx)
    .filter((m) => !known.has(m.addr))
    .map(
      (m) =>
        `module ${m.name} (struct module ${hex(m.addr)}) is in sysfs (module_kset) but not on the modules list: unlinked from it`,
    );
}

/** A module on the list whose struct cannot be read in full: its name if that can be, and why. */
function unreadableModule(
  ctx: KernelContext,
  mod: VirtAddr,
  nameAt: number,
  nameLen: number,
  error: FaultError,
): ModuleRow {
  let name = "?";
  try {
    name = readFixedString(ctx.kernel.read(va(mod + BigInt(nameAt)), nameLen), 0, nameLen);
  } catch (e) {
    if (!(e instanceof FaultError)) throw e;
  }
  return {
    addr: mod,
    name,
    state: "Unknown",
    base: 0n,
    size: 0,
    refcount: undefined,
    usedBy: [],
    permanent: false,
    taints: 0n,
    warnings: [`struct module at ${hex(mod)} is unreadable: ${error.message}`],
  };
}

/** The users of a module, or none and a warning when their list cannot be walked. */
function usersOrWarn(ctx: KernelContext, mod: VirtAddr, max: number, warnings: string[]): string[] {
  try {
    return users(ctx, mod, max);
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`users unreadable: ${error.message}`);
    return [];
  }
}

function stateValues(ctx: KernelContext): { coming: bigint; going: bigint; unformed: bigint } {
  const e = (n: string, d: bigint) => ctx.layout.findEnumValue(n) ?? d;
  return {
    coming: e("MODULE_STATE_COMING", 1n),
    going: e("MODULE_STATE_GOING", 2n),
    unformed: e("MODULE_STATE_UNFORMED", 3n),
  };
}

/** `print_unload_info()`: each `module_use` on `mod->source_list` names a module using `mod`. */
function users(ctx: KernelContext, mod: VirtAddr, max: number): string[] {
  const L = ctx.layout;
  const head = va(mod + BigInt(L.offsetof("module", "source_list")));
  const source = BigInt(L.offsetof("module_use", "source"));
  const nameAt = BigInt(L.offsetof("module", "name"));
  const nameLen = L.memberSize("module", "name") ?? 56;
  const out: string[] = [];
  for (const use of listForEachEntry(ctx, head, "module_use", "source_list", { max })) {
    const user = checkKernelPointer(
      ctx.kernel.readU64(va(use + source)),
      ctx.bounds,
      `module_use ${hex(use)} source`,
    );
    out.push(readFixedString(ctx.kernel.read(va(user + nameAt), nameLen), 0, nameLen));
  }
  return out;
}

/** `module_flags(mod, buf, true)`: taint letters, then '-' going or '+' coming, in parentheses. */
export function moduleFlags(row: ModuleRow): string {
  let s = "";
  for (const [bit, c] of MODULE_TAINTS) if ((row.taints >> BigInt(bit)) & 1n) s += c;
  if (row.state === "Unloading") s += "-";
  if (row.state === "Loading") s += "+";
  return `(${s})`;
}

/** The `m_show()` line: "name size refcount users state 0xaddress [(flags)]". */
export function formatModulesLine(row: ModuleRow): string {
  let unload = " - -";
  if (row.refcount !== undefined) {
    const deps = row.usedBy.map((n) => `${n},`).join("") + (row.permanent ? "[permanent]," : "");
    unload = ` ${row.refcount} ${deps === "" ? "-" : deps}`;
  }
  const addr = `0x${row.base.toString(16).padStart(16, "0")}`;
  const flags = row.taints !== 0n ? ` ${moduleFlags(row)}` : "";
  return `${row.name} ${row.size}${unload} ${row.state} ${addr}${flags}`;
}
