import type { AddressSpace } from "../../arch/x86/address-space.js";
import { PAGE_SIZE, type VirtAddr, va } from "../../util/address.js";
import { VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { isKernelPointer } from "./walk.js";

/**
 * The name /proc/<pid>/stat shows between parentheses: `proc_task_name()` in fs/proc/array.c.
 *
 *   PF_WQ_WORKER -> wq_worker_comm()   (kernel/workqueue.c)
 *   PF_KTHREAD   -> get_kthread_comm() (kernel/kthread.c)
 *   otherwise    -> task->comm
 *
 * Both helpers write into a 64-byte buffer (`char tcomm[64]`), so names stop at 63 bytes. The name
 * is built from bytes and decoded once at the end, so the 63-byte cut falls where the kernel's does.
 * Everything read here beyond task_struct is optional decoration: any failure (missing
 * member, unreadable or non-kernel pointer) falls back to comm instead of throwing.
 */
export const PF_WQ_WORKER = 0x00000020;
export const PF_KTHREAD = 0x00200000;

/** sizeof(tcomm) in proc_task_name(): names are at most this minus the NUL. */
export const TCOMM_SIZE = 64;
/** WORKER_DESC_LEN before 6.10, when it became 32 (and the layout says which). */
const DEFAULT_WORKER_DESC = 24;

/** What proc_task_name() needs from task_struct, already read by the caller. */
export interface NameInputs {
  readonly flags: number;
  /** task->comm up to its NUL. */
  readonly commBytes: Buffer;
  /** `task->worker_private` (or `set_child_tid` before 5.19): the `struct kthread` of a kernel thread. */
  readonly kthread: bigint | undefined;
}

/**
 * How wq_worker_comm() starts the name. Before 6.10 it copies task->comm; from 6.10
 * ("workqueue: Refactor worker ID formatting and make wq_worker_comm() use full ID string")
 * it formats the worker id again, which equals the kthread's full name except for a worker
 * that left its pool ("kworker/dying").
 */
export type WorkerIdStyle = "comm" | "full-id";

/** `comm`: t.commBytes already decoded, reused when the name is comm itself (any user process). */
export function procTaskName(
  ctx: KernelContext,
  t: NameInputs,
  style?: WorkerIdStyle,
  comm?: string,
): string {
  const bytes = procTaskNameBytes(ctx, t, style);
  return comm !== undefined && bytes === t.commBytes ? comm : decodeGuestBytes(bytes);
}

function procTaskNameBytes(ctx: KernelContext, t: NameInputs, style?: WorkerIdStyle): Buffer {
  try {
    if (t.flags & PF_WQ_WORKER) return wqWorkerComm(ctx, t, style ?? workerIdStyle(ctx));
    if (t.flags & PF_KTHREAD) return kthreadComm(ctx, t);
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
  }
  return clip(t.commBytes);
}

/** 6.10 widened `worker.desc` to 32 bytes in the same release that introduced the full worker id. */
export function workerIdStyle(ctx: KernelContext): WorkerIdStyle {
  return workerDescSize(ctx) >= 32 ? "full-id" : "comm";
}

/**
 * sizeof(worker.desc): from the types, or, with an offsets profile (no sizes), from the member
 * declared right after it, rescue_wq (24 bytes plus padding before 6.10, 32 since).
 */
function workerDescSize(ctx: KernelContext): number {
  const L = ctx.layout;
  const size = L.memberSize("worker", "desc");
  if (size !== undefined) return size;
  const desc = L.findOffset("worker", "desc");
  const next = L.findOffset("worker", "rescue_wq");
  const gap = desc !== undefined && next !== undefined ? next - desc : undefined;
  return gap !== undefined && gap >= DEFAULT_WORKER_DESC && gap <= 32 ? gap : DEFAULT_WORKER_DESC;
}

interface KthreadFields {
  readonly data: bigint | undefined;
  readonly fullName: bigint | undefined;
}

/** get_kthread_comm(): the full name kthread_create() kept when comm had to be truncated. */
function kthreadComm(ctx: KernelContext, t: NameInputs): Buffer {
  const k = readKthread(ctx, t.kthread);
  return kthreadName(ctx, k, t.commBytes);
}

function kthreadName(ctx: KernelContext, k: KthreadFields | undefined, comm: Buffer): Buffer {
  if (!k?.fullName || !isKernelPointer(k.fullName, ctx.bounds)) return clip(comm);
  return readStringBytes(ctx.kernel, va(k.fullName), TCOMM_SIZE - 1).bytes;
}

function readKthread(ctx: KernelContext, ptr: bigint | undefined): KthreadFields | undefined {
  if (ptr === undefined || !isKernelPointer(ptr, ctx.bounds)) return undefined;
  const data = ctx.layout.findOffset("kthread", "data");
  const fullName = ctx.layout.findOffset("kthread", "full_name");
  const present = [data, fullName].filter((o): o is number => o !== undefined);
  if (present.length === 0) return undefined;
  const start = Math.min(...present);
  const bytes = ctx.kernel.read(va(ptr + BigInt(start)), Math.max(...present) + 8 - start);
  const at = (o: number | undefined) => (o === undefined ? undefined : bytes.readBigUInt64LE(o - start));
  return { data: at(data), fullName: at(fullName) };
}

interface WorkerFields {
  readonly currentWork: bigint;
  readonly pool: bigint;
  readonly rescueWq: bigint;
  readonly desc: Buffer;
}

/** wq_worker_comm(): the worker id, then "+desc" while running a work item, "-desc" after. */
function wqWorkerComm(ctx: KernelContext, t: NameInputs, style: WorkerIdStyle): Buffer {
  const k = readKthread(ctx, t.kthread);
  // kthread_data(task): the worker_thread() argument, the struct worker.
  const w =
    k?.data !== undefined && isKernelPointer(k.data, ctx.bounds) ? readWorker(ctx, k.data) : undefined;
  if (!w) return clip(t.commBytes);
  let base: Buffer;
  if (style === "comm") base = clip(t.commBytes);
  else if (w.rescueWq === 0n && w.pool === 0n) base = Buffer.from("kworker/dying");
  // The id was formatted from this same worker and pool when the kthread was created.
  else base = kthreadName(ctx, k, t.commBytes);
  if (w.pool === 0n || w.desc.length === 0) return base;
  return clip(Buffer.concat([base, Buffer.from(w.currentWork !== 0n ? "+" : "-"), w.desc]));
}

function readWorker(ctx: KernelContext, addr: bigint): WorkerFields | undefined {
  const L = ctx.layout;
  const currentWork = L.findOffset("worker", "current_work");
  const pool = L.findOffset("worker", "pool");
  const desc = L.findOffset("worker", "desc");
  if (currentWork === undefined || pool === undefined || desc === undefined) return undefined;
  const rescueWq = L.findOffset("worker", "rescue_wq");
  const descSize = workerDescSize(ctx);
  const ends = [currentWork + 8, pool + 8, desc + descSize, rescueWq === undefined ? 0 : rescueWq + 8];
  const starts = [currentWork, pool, desc, rescueWq ?? desc];
  const start = Math.min(...starts);
  const bytes = ctx.kernel.read(va(addr + BigInt(start)), Math.max(...ends) - start);
  const descBytes = bytes.subarray(desc - start, desc - start + descSize);
  const nul = descBytes.indexOf(0);
  return {
    currentWork: bytes.readBigUInt64LE(currentWork - start),
    pool: bytes.readBigUInt64LE(pool - start),
    rescueWq: rescueWq === undefined ? 0n : bytes.readBigUInt64LE(rescueWq - start),
    desc: nul < 0 ? descBytes : descBytes.subarray(0, nul),
  };
}

/** What fits in tcomm[64] with its NUL. */
function clip(name: Buffer): Buffer {
  return name.length > TCOMM_SIZE - 1 ? name.subarray(0, TCOMM_SIZE - 1) : name;
}

/**
 * Bytes of a C string up to its NUL or `max` bytes, reading page by page so an unmapped page
 * after the terminator does not fault. Raw bytes, because kernel strings are not UTF-8 by
 * contract (comm may be cut in the middle of a character).
 */
export function readStringBytes(
  space: AddressSpace,
  addr: VirtAddr,
  max: number,
): { bytes: Buffer; terminated: boolean } {
  const chunks: Buffer[] = [];
  let cur = BigInt(addr);
  let left = max;
  while (left > 0) {
    const n = Math.min(left, PAGE_SIZE - Number(cur % BigInt(PAGE_SIZE)));
    const chunk = space.read(va(cur), n);
    const nul = chunk.indexOf(0);
    if (nul >= 0) {
      chunks.push(chunk.subarray(0, nul));
      return { bytes: Buffer.concat(chunks), terminated: true };
    }
    chunks.push(chunk);
    left -= n;
    cur += BigInt(n);
  }
  return { bytes: Buffer.concat(chunks), terminated: false };
}
