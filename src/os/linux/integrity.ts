import { enumerateMappings } from "../../arch/x86/mappings.js";
import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, GuestDataError } from "../../util/errors.js";
import type { KernelInfo } from "./kernel.js";
import { type ModuleRow, listModules, moduleReader, sysfsModules } from "./modules.js";
import { pidNamespaceEntries } from "./pid-ns.js";
import { listAllThreads, readTask } from "./tasks.js";
import { isKernelPointer } from "./walk.js";

/**
 * `vmsight check`: what a defender asks of a kernel that may host a rootkit. Each check compares
 * a structure rootkits alter (the syscall tables, the module list, the task list) with one they
 * usually leave alone (kernel text bounds, sysfs and module memory, the PID namespace and the
 * runqueues), and reports every difference.
 */
export type FindingKind = "syscall-hook" | "hidden-module" | "hidden-task";

export interface IntegrityFinding {
  readonly kind: FindingKind;
  /** One line for people: what is wrong and where. */
  readonly what: string;
  /** The altered table slot, the hidden struct module, or the hidden task_struct. */
  readonly address: VirtAddr;
  /** syscall-hook: the table, the entry's number, where it points, and what owns that. */
  readonly table?: string;
  readonly index?: number;
  readonly target?: bigint;
  readonly owner?: string;
  /** hidden-module: its name; hidden-task: its pid, tgid and comm. */
  readonly name?: string;
  readonly pid?: number;
  readonly tgid?: number;
  readonly comm?: string;
  /** Where the hidden object was seen instead of its list. */
  readonly seenIn?: readonly string[];
}

const SYSCALL_TABLES = ["sys_call_table", "ia32_sys_call_table", "x32_sys_call_table"];
/** No x86 syscall table has more entries; a symbol gap wider than this is not a table. */
const MAX_SYSCALLS = 1024;
/** x86-64 module space: MODULES_VADDR (the kernel image's 1 GiB end) to MODULES_END. */
const MODULES_VADDR = 0xffffffffc0000000n;
const MODULES_END = 0xffffffffff000000n;
/** Bytes of module memory a scan reads at most (the area is 1 GiB; real use is a few MiB). */
const MAX_MODULE_SCAN = 256 * 1024 * 1024;
const MAX_RB_NODES = 1 << 16;

export function integrityFindings(k: KernelInfo): IntegrityFinding[] {
  const listed = listModules(k);
  const hidden = hiddenModules(k, listed);
  return [
    ...syscallFindings(k, [...listed, ...hidden.map((h) => h.row)], new Set(hidden.map((h) => h.row.addr))),
    ...hidden.map(hiddenModuleFinding),
    ...hiddenTasks(k),
  ];
}

// ---- syscall tables --------------------------------------------------------------------------

/** @internal exported for tests */
export function syscallFindings(
  k: KernelInfo,
  modules: readonly ModuleRow[],
  hiddenAddrs: ReadonlySet<bigint>,
): IntegrityFinding[] {
  const stext = k.symbols.getAddress("_stext");
  const etext = k.symbols.getAddress("_etext");
  const out: IntegrityFinding[] = [];
  for (const table of SYSCALL_TABLES) {
    const at = k.symbols.findAddress(table);
    if (at === undefined) continue;
    const end = k.symbols.nextAddress(at);
    if (end === undefined || end - at < 8n || end - at > BigInt(MAX_SYSCALLS * 8))
      throw new GuestDataError(`${table} at ${hex(at)}: no symbol ends it within ${MAX_SYSCALLS} entries`);
    const entries = read(`${table}`, () => k.kernel.read(va(at), Number(end - at) & ~7));
    // The symbol gap may end in alignment padding: zeros after the last entry are not entries.
    let count = entries.length / 8;
    while (count > 0 && entries.readBigUInt64LE((count - 1) * 8) === 0n) count--;
    for (let i = 0; i < count; i++) {
      const target = entries.readBigUInt64LE(i * 8);
      if (target >= stext && target < etext) continue;
      const mod = modules.find((m) => m.size > 0 && target >= m.base && target < m.base + BigInt(m.size));
      const owner = mod
        ? `module ${mod.name}${hiddenAddrs.has(mod.addr) ? " (hidden)" : ""}`
        : "no module (outside kernel text and every module)";
      out.push({
        kind: "syscall-hook",
        what: `${table}[${i}] points to ${hex(target)} in ${owner}, not into kernel text`,
        address: va(at + BigInt(i * 8)),
        table,
        index: i,
        target,
        owner: mod ? mod.name : "",
      });
    }
  }
  return out;
}

