import type { StructLayout } from "../../symbols/layout.js";
import { type VirtAddr, hex, va } from "../../util/address.js";
import { viewOf } from "../../util/data-view.js";
import { FaultError, GuestDataError, VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import { parseBanner } from "./banner.js";
import type { KernelContext } from "./context.js";
import { leaderTaskHints } from "./pid-ns.js";
import { PF_KTHREAD, procTaskName, readStringBytes } from "./task-name.js";
import { CURRENT_STATE_RULES, type StateRules, taskStateLetter } from "./task-state.js";
import {
  type LinkMemory,
  checkKernelPointer,
  isKernelPointer,
  listForEach,
  listForEachEntry,
  readFixedString,
} from "./walk.js";

/**
 * Processes and threads, as /proc lists them.
 *
 * Members read (task_struct unless said otherwise):
 *   required: tasks, pid, tgid, comm, flags, real_parent, mm, __state (or state before 5.14)
 *   optional: exit_state (0), real_cred or cred + cred.uid/gid/euid (ids undefined),
 *             worker_private or set_child_tid (names fall back to comm), signal +
 *             signal_struct.thread_head + thread_node, or thread_group (listThreads only).
 *
 * Hostile data, decided per case:
 *   - a looping, overlong or unreadable tasks/thread list: GuestDataError (from listForEachEntry).
 *   - a task_struct that cannot be read in full: FaultError naming the address.
 *   - a comm with no NUL in its 16 bytes: all 16 bytes are the name, plus a warning.
 *   - a garbage or unreadable cred or real_parent pointer: that field is undefined (ids) or 0
 *     (ppid) and the task carries a warning; the rest of the listing stands.
 *   - a process whose thread list is broken (listAllThreads): its leader alone, with a warning.
 */
export interface TaskInfo {
  /** Address of the task_struct. */
  readonly addr: VirtAddr;
  readonly pid: number;
  readonly tgid: number;
  /** tgid of real_parent: 0 for init and kthreadd (their parent is the idle task). */
  readonly ppid: number;
  /** From real_cred (what /proc/<pid>/status shows), or cred; undefined when unreadable. */
  readonly uid: number | undefined;
  readonly gid: number | undefined;
  readonly euid: number | undefined;
  /** task->comm up to its NUL (at most 16 bytes), decoded by `decodeGuestBytes`. */
  readonly comm: string;
  /** The name /proc/<pid>/stat shows: full kthread names, workqueue descriptions. */
  readonly name: string;
  /** One of "RSDTtXZPI". */
  readonly state: string;
  /** Raw `__state` and `exit_state`. */
  readonly stateValue: number;
  readonly exitState: number;
  readonly flags: number;
  readonly isKernelThread: boolean;
  /** task->mm, or 0 for a kernel thread (as get_task_mm() sees it, even while it borrows an mm). */
  readonly mm: bigint;
  readonly realParent: VirtAddr;
  /** Fields that could not be read, each saying why. Empty for a sound task. */
  readonly warnings: readonly string[];
}

export interface TaskOptions {
  readonly stateRules?: StateRules;
}

interface TaskOffsets {
  /** task_struct.tasks: the list walked, and where each task's `next` pointer is read. */
  readonly tasks: number;
  /**
   * The parts of task_struct read per task, [start, start+length) each: the members listed
   * below, merged where they lie close together. The members sit in two groups thousands of
   * bytes apart (state and flags near the top, the rest around `tasks`), so one span across
   * both would read mostly what nothing uses.
   */
  readonly clusters: readonly Cluster[];
  /** Where each member read lies among the clusters. */
  readonly places: Places;
  readonly state: number;
  readonly stateSize: number;
  readonly flags: number;
  readonly exitState: number | undefined;
  readonly mm: number;
  readonly pid: number;
  readonly tgid: number;
  readonly realParent: number;
  readonly comm: number;
  readonly commSize: number;
  readonly cred: number | undefined;
  readonly kthread: number | undefined;
  /** cred's uid, gid and euid, and the bytes of cred that hold all three. */
  readonly credIds:
    | {
        readonly uid: number;
        readonly gid: number;
        readonly euid: number;
        readonly start: number;
        readonly length: number;
      }
    | undefined;
}

const offsetsCache = new WeakMap<StructLayout, TaskOffsets>();

function required(layout: StructLayout, struct: string, ...names: string[]): number {
  for (const name of names) {
    const o = layout.findOffset(struct, name);
    if (o !== undefined) return o;
  }
  throw new VmsightError(
    "E_MEMBER_UNKNOWN",
    `${struct}.${names.join(` or ${struct}.`)} is needed to list tasks but is not in the struct layout`,
    { hint: `layout source: ${layout.source}` },
  );
}

function taskOffsets(layout: StructLayout): TaskOffsets {
  const cached = offsetsCache.get(layout);
  if (cached) return cached;
  const T = "task_struct";
  const stateName = layout.findOffset(T, "__state") !== undefined ? "__state" : "state";
  const o = {
    tasks: required(layout, T, "tasks"),
    state: required(layout, T, "__state", "state"),
    stateSize: Math.min(layout.memberSize(T, stateName) ?? 4, 4),
    flags: required(layout, T, "flags"),
    exitState: layout.findOffset(T, "exit_state"),
    mm: required(layout, T, "mm"),
    pid: required(layout, T, "pid"),
    tgid: required(layout, T, "tgid"),
    realParent: required(layout, T, "real_parent"),
    comm: required(layout, T, "comm"),
    commSize: layout.memberSize(T, "comm") ?? 16,
    cred: layout.findOffset(T, "real_cred") ?? layout.findOffset(T, "cred"),
    // worker_private took over from set_child_tid as the struct kthread pointer in 5.19.
    kthread: layout.findOffset(T, "worker_private") ?? layout.findOffset(T, "set_child_tid"),
    credIds: credOffsets(layout),
  };
  const spans: [number, number][] = [
    [o.tasks, 8],
    [o.state, o.stateSize],
    [o.flags, 4],
    [o.mm, 8],
    [o.pid, 4],
    [o.tgid, 4],
    [o.realParent, 8],
    [o.comm, o.commSize],
  ];
  if (o.exitState !== undefined) spans.push([o.exitState, 4]);
  if (o.cred !== undefined) spans.push([o.cred, 8]);
  if (o.kthread !== undefined) spans.push([o.kthread, 8]);
  const clusters = mergeSpans(spans);
  checkObjectBound(layout, Math.max(...clusters.map((c) => c.start + c.length)));
  const place = (off: number): Place => {
    const part = clusters.findIndex((c) => off >= c.start && off < c.start + c.length);
    return { part, at: off - clusters[part]!.start };
  };
  const maybe = (off: number | undefined) => (off === undefined ? undefined : place(off));
  const places: Places = {
    tasks: place(o.tasks),
    state: place(o.state),
    flags: place(o.flags),
    exitState: maybe(o.exitState),
    mm: place(o.mm),
    pid: place(o.pid),
    tgid: place(o.tgid),
    realParent: place(o.realParent),
    comm: place(o.comm),
    cred: maybe(o.cred),
    kthread: maybe(o.kthread),
  };
  const result: TaskOffsets = { ...o, clusters, places };
  offsetsCache.set(layout, result);
  return result;
}

/** A member's bytes: cluster `part`, `at` bytes in. */
interface Place {
  readonly part: number;
  readonly at: number;
}

interface Places {
  readonly tasks: Place;
  readonly state: Place;
  readonly flags: Place;
  readonly exitState: Place | undefined;
  readonly mm: Place;
  readonly pid: Place;
  readonly tgid: Place;
  readonly realParent: Place;
  readonly comm: Place;
  readonly cred: Place | undefined;
  readonly kthread: Place | undefined;
}

interface Cluster {
  readonly start: number;
  readonly length: number;
}

/** Spans at most this far apart are read as one: a read costs more than the bytes between. */
const CLUSTER_GAP = 512;

function mergeSpans(spans: readonly (readonly [number, number])[]): Cluster[] {
  const out: { start: number; length: number }[] = [];
  for (const [at, n] of [...spans].sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1];
    if (last && at <= last.start + last.length + CLUSTER_GAP)
      last.length = Math.max(last.length, at + n - last.start);
    else out.push({ start: at, length: n });
  }
  return out;
}

