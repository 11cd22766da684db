import { type VirtAddr, hex, va } from "../../util/address.js";
import { viewOf } from "../../util/data-view.js";
import { FaultError, GuestDataError } from "../../util/errors.js";
import type { KernelContext } from "./context.js";
import { isKernelPointer } from "./walk.js";

/** An XArray node holds 64 slots; a 64-bit index needs at most 11 levels of them. */
const XA_CHUNK = 64;
const MAX_DEPTH = 11;
const MAX_NODES = 1 << 20;
const PIDTYPE_PID = 0;
/**
 * enum pid_type has begun PIDTYPE_PID, PIDTYPE_TGID since 4.19. A constant: asking the BTF for an
 * enumerator indexes every enum of the kernel, a cost of its own on the first command on a build.
 */
const PIDTYPE_TGID = 1;

export interface PidEntry {
  /** The pid number in the initial namespace (`numbers[0].nr`). */
  readonly nr: number;
  readonly pid: VirtAddr;
  /** The task this pid belongs to, from `pid->tasks[PIDTYPE_PID]`; undefined for a pid no task holds. */
  readonly task: VirtAddr | undefined;
}

/**
 * What an XArray slot holds. Internal entries are tagged 0b10 in their low bits: a node pointer
 * (above 4 KiB) or a sibling/retry marker (below), which carry no value; entries with bit 0 set
 * are XArray values, not pointers. Undefined for an empty slot or anything without a pointer.
 */
function xaSlot(entry: bigint): { entry: bigint } | { node: bigint } | undefined {
  if (entry === 0n || (entry & 1n) === 1n) return undefined;
  if ((entry & 3n) !== 2n) return { entry };
  return entry < 4096n ? undefined : { node: entry - 2n };
}

/** Every entry of an XArray (`xa_head`), in index order (see xaSlot for the tagging). */
export function* xarrayEntries(
  ctx: KernelContext,
  head: bigint,
): Generator<{ index: bigint; entry: bigint }> {
  const slotsAt = BigInt(ctx.layout.offsetof("xa_node", "slots"));
  const shiftAt = BigInt(ctx.layout.offsetof("xa_node", "shift"));
  const seen = new Set<bigint>();
  // `shift` is what the parent implies: each level down covers 6 bits fewer. A node that says
  // otherwise would repeat or reorder indexes.
  function* visit(
    entry: bigint,
    base: bigint,
    depth: number,
    shift?: bigint,
  ): Generator<{ index: bigint; entry: bigint }> {
    const slot = xaSlot(entry);
    if (slot === undefined) return;
    if ("entry" in slot) {
      yield { index: base, entry };
      return;
    }
    const { node } = slot;
    if (!isKernelPointer(node, ctx.bounds))
      throw new GuestDataError(`xarray node ${hex(node)} is not a kernel pointer`);
    if (depth > MAX_DEPTH) throw new GuestDataError(`xarray deeper than ${MAX_DEPTH} levels at ${hex(node)}`);
    if (seen.has(node) || seen.size >= MAX_NODES)
      throw new GuestDataError(`xarray node ${hex(node)} revisited or too many nodes`);
    seen.add(node);
    const { own, slots } = guestRead(`xarray node ${hex(node)}`, () => ({
      own: BigInt(ctx.kernel.readU8(va(node + shiftAt))),
      slots: ctx.kernel.read(va(node + slotsAt), XA_CHUNK * 8),
    }));
    if (own > 60n || own % 6n !== 0n || (shift !== undefined && own !== shift))
      throw new GuestDataError(
        `xarray node ${hex(node)} has shift ${own}${shift === undefined ? "" : `, its parent implies ${shift}`}`,
      );
    for (let i = 0; i < XA_CHUNK; i++) {
      yield* visit(slots.readBigUInt64LE(i * 8), base + (BigInt(i) << own), depth + 1, own - 6n);
    }
  }
  yield* visit(head, 0n, 0);
}

/**
 * The initial PID namespace's view of the system: every allocated pid (threads included) and
 * its task, from `init_pid_ns.idr`. It does not depend on the `tasks` list, so a task unlinked
 * from that list (a classic rootkit trick) still shows up here.
 */
export function pidNamespaceEntries(ctx: KernelContext): PidEntry[] {
  const L = ctx.layout;
  const ns = ctx.symbols.getAddress("init_pid_ns");
  const { head, base } = guestRead("init_pid_ns", () => ({
    head: ctx.kernel.readU64(va(ns + BigInt(L.offsetof("pid_namespace", "idr.idr_rt.xa_head")))),
    base: BigInt(ctx.kernel.readU32(va(ns + BigInt(L.offsetof("pid_namespace", "idr.idr_base"))))),
  }));
  const nrAt = BigInt(L.offsetof("pid", "numbers") + L.offsetof("upid", "nr"));
  const tasksAt = BigInt(L.offsetof("pid", "tasks") + PIDTYPE_PID * 8);
  const linkAt = BigInt(L.offsetof("task_struct", "pid_links") + PIDTYPE_PID * L.sizeof("hlist_node"));
  const out: PidEntry[] = [];
  for (const { index, entry } of xarrayEntries(ctx, head)) {
    if (!isKernelPointer(entry, ctx.bounds))
      throw new GuestDataError(`pid idr slot ${index} holds ${hex(entry)}`);
    const { nr, first } = guestRead(`struct pid ${hex(entry)} (idr index ${index + base})`, () => ({
      nr: ctx.kernel.readU32(va(entry + nrAt)),
      first: ctx.kernel.readU64(va(entry + tasksAt)),
    }));
    if (BigInt(nr) !== index + base) {
      throw new GuestDataError(`struct pid ${hex(entry)} says ${nr} but sits at idr index ${index + base}`);
    }
    if (first !== 0n && !isKernelPointer(first - linkAt, ctx.bounds)) {
      throw new GuestDataError(`pid ${nr}: tasks[PIDTYPE_PID] ${hex(first)} is not a task's pid_links`);
    }
    out.push({ nr, pid: va(entry), task: first === 0n ? undefined : va(first - linkAt) });
  }
  return out;
}