// ---- modules ---------------------------------------------------------------------------------

export interface HiddenModule {
  readonly row: ModuleRow;
  readonly seenIn: string[];
}

/** Modules in sysfs or in module memory whose struct is not on the modules list. */
/** @internal exported for tests */
export function hiddenModules(k: KernelInfo, listed: readonly ModuleRow[]): HiddenModule[] {
  const known = new Set(listed.map((m) => m.addr));
  const found = new Map<bigint, string[]>();
  const saw = (addr: bigint, where: string) => {
    if (known.has(va(addr))) return;
    const list = found.get(addr) ?? [];
    if (!list.includes(where)) list.push(where);
    found.set(addr, list);
  };
  for (const m of sysfsModules(k)) saw(m.addr, "sysfs");
  for (const addr of modulesInMemory(k)) saw(addr, "module memory");
  const reader = moduleReader(k);
  const out: HiddenModule[] = [];
  for (const [addr, seenIn] of found) {
    const row = reader(va(addr));
    if (row) out.push({ row, seenIn });
  }
  return out;
}

function hiddenModuleFinding(h: HiddenModule): IntegrityFinding {
  return {
    kind: "hidden-module",
    what: `module ${h.row.name} (struct module ${hex(h.row.addr)}) is in ${h.seenIn.join(" and ")} but not on the modules list`,
    address: h.row.addr,
    name: h.row.name,
    seenIn: h.seenIn,
  };
}

/**
 * Every `struct module` in the writable pages of module space, found by the pointer each one
 * holds to itself once sysfs knows it (`mod->mkobj.mod == mod`), then checked for a sane state,
 * name and list links. A module being freed is marked unformed first, so stale copies in pages
 * not yet unmapped do not count.
 */
function modulesInMemory(k: KernelInfo): bigint[] {
  const L = k.layout;
  const mkobj = L.findOffset("module", "mkobj");
  const modAt = L.findOffset("module_kobject", "mod");
  if (mkobj === undefined || modAt === undefined || !k.kernel.format) return [];
  const self = BigInt(mkobj + modAt);
  const nameAt = BigInt(L.offsetof("module", "name"));
  const stateAt = BigInt(L.offsetof("module", "state"));
  const { mappings } = enumerateMappings(k.kernel.mem, k.kernel.format, k.kernel.root, {
    start: va(MODULES_VADDR),
    end: MODULES_END,
  });
  const out: bigint[] = [];
  let budget = MAX_MODULE_SCAN;
  for (const m of mappings) {
    if (!m.writable) continue;
    const length = Number(m.end - m.start);
    budget -= length;
    if (budget < 0) throw new GuestDataError(`module space maps more than ${MAX_MODULE_SCAN} writable bytes`);
    let bytes: Buffer;
    try {
      bytes = k.kernel.read(m.start, length);
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      continue;
    }
    for (let i = 0; i + 8 <= length; i += 8) {
      const where = m.start + BigInt(i);
      const candidate = where - self;
      if (bytes.readBigUInt64LE(i) !== candidate) continue;
      if (looksLikeModule(k, candidate, nameAt, stateAt)) out.push(candidate);
    }
  }
  return out;
}

/** A sane state and a printable name. The list links are not checked: list_del poisons them. */
function looksLikeModule(k: KernelInfo, mod: bigint, nameAt: bigint, stateAt: bigint): boolean {
  try {
    const state = k.kernel.readU32(va(mod + stateAt));
    const name = k.kernel.read(va(mod + nameAt), 56);
    const nul = name.indexOf(0);
    return state <= 3 && nul > 0 && name.subarray(0, nul).every((c) => c > 0x20 && c < 0x7f);
  } catch (error) {
    if (error instanceof FaultError) return false;
    throw error;
  }
}

// ---- tasks -----------------------------------------------------------------------------------