/**
 * BTF's sizeof(task_struct) counts a full FPU state that the kernel sizes at boot and
 * allocates shorter; `thread` (with the FPU) is the last member, so nothing we read may lie
 * at or beyond it.
 */
function checkObjectBound(layout: StructLayout, end: number): void {
  const limit = layout.findOffset("task_struct", "thread") ?? layout.findSize("task_struct");
  if (limit !== undefined && end > limit) {
    throw new VmsightError(
      "E_MEMBER_UNKNOWN",
      `task_struct members used for listing end at ${end}, past ${limit} where the real allocation may end`,
      { hint: `layout source: ${layout.source}` },
    );
  }
}

function credOffsets(layout: StructLayout): TaskOffsets["credIds"] {
  const uid = layout.findOffset("cred", "uid");
  const gid = layout.findOffset("cred", "gid");
  const euid = layout.findOffset("cred", "euid");
  if (uid === undefined || gid === undefined || euid === undefined) return undefined;
  const start = Math.min(uid, gid, euid);
  return { uid, gid, euid, start, length: Math.max(uid, gid, euid) + 4 - start };
}

/** The fields of one task_struct, from one guest read. */
interface RawTask {
  readonly addr: VirtAddr;
  readonly pid: number;
  readonly tgid: number;
  readonly flags: number;
  readonly stateValue: number;
  readonly exitState: number;
  readonly mm: bigint;
  readonly realParent: bigint;
  readonly cred: bigint | undefined;
  readonly kthread: bigint | undefined;
  /** tasks.next: the next task on the tasks list (its list_head). */
  readonly next: bigint;
  /** comm up to its NUL (all of it without one). */
  readonly commBytes: Buffer;
  readonly commTerminated: boolean;
}

