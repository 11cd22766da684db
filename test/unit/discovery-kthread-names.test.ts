import assert from "node:assert/strict";
import { test } from "node:test";
/**
 * The kthread-name members on a crafted kernel laid out like Debian's 6.1 (struct kthread with
 * threadfn at 16, data at 24, full_name at 104; struct worker with task at 64, pool at 72,
 * desc[24] at 116, rescue_wq at 144). Every object is followed by a neighbour of the same kind,
 * as in a slab: rules must not take a neighbour's bytes for the object's own.
 */
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { Candidates } from "../../src/discovery/candidates.js";
import {
  type KthreadFacts,
  KthreadNames,
  type KthreadTask,
} from "../../src/discovery/rules/kernel-threads.js";
import type { GuestView, PageRights, PageRun } from "../../src/discovery/types.js";
import { addressBounds } from "../../src/os/linux/walk.js";

const WORKER_THREAD = 0xffffffff81090000n;
const RESCUER_THREAD = 0xffffffff81091000n;
const OTHER_FN = 0xffffffff81234560n;
const TASK_SIZE = 1024;
const WP = 800; // task_struct.worker_private
const K = { threadfn: 16, data: 24, fullName: 104 };
const W = { currentWork: 16, task: 64, pool: 72, desc: 116, rescueWq: 144 };
const PF_WQ_WORKER = 0x20;
const PF_KTHREAD = 0x00200000;

class Memory implements GuestView {
  readonly bounds = addressBounds(X86_64_4LEVEL);
  private readonly regions: { addr: bigint; bytes: Buffer }[] = [];
  private next = 0xffff888000100000n;

  /** `size` bytes of a fresh object, with a same-sized neighbour after it holding `neighbour`. */
  object(size: number, neighbour: (b: Buffer) => void = () => {}): { addr: bigint; bytes: Buffer } {
    const addr = this.next;
    const bytes = Buffer.alloc(size * 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff;
    neighbour(bytes.subarray(size));
    this.regions.push({ addr, bytes });
    this.next += BigInt(size * 2 + 4096);
    return { addr, bytes };
  }
  read(addr: bigint, length: number): Buffer | undefined {
    const r = this.regions.find(
      (x) => addr >= x.addr && addr + BigInt(length) <= x.addr + BigInt(x.bytes.length),
    );
    return r
      ? Buffer.from(r.bytes.subarray(Number(addr - r.addr), Number(addr - r.addr) + length))
      : undefined;
  }
  translate(): bigint | undefined {
    return undefined;
  }
  kernelPage(): PageRights | undefined {
    return undefined;
  }
  userPage(): PageRights | undefined {
    return undefined;
  }
  userRuns(): readonly PageRun[] | undefined {
    return undefined;
  }
  readUser(): Buffer | undefined {
    return undefined;
  }
}

function task(mem: Memory, comm: string, flags: number, worker_private: bigint, mm = 0n): KthreadTask {
  const t = mem.object(TASK_SIZE);
  t.bytes.writeBigUInt64LE(worker_private, WP);
  return { addr: t.addr, flags, mm, comm, u64: (o) => t.bytes.readBigUInt64LE(o) };
}

/** A kworker: its struct kthread and struct worker; `rescueOf` makes it a rescuer. */
function kworker(mem: Memory, comm: string, desc: string, rescueOf?: bigint): KthreadTask {
  const rescuer = rescueOf !== undefined;
  const worker = mem.object(256, (n) => n.writeBigUInt64LE(RESCUER_THREAD, 8));
  const kthread = mem.object(128, (n) =>
    n.writeBigUInt64LE(rescuer ? WORKER_THREAD : RESCUER_THREAD, K.threadfn),
  );
  kthread.bytes.writeBigUInt64LE(rescuer ? RESCUER_THREAD : WORKER_THREAD, K.threadfn);
  kthread.bytes.writeBigUInt64LE(worker.addr, K.data);
  kthread.bytes.writeBigUInt64LE(0n, K.fullName);
  const t = task(mem, comm, PF_KTHREAD | PF_WQ_WORKER, kthread.addr);
  worker.bytes.writeBigUInt64LE(0n, W.currentWork);
  worker.bytes.writeBigUInt64LE(t.addr, W.task);
  worker.bytes.writeBigUInt64LE(rescuer ? 0n : 0xffff88801f231640n, W.pool);
  worker.bytes.writeUInt32LE(3, W.desc - 4); // id
  worker.bytes.fill(0, W.desc, W.desc + 28);
  worker.bytes.write(desc, W.desc, "latin1");
  worker.bytes.writeBigUInt64LE(rescueOf ?? 0n, W.rescueWq);
  return t;
}

function kthread(mem: Memory, comm: string, fullName?: string): KthreadTask {
  const name = fullName === undefined ? undefined : mem.object(64);
  if (name && fullName) {
    name.bytes.fill(0, 0, 64);
    name.bytes.write(fullName, "latin1");
  }
  const k = mem.object(128);
  k.bytes.writeBigUInt64LE(OTHER_FN, K.threadfn);
  k.bytes.writeBigUInt64LE(name?.addr ?? 0n, K.fullName);
  return task(mem, comm, PF_KTHREAD, k.addr);
}

function guest(withRescuer: boolean) {
  const mem = new Memory();
  const tasks = [
    task(mem, "init", 0x400100, 0n, 0xffff888002000000n),
    kthread(mem, "kthreadd"),
    kworker(mem, "kworker/0:0", "rcu_gp"),
    kworker(mem, "kworker/0:1", "events"),
    kworker(mem, "kworker/u2:0", "events_unbound"),
    kworker(mem, "kworker/0:2", ""),
    kthread(mem, "rcu_tasks_kthre", "rcu_tasks_kthread"),
    kthread(mem, "ksoftirqd/0"),
    task(mem, "sh", 0x400100, 0n, 0xffff888002100000n),
  ];
  if (withRescuer) tasks.push(kworker(mem, "mm_percpu_wq", "", 0xffff888003000000n));
  return { mem, tasks };
}

/** One event's worth of the rules on `guest`: the profile it yields, and what is left. */
function place(withRescuer: boolean, facts: KthreadFacts = KNOWN_FNS) {
  const { mem, tasks } = guest(withRescuer);
  const c = new Candidates();
  const names = new KthreadNames(c, facts, TASK_SIZE);
  names.observe(mem, tasks);
  const out: Record<string, number> = {};
  names.profile(out);
  return { out, names, c };
}

const KNOWN_FNS: KthreadFacts = { workerThread: WORKER_THREAD, rescuerThread: RESCUER_THREAD };

test("every kthread-name member is placed, and a slab neighbour's bytes mislead none", () => {
  const { out, names } = place(true);
  assert.deepEqual(out, {
    "task_struct.worker_private": WP,
    "kthread.data": K.data,
    "kthread.full_name": K.fullName,
    "worker.current_work": W.currentWork,
    "worker.pool": W.pool,
    "worker.desc": W.desc,
    "worker.rescue_wq": W.rescueWq,
  });
  assert.equal(names.wanted(), false);
});

test("without a rescuer, rescue_wq stays unplaced and the others do not wait for it", () => {
  const { out, names } = place(false);
  assert.equal(out["worker.rescue_wq"], undefined);
  assert.equal(out["worker.desc"], W.desc);
  assert.equal(names.wanted(), true);
});

test("a guest whose kworkers run no known thread function places nothing", () => {
  const { out, c } = place(true, { workerThread: OTHER_FN - 8n, rescuerThread: undefined });
  assert.deepEqual(out, {});
  assert.equal(c.get("task_struct.worker_private").length, 0);
});
