import { PF_KTHREAD, PF_WQ_WORKER } from "../../os/linux/task-name.js";
import { type AddressBounds, isKernelPointer } from "../../os/linux/walk.js";
import { type Candidates, offsetRange } from "../candidates.js";
import type { GuestView } from "../types.js";
import { TASK_COMM_LEN } from "./abi.js";
import type { RuleContext } from "./context.js";
import { Obj } from "./reader.js";

/**
 * The members behind the names /proc gives kernel threads (proc_task_name()): the full name a
 * kthread was created with when comm had to cut it (`rcu_tasks_kthread`, 6.10's
 * `kworker/R-mm_percpu_wq`), and a workqueue worker's last work description (`kworker/0:1-events`).
 *
 *   task_struct.worker_private -> struct kthread { ..., threadfn, data, ..., full_name }
 *   kthread.data of a kworker  -> struct worker { current_work, ..., task, pool, ..., desc, rescue_wq }
 *
 * What pins them, in guests that have kworkers (every guest):
 *   - worker_private: in every kworker it points at a struct that holds worker_thread() or
 *     rescuer_thread() (kthread.threadfn, from the kernel's symbols) at the same offset; a user
 *     process has none.
 *   - kthread.data is declared right after threadfn, and for a kworker points at a struct worker
 *     that points back at the task (worker.task).
 *   - kthread.full_name: NULL in a kthread whose comm is shorter than 15 bytes, else NULL or a
 *     string that comm is the first 15 bytes of; some kthread has one.
 *   - worker.pool: declared after worker.task; a pool worker has one, an idle rescuer none.
 *   - worker.desc: the first byte of the one printable, NUL-terminated string that workers hold
 *     (the name of the last workqueue they served), after `id`.
 *   - worker.rescue_wq: the first word after desc's 24 bytes that is a pointer in every rescuer
 *     and NULL in every pool worker. Its distance from desc is desc's size, which tells 6.10's
 *     32-byte desc (and its worker-id names) from the older 24.
 *   - worker.current_work: the first member after the 16-byte idle-list union, NULL or a
 *     pointer; a worker running an item when trapped (a usermode-helper fork) shows one.
 */
export interface KthreadTask {
  readonly addr: bigint;
  readonly flags: number;
  readonly mm: bigint;
  readonly comm: string;
  u64(off: number): bigint;
}

export interface KthreadFacts {
  readonly workerThread: bigint;
  readonly rescuerThread: bigint | undefined;
}

export const NAME_MEMBERS = [
  "task_struct.worker_private",
  "kthread.data",
  "kthread.full_name",
  "worker.current_work",
  "worker.pool",
  "worker.desc",
  "worker.rescue_wq",
] as const;

/** Bytes of struct kthread and struct worker examined (both are smaller in 6.1-6.12). */
const SPAN = 256;
const NAME_MAX = 64;
const DESC_MIN = 24;
/** Events to look at before giving up on what is still unplaced (a boot has 100-150). */
const MAX_TRIES = 64;

interface Worker {
  readonly task: KthreadTask;
  readonly kthread: Buffer;
  readonly rescuer: boolean;
  struct?: Buffer;
}

export class KthreadNames {
  private tries = 0;

  constructor(
    private readonly c: Candidates,
    private readonly facts: KthreadFacts,
    taskSize: number,
  ) {
    c.define("task_struct.worker_private", offsetRange(0, taskSize - 8, 8));
    for (const k of NAME_MEMBERS.slice(1)) c.define(k, offsetRange(0, SPAN - 8, k === "worker.desc" ? 1 : 8));
  }

  /** Still worth reading whole tasks for: something left to place, and not tried for too long. */
  wanted(): boolean {
    return this.tries < MAX_TRIES && NAME_MEMBERS.some((k) => this.c.one(k) === undefined);
  }

  observe(view: GuestView, tasks: readonly KthreadTask[]): void {
    this.tries++;
    const kworkers = tasks.filter((t) => (t.flags & PF_WQ_WORKER) !== 0 && (t.flags & PF_KTHREAD) !== 0);
    if (kworkers.length === 0) return;
    const wp = this.workerPrivate(view, tasks, kworkers);
    if (wp === undefined) return;
    const structs = kworkers.map((t) => readStruct(view, t.u64(wp)));
    if (structs.some((s) => s === undefined)) return;
    const fn = threadfnOffset(structs as Buffer[], this.threadFns());
    if (fn === undefined) return;
    // By threadfn itself: the bytes read past a small struct kthread belong to its neighbours.
    const workers: Worker[] = kworkers.map((task, i) => ({
      task,
      kthread: structs[i]!,
      rescuer: structs[i]!.readBigUInt64LE(fn) === this.facts.rescuerThread,
    }));
    const data = this.kthreadData(view, workers, fn);
    this.fullName(view, tasks, wp);
    if (data !== undefined) this.workerMembers(workers, view.bounds);
  }