function readRawTask(ctx: KernelContext, addr: VirtAddr): RawTask {
  const o = taskOffsets(ctx.layout);
  const parts = o.clusters.map((c) => ctx.kernel.peek(va(addr + BigInt(c.start)), c.length));
  return decodeRawTask(
    o,
    addr,
    { bytes: parts, views: parts.map(viewOf) },
    o.clusters.map(() => 0),
  );
}

/** Clusters of task_structs as read: cluster i of each in bytes[i] (and views[i], over the same bytes). */
interface TaskParts {
  readonly bytes: readonly Buffer[];
  readonly views: readonly DataView[];
}

/** The task_struct at `addr` from its clusters: cluster i lies in parts.bytes[i] from byte at[i]. */
function decodeRawTask(o: TaskOffsets, addr: VirtAddr, parts: TaskParts, at: readonly number[]): RawTask {
  const { places: p } = o;
  const u32 = (m: Place) => parts.views[m.part]!.getUint32(at[m.part]! + m.at, true);
  const u64 = (m: Place) => parts.views[m.part]!.getBigUint64(at[m.part]! + m.at, true);
  const commAt = at[p.comm.part]! + p.comm.at;
  const comm = parts.bytes[p.comm.part]!.subarray(commAt, commAt + o.commSize);
  const nul = comm.indexOf(0);
  return {
    addr,
    pid: u32(p.pid) | 0,
    tgid: u32(p.tgid) | 0,
    flags: u32(p.flags),
    // `long state` before 5.14: its low half carries every bit that is reported.
    stateValue: u32(p.state),
    exitState: p.exitState === undefined ? 0 : u32(p.exitState) | 0,
    mm: u64(p.mm),
    realParent: u64(p.realParent),
    cred: p.cred === undefined ? undefined : u64(p.cred),
    kthread: p.kthread === undefined ? undefined : u64(p.kthread),
    next: u64(p.tasks),
    // A copy: the part may be a live view of guest RAM, and the name outlives this read.
    commBytes: Buffer.from(nul < 0 ? comm : comm.subarray(0, nul)),
    commTerminated: nul >= 0,
  };
}

/**
 * The task_structs at `addrs`, each cluster of all of them read in one batch; a task missing
 * from the answer could not be read that way (the walk reads it alone, and reports why).
 */