/**
 * Tasks the PID namespace or a runqueue holds whose thread group is not on the task list, one
 * finding per process. Idle tasks (pid 0, one per CPU) are never on the list and are skipped.
 */
function hiddenTasks(k: KernelInfo): IntegrityFinding[] {
  const known = new Set(listAllThreads(k).map((t) => t.addr));
  const found = new Map<bigint, string[]>();
  const saw = (task: bigint, where: string) => {
    if (known.has(va(task))) return;
    const list = found.get(task) ?? [];
    if (!list.includes(where)) list.push(where);
    found.set(task, list);
  };
  for (const e of pidNamespaceEntries(k)) if (e.task !== undefined) saw(e.task, "the PID namespace");
  for (const t of runqueueTasks(k)) saw(t, "a runqueue");
  const byProcess = new Map<number, IntegrityFinding>();
  for (const [addr, seenIn] of found) {
    const t = readTask(k, va(addr));
    if (t.pid === 0) continue;
    const prior = byProcess.get(t.tgid);
    // The group leader speaks for its process; a thread only when the leader was not seen.
    if (prior && prior.pid === prior.tgid) continue;
    if (prior && t.pid !== t.tgid) continue;
    byProcess.set(t.tgid, {
      kind: "hidden-task",
      what: `pid ${t.tgid} (${t.name}) is in ${seenIn.join(" and ")} but not on the task list`,
      address: t.addr,
      pid: t.pid,
      tgid: t.tgid,
      comm: t.name,
      seenIn,
    });
  }
  return [...byProcess.values()].sort((a, b) => (a.tgid ?? 0) - (b.tgid ?? 0));
}

/**
 * Every task a CPU's runqueue holds: `rq->curr` and the CFS timeline, descending into group
 * entities' own queues. RT and deadline queues are not read; their running task is `curr`.
 */
/** @internal exported for tests */
export function runqueueTasks(k: KernelInfo): bigint[] {
  const L = k.layout;
  const rqVar = k.symbols.findAddress("runqueues");
  if (rqVar === undefined || L.findOffset("rq", "cfs") === undefined) return [];
  const curr = BigInt(L.offsetof("rq", "curr"));
  const cfs = BigInt(L.offsetof("rq", "cfs"));
  const root = BigInt(L.offsetof("cfs_rq", "tasks_timeline.rb_root.rb_node"));
  const left = BigInt(L.offsetof("rb_node", "rb_left"));
  const right = BigInt(L.offsetof("rb_node", "rb_right"));
  const runNode = BigInt(L.offsetof("sched_entity", "run_node"));
  const myQ = L.findOffset("sched_entity", "my_q");
  const se = BigInt(L.offsetof("task_struct", "se"));
  const tasks: bigint[] = [];
  const seen = new Set<bigint>();
  const visitQueue = (cfsRq: bigint, depth: number): void => {
    if (depth > 32) throw new GuestDataError(`cfs_rq ${hex(cfsRq)}: group nesting deeper than 32`);
    const stack = [k.kernel.readU64(va(cfsRq + root))];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node === 0n) continue;
      if (!isKernelPointer(node, k.bounds) || seen.has(node) || seen.size >= MAX_RB_NODES)
        throw new GuestDataError(
          `cfs_rq ${hex(cfsRq)}: rb_node ${hex(node)} is bad, revisited or one too many`,
        );
      seen.add(node);
      stack.push(k.kernel.readU64(va(node + left)), k.kernel.readU64(va(node + right)));
      const entity = node - runNode;
      const group = myQ === undefined ? 0n : k.kernel.readU64(va(entity + BigInt(myQ)));
      if (group !== 0n) visitQueue(group, depth + 1);
      else tasks.push(entity - se);
    }
  };
  k.perCpuOffsets.forEach((base, cpu) => {
    const rq = base + rqVar;
    read(`runqueue of CPU ${cpu}`, () => {
      const running = k.kernel.readU64(va(rq + curr));
      if (isKernelPointer(running, k.bounds)) tasks.push(running);
      visitQueue(rq + cfs, 0);
    });
  });
  return tasks;
}

function read<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    if (!(error instanceof FaultError)) throw error;
    throw new GuestDataError(`${what} is unreadable`, { cause: error });
  }
}