/** Runs guest reads; a fault becomes a GuestDataError naming the object that could not be read. */
function guestRead<T>(what: string, read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (!(error instanceof FaultError)) throw error;
    throw new GuestDataError(`${what} is unreadable`, { cause: error });
  }
}

/** More pids than this in the hint is not a process table but noise: stop reading it. */
const MAX_HINTS = 1 << 20;

/**
 * Addresses of the thread-group leaders in the initial PID namespace's pid table, read one level
 * of the table at a time (one batch per level, then one for the pids): a hint of where the
 * tasks list's task_structs lie, so that they can all be fetched in one batch before the list,
 * a chain of dependent reads, is walked. A leader's pid has `tasks[PIDTYPE_TGID]` pointing at
 * its `pid_links[PIDTYPE_TGID]`; a thread's has it empty. Never throws: anything odd ends the
 * hint early, since the walk that follows reads, checks and reports everything itself. Empty
 * when the layout lacks a member it needs (an offsets profile).
 */
export function leaderTaskHints(ctx: KernelContext): bigint[] {
  const L = ctx.layout;
  const ns = ctx.symbols.findAddress("init_pid_ns");
  const headAt = L.findOffset("pid_namespace", "idr.idr_rt.xa_head");
  const slotsAt = L.findOffset("xa_node", "slots");
  const tasksAt = L.findOffset("pid", "tasks");
  const linksAt = L.findOffset("task_struct", "pid_links");
  const hlist = L.findSize("hlist_node");
  if ([ns, headAt, slotsAt, tasksAt, linksAt, hlist].includes(undefined)) return [];
  try {
    const pids = pidTableEntries(ctx, ctx.kernel.readU64(va(ns! + BigInt(headAt!))), slotsAt!);
    const first = BigInt(tasksAt! + PIDTYPE_TGID * 8);
    const nodes = ctx.kernel.readPacked(pids, 8, tasksAt! + PIDTYPE_TGID * 8);
    const link = BigInt(linksAt! + PIDTYPE_TGID * hlist!);
    const view = viewOf(nodes.out);
    const out: bigint[] = [];
    for (let k = 0; k < pids.length; k++) {
      const node =
        nodes.ok[k] === 1 ? view.getBigUint64(k * 8, true) : ctx.kernel.readU64(va(pids[k]! + first));
      if (node !== 0n && isKernelPointer(node, ctx.bounds)) out.push(node - link);
    }
    return out;
  } catch (error) {
    if (!(error instanceof FaultError) && !(error instanceof GuestDataError)) throw error;
    return [];
  }
}

/**
 * The pointers an XArray holds, a level at a time (see xaSlot for the tagging). Each node
 * is read once, and no more of them than a table of MAX_HINTS pids has: a hostile table costs at
 * most a few megabytes of reads.
 */
function pidTableEntries(ctx: KernelContext, head: bigint, slotsAt: number): bigint[] {
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  let level = [head];
  for (let depth = 0; level.length > 0 && depth <= MAX_DEPTH; depth++) {
    const nodes: bigint[] = [];
    for (const entry of level) {
      const slot = xaSlot(entry);
      if (slot === undefined) continue;
      if ("entry" in slot) {
        if (isKernelPointer(slot.entry, ctx.bounds)) out.push(slot.entry);
      } else if (isKernelPointer(slot.node, ctx.bounds) && !seen.has(slot.node)) {
        seen.add(slot.node);
        nodes.push(slot.node);
      }
    }
    if (out.length > MAX_HINTS || seen.size > MAX_HINTS / XA_CHUNK) break;
    const got = ctx.kernel.readPacked(nodes, XA_CHUNK * 8, slotsAt);
    const packed = viewOf(got.out);
    level = nodes.flatMap((n, k) => {
      // One not read in the batch is read alone: its fault ends the hint (leaderTaskHints).
      const slots = got.ok[k] === 1 ? packed : viewOf(ctx.kernel.read(va(n + BigInt(slotsAt)), XA_CHUNK * 8));
      const at = got.ok[k] === 1 ? k * XA_CHUNK * 8 : 0;
      return Array.from({ length: XA_CHUNK }, (_, i) => slots.getBigUint64(at + i * 8, true));
    });
  }
  return out;
}