function readRawTasks(ctx: KernelContext, addrs: readonly VirtAddr[]): Map<bigint, RawTask> {
  const o = taskOffsets(ctx.layout);
  const parts = o.clusters.map((c) => ctx.kernel.readPacked(addrs, c.length, c.start));
  const bytes = parts.map((r) => r.out);
  const views = { bytes, views: bytes.map(viewOf) };
  const found = new Map<bigint, RawTask>();
  for (let k = 0; k < addrs.length; k++) {
    if (!parts.every((r) => r.ok[k] === 1)) continue;
    const at = o.clusters.map((c) => k * c.length);
    found.set(addrs[k]!, decodeRawTask(o, addrs[k]!, views, at));
  }
  return found;
}

interface Ids {
  uid: number | undefined;
  gid: number | undefined;
  euid: number | undefined;
}

function readIds(
  ctx: KernelContext,
  cred: bigint | undefined,
  warnings: string[],
  readAhead?: ReadonlyMap<bigint, Ids>,
): Ids {
  const ids = taskOffsets(ctx.layout).credIds;
  const none = { uid: undefined, gid: undefined, euid: undefined };
  if (cred === undefined || ids === undefined) return none;
  const known = readAhead?.get(cred);
  if (known) return known;
  if (!isKernelPointer(cred, ctx.bounds)) {
    warnings.push(`cred pointer ${hex(cred)} is not a kernel pointer`);
    return none;
  }
  try {
    return idsAt(ctx.kernel.peek(va(cred + BigInt(ids.start)), ids.length), 0, ids);
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`cred at ${hex(cred)} is unreadable: ${error.message}`);
    return none;
  }
}

function idsAt(b: Buffer, at: number, ids: NonNullable<TaskOffsets["credIds"]>): Ids {
  const from = at - ids.start;
  return {
    uid: b.readUInt32LE(from + ids.uid),
    gid: b.readUInt32LE(from + ids.gid),
    euid: b.readUInt32LE(from + ids.euid),
  };
}

/**
 * The ids in every task's cred, all creds read in one batch (kernel threads share init_cred: it
 * is read once). A cred missing from the answer is read alone by readIds, which reports why.
 */
function readAllIds(ctx: KernelContext, raws: readonly RawTask[]): Map<bigint, Ids> {
  const found = new Map<bigint, Ids>();
  const ids = taskOffsets(ctx.layout).credIds;
  if (!ids) return found;
  const creds = new Set<bigint>();
  for (const r of raws) if (r.cred !== undefined && isKernelPointer(r.cred, ctx.bounds)) creds.add(r.cred);
  const addrs = [...creds];
  const got = ctx.kernel.readPacked(addrs, ids.length, ids.start);
  for (let k = 0; k < addrs.length; k++)
    if (got.ok[k] === 1) found.set(addrs[k]!, idsAt(got.out, k * ids.length, ids));
  return found;
}

/** real_parent's tgid, from tasks already read when possible (one read otherwise). */
function parentTgid(
  ctx: KernelContext,
  raw: RawTask,
  known: Map<bigint, number>,
  warnings: string[],
): number {
  const hit = known.get(raw.realParent);
  if (hit !== undefined) return hit;
  if (!isKernelPointer(raw.realParent, ctx.bounds)) {
    warnings.push(`real_parent ${hex(raw.realParent)} is not a kernel pointer`);
    return 0;
  }
  try {
    const off = taskOffsets(ctx.layout).tgid;
    const tgid = ctx.kernel.read(va(raw.realParent + BigInt(off)), 4).readInt32LE(0);
    known.set(raw.realParent, tgid);
    return tgid;
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`real_parent at ${hex(raw.realParent)} is unreadable`);
    return 0;
  }
}

function toTaskInfo(
  ctx: KernelContext,
  raw: RawTask,
  known: Map<bigint, number>,
  opts: TaskOptions,
  credIds?: ReadonlyMap<bigint, Ids>,
): TaskInfo {
  const warnings: string[] = [];
  if (!raw.commTerminated) warnings.push("comm has no NUL terminator");
  const ppid = parentTgid(ctx, raw, known, warnings);
  const ids = readIds(ctx, raw.cred, warnings, credIds);
  const isKernelThread = (raw.flags & PF_KTHREAD) !== 0;
  const comm = decodeGuestBytes(raw.commBytes);
  return {
    addr: raw.addr,
    pid: raw.pid,
    tgid: raw.tgid,
    ppid,
    ...ids,
    comm,
    name: procTaskName(ctx, raw, undefined, comm),
    state: taskStateLetter(raw.stateValue, raw.exitState, opts.stateRules ?? CURRENT_STATE_RULES),
    stateValue: raw.stateValue,
    exitState: raw.exitState,
    flags: raw.flags,
    isKernelThread,
    mm: isKernelThread ? 0n : raw.mm,
    realParent: va(raw.realParent),
    warnings,
  };
}