  private threadFns(): bigint[] {
    return [
      this.facts.workerThread,
      ...(this.facts.rescuerThread === undefined ? [] : [this.facts.rescuerThread]),
    ];
  }

  private workerPrivate(
    view: GuestView,
    tasks: readonly KthreadTask[],
    kworkers: readonly KthreadTask[],
  ): number | undefined {
    const c = this.c;
    const k = "task_struct.worker_private";
    const users = tasks.filter((t) => (t.flags & PF_KTHREAD) === 0 && t.mm !== 0n);
    // One rule, cheapest test first: the struct reads are for the few offsets that get there.
    c.filter(k, "a kworker's struct kthread holds its thread function; a user process has none", (o) => {
      if (
        !users.every((t) => t.u64(o) === 0n) ||
        !kworkers.every((t) => isKernelPointer(t.u64(o), view.bounds))
      )
        return false;
      const structs = kworkers.map((t) => readStruct(view, t.u64(o)));
      return (
        structs.every((b) => b !== undefined) &&
        threadfnOffset(structs as Buffer[], this.threadFns()) !== undefined
      );
    });
    return c.one(k);
  }

  /** threadfn's neighbour, confirmed: the struct worker it points at points back at the task. */
  private kthreadData(view: GuestView, workers: Worker[], fn: number): number | undefined {
    const c = this.c;
    const pointsBack = (o: number) =>
      workers.every(
        (w) => readStruct(view, w.kthread.readBigUInt64LE(o))?.includes(u64Bytes(w.task.addr)) === true,
      );
    c.filter(
      "kthread.data",
      "declared after threadfn; a kworker's points at its struct worker",
      (o) => o === fn + 8 && pointsBack(o),
    );
    const data = c.one("kthread.data");
    if (data !== undefined)
      for (const w of workers) w.struct = readStruct(view, w.kthread.readBigUInt64LE(data));
    return data;
  }

  private fullName(view: GuestView, tasks: readonly KthreadTask[], wp: number): void {
    const c = this.c;
    const k = "kthread.full_name";
    if (c.one(k) !== undefined) return;
    const kthreads = tasks
      .filter((t) => (t.flags & PF_KTHREAD) !== 0)
      .map((t) => ({ t, s: readStruct(view, t.u64(wp)) }))
      .filter((x): x is { t: KthreadTask; s: Buffer } => x.s !== undefined);
    const nameAt = (s: Buffer, o: number) => {
      const p = s.readBigUInt64LE(o);
      if (p === 0n) return null;
      const b = isKernelPointer(p, view.bounds) ? view.read(p, NAME_MAX) : undefined;
      if (!b) return undefined;
      // /proc shows at most 63 bytes of it, so a longer name may end past what is read.
      const nul = b.indexOf(0);
      const name = (nul < 0 ? b : b.subarray(0, nul)).toString("latin1");
      return name.length > 0 && /^[\x20-\x7e]+$/.test(name) ? name : undefined;
    };
    const fits = (o: number) => {
      let named = 0;
      for (const { t, s } of kthreads) {
        const name = nameAt(s, o);
        if (name === undefined) return false;
        if (name === null) continue;
        if (!name.startsWith(t.comm)) return false;
        named++;
      }
      return named > 0;
    };
    const kept = c.get(k).filter(fits);
    if (kept.length > 0) c.replace(k, "the full name of kthreads whose comm is cut", kept);
  }

  private workerMembers(all: readonly Worker[], bounds: AddressBounds): void {
    const c = this.c;
    const workers = all.filter((w) => w.struct !== undefined);
    const structs = workers.map((w) => w.struct!);
    const pool = workers.filter((w) => !w.rescuer);
    const rescuers = workers.filter((w) => w.rescuer);
    const taskAt = commonOffset(structs, (s, o, i) => s.readBigUInt64LE(o) === workers[i]!.task.addr);
    if (taskAt === undefined || pool.length === 0) return;
    c.filter(
      "worker.pool",
      "declared after worker.task; set in pool workers, NULL in idle rescuers",
      (o) =>
        o === taskAt + 8 &&
        pool.every((w) => isKernelPointer(w.struct!.readBigUInt64LE(o), bounds)) &&
        rescuers.every((w) => w.struct!.readBigUInt64LE(o) === 0n),
    );
    const desc = descOffset(structs, taskAt + 16);
    if (desc !== undefined)
      c.filter("worker.desc", "the string workers keep of their last workqueue", (o) => o === desc);
    if (desc !== undefined && rescuers.length > 0) {
      const after = c
        .get("worker.rescue_wq")
        .filter(
          (o) =>
            o >= desc + DESC_MIN &&
            rescuers.every((w) => isKernelPointer(w.struct!.readBigUInt64LE(o), bounds)) &&
            pool.every((w) => w.struct!.readBigUInt64LE(o) === 0n),
        );
      if (after.length > 0) c.replace("worker.rescue_wq", "set in rescuers only, after desc", [after[0]!]);
    }
    c.filter(
      "worker.current_work",
      "first after the 16-byte idle-list union; NULL or a work item",
      (o) =>
        o === 16 &&
        structs.every((s) => s.readBigUInt64LE(o) === 0n || isKernelPointer(s.readBigUInt64LE(o), bounds)),
    );
  }

  profile(out: Record<string, number>): void {
    for (const k of NAME_MEMBERS) {
      const o = this.c.one(k);
      if (o !== undefined) out[k] = o;
    }
  }
}

function readStruct(view: GuestView, p: bigint): Buffer | undefined {
  return isKernelPointer(p, view.bounds) ? view.read(p, SPAN) : undefined;
}

function u64Bytes(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}

/**
 * The first 8-aligned offset where every struct holds one of the thread functions. The first:
 * the bytes read past a small struct kthread are its slab neighbour, which may be a kworker's too.
 */
function threadfnOffset(structs: readonly Buffer[], fns: readonly bigint[]): number | undefined {
  return offsetsWhere(structs, (s, o) => fns.includes(s.readBigUInt64LE(o)))[0];
}

/** The one 8-aligned offset where `holds` is true of every struct. */
function commonOffset(
  structs: readonly Buffer[],
  holds: (s: Buffer, o: number, i: number) => boolean,
): number | undefined {
  const found = offsetsWhere(structs, holds);
  return found.length === 1 ? found[0] : undefined;
}

function offsetsWhere(
  structs: readonly Buffer[],
  holds: (s: Buffer, o: number, i: number) => boolean,
): number[] {
  const found: number[] = [];
  for (let o = 0; o + 8 <= SPAN; o += 8)
    if (structs.every((s, i) => s.length >= o + 8 && holds(s, o, i))) found.push(o);
  return found;
}

/**
 * Start of the char array where every worker has a NUL-terminated printable string (or an empty
 * one) and some worker a non-empty one, at or after `from`: the lowest such offset, since every
 * later byte of the same strings also starts a (shorter) string.
 */
function descOffset(structs: readonly Buffer[], from: number): number | undefined {
  const printable = (b: number) => b >= 0x20 && b < 0x7f;
  const stringAt = (s: Buffer, o: number): string | undefined => {
    let i = o;
    while (i < s.length && i < o + DESC_MIN && printable(s[i]!)) i++;
    return i < s.length && s[i] === 0 ? s.subarray(o, i).toString("latin1") : undefined;
  };
  for (let o = from; o < SPAN - DESC_MIN; o++) {
    const strings = structs.map((s) => stringAt(s, o));
    if (strings.every((x) => x !== undefined) && strings.some((x) => x!.length >= 2)) return o;
  }
  return undefined;
}

/** Once flags, mm and comm are known: the members behind kernel threads' /proc names. */
export function observeKthreadNames(
  ctx: RuleContext,
  names: KthreadNames | undefined,
  view: GuestView,
  tasks: readonly Obj[],
): void {
  const c = ctx.cands;
  const [flags, mm, comm] = ["task_struct.flags", "task_struct.mm", "task_struct.comm"].map((k) => c.one(k));
  if (!names?.wanted() || flags === undefined || mm === undefined || comm === undefined) return;
  // The listing reads only the span of the awaited members by now; these lie elsewhere.
  const full = tasks.map((t) => Obj.lazy(view, t.addr, 0, ctx.facts.taskSize));
  names.observe(
    view,
    full.map((t) => ({
      addr: t.addr,
      flags: t.u32(flags),
      mm: t.u64(mm),
      comm: t.str(comm, TASK_COMM_LEN) ?? "",
      u64: (o: number) => t.u64(o),
    })),
  );
}