/** The idle task of CPU 0, the head of the tasks list (pid 0, not shown by /proc). */
export function initTask(ctx: KernelContext): VirtAddr {
  return va(ctx.symbols.getAddress("init_task"));
}

/** One task_struct at a known address (e.g. the current task of a CPU). */
export function readTask(ctx: KernelContext, addr: VirtAddr, opts: TaskOptions = {}): TaskInfo {
  return toTaskInfo(ctx, readRawTask(ctx, addr), new Map([[initTask(ctx), 0]]), opts);
}

/** Every process (thread-group leader) on `init_task.tasks`, like the numeric entries of /proc. */
export function listTasks(ctx: KernelContext, opts: TaskOptions = {}): TaskInfo[] {
  // Fails on a missing member before anything is read.
  const tasksAt = BigInt(taskOffsets(ctx.layout).tasks);
  // The walk is a chain of dependent reads (on memory read by system calls, a call each). The
  // pid table says where the leaders are, in a few batched reads: their task_structs are read in
  // one batch first. Only a hint: the walk follows, checks and reports the list itself.
  const ahead = readRawTasks(ctx, leaderTaskHints(ctx).map(va));
  // Each task_struct's parts are read as the walk reaches it (or were, ahead), `tasks` among
  // them: its `next` pointer is then taken from that read instead of a read of its own.
  const links = { last: -1n, next: 0n };
  const mem: LinkMemory = {
    bounds: ctx.bounds,
    readU64: (at) => (at === links.last ? links.next : ctx.kernel.readU64(va(at))),
  };
  const raws: RawTask[] = [];
  for (const node of listForEach(mem, initTask(ctx) + tasksAt, "task_struct.tasks")) {
    const addr = va(node - tasksAt);
    try {
      const raw = ahead.get(addr) ?? readRawTask(ctx, addr);
      raws.push(raw);
      links.last = node;
      links.next = raw.next;
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      throw new GuestDataError(`task_struct ${hex(addr)} on the tasks list is unreadable`, { cause: error });
    }
  }
  const known = new Map<bigint, number>([[initTask(ctx), 0]]);
  for (const r of raws) known.set(r.addr, r.tgid);
  const credIds = readAllIds(ctx, raws);
  return raws.map((r) => toTaskInfo(ctx, r, known, opts, credIds));
}

/**
 * `nr_processes()`: the sum over possible CPUs of the per-CPU `process_counts`, which
 * copy_process() raises and __unhash_process() lowers exactly where a thread-group leader joins
 * and leaves init_task.tasks. Undefined without the symbol or the per-CPU offsets.
 */
export function nrProcesses(ctx: KernelContext): number | undefined {
  const counter = ctx.symbols.findAddress("process_counts");
  if (counter === undefined || ctx.perCpuOffsets.length === 0) return undefined;
  let sum = 0n;
  for (const base of ctx.perCpuOffsets) sum += ctx.kernel.readU64(va(base + counter));
  return Number(BigInt.asIntN(64, sum));
}

/**
 * On a paused guest the tasks list holds exactly nr_processes() entries: fewer means a process
 * was unlinked from it (the PID namespace still has it: `vmsight pids`).
 */
export function taskListWarnings(ctx: KernelContext, listed: number): string[] {
  const counted = nrProcesses(ctx);
  if (counted === undefined || counted === listed) return [];
  return [
    `the task_struct.tasks list has ${listed} processes but the kernel counts ${counted} (process_counts): ${counted > listed ? "some are unlinked from the list; `vmsight pids` lists them" : "the list holds tasks the kernel does not count"}`,
  ];
}

/** Addresses of the threads of `task`'s thread group, in list order. */
export function threadAddresses(ctx: KernelContext, task: VirtAddr): VirtAddr[] {
  const L = ctx.layout;
  const signalOff = L.findOffset("task_struct", "signal");
  const headOff = L.findOffset("signal_struct", "thread_head");
  if (
    signalOff !== undefined &&
    headOff !== undefined &&
    L.findOffset("task_struct", "thread_node") !== undefined
  ) {
    const signal = checkKernelPointer(
      ctx.kernel.readU64(va(task + BigInt(signalOff))),
      ctx.bounds,
      `signal of task ${hex(task)}`,
    );
    return [...listForEachEntry(ctx, va(signal + BigInt(headOff)), "task_struct", "thread_node")];
  }
  if (L.findOffset("task_struct", "thread_group") !== undefined) {
    // Before 6.7 every thread sits on a headless ring: walking from `task` yields the others.
    const groupOff = BigInt(L.offsetof("task_struct", "thread_group"));
    const others = [...listForEachEntry(ctx, va(task + groupOff), "task_struct", "thread_group")];
    return [task, ...others];
  }
  throw new VmsightError(
    "E_MEMBER_UNKNOWN",
    "listing threads needs task_struct.signal with signal_struct.thread_head and task_struct.thread_node, or task_struct.thread_group",
    { hint: `layout source: ${L.source}` },
  );
}

/** Every thread of the process `task` belongs to (including `task`), the leader first. */
export function listThreads(
  ctx: KernelContext,
  task: TaskInfo | VirtAddr,
  opts: TaskOptions = {},
): TaskInfo[] {
  const addr = typeof task === "bigint" ? task : task.addr;
  const raws = threadAddresses(ctx, addr).map((a) => readRawTask(ctx, a));
  // The leader is first on thread_head unless a non-leader exec()ed and took its place.
  const leader = raws.findIndex((r) => r.pid === r.tgid);
  if (leader > 0) raws.unshift(...raws.splice(leader, 1));
  const known = new Map<bigint, number>([[initTask(ctx), 0]]);
  for (const r of raws) known.set(r.addr, r.tgid);
  return raws.map((r) => toTaskInfo(ctx, r, known, opts));
}

/** Every thread of every process, grouped by process in list order (what /proc/<pid>/task shows). */
export function listAllThreads(ctx: KernelContext, opts: TaskOptions = {}): TaskInfo[] {
  const out: TaskInfo[] = [];
  for (const proc of listTasks(ctx, opts)) {
    try {
      out.push(...listThreads(ctx, proc, opts));
    } catch (error) {
      if (!(error instanceof VmsightError)) throw error;
      out.push({ ...proc, warnings: [...proc.warnings, `thread list unreadable: ${error.message}`] });
    }
  }
  return out;
}

const RELEASE_SIZE = 65;
const BANNER_MAX = 1024;
const CMDLINE_MAX = 16 * 1024;

/** `uname -r`: init_uts_ns.name.release, or the release word of linux_banner. */
export function kernelRelease(ctx: KernelContext): string {
  const uts = ctx.symbols.findAddress("init_uts_ns");
  const off = ctx.layout.findOffset("uts_namespace", "name.release");
  let problem = "init_uts_ns or uts_namespace.name.release is unknown";
  if (uts !== undefined && off !== undefined) {
    const release = readFixedString(ctx.kernel.read(va(uts + BigInt(off)), RELEASE_SIZE), 0, RELEASE_SIZE);
    if (/^[\x21-\x7e]+$/.test(release)) return release;
    problem = `init_uts_ns.name.release is not a release string: ${JSON.stringify(release)}`;
  }
  const banner = ctx.symbols.findAddress("linux_banner");
  if (banner !== undefined) {
    const text = decodeGuestBytes(readStringBytes(ctx.kernel, va(banner), BANNER_MAX).bytes);
    const parsed = parseBanner(text);
    if (parsed) return parsed.release;
    throw new GuestDataError(`${problem}, and linux_banner does not start with "Linux version"`);
  }
  throw new VmsightError("E_SYMBOL_UNKNOWN", `kernel release: ${problem}, and linux_banner is unknown`);
}

/** `/proc/cmdline`: the string `saved_command_line` points to. */
export function kernelCommandLine(ctx: KernelContext): string {
  const ptr = ctx.kernel.readU64(va(ctx.symbols.getAddress("saved_command_line")));
  const str = checkKernelPointer(ptr, ctx.bounds, "saved_command_line");
  return decodeGuestBytes(readStringBytes(ctx.kernel, str, CMDLINE_MAX).bytes);
}
