import assert from "node:assert/strict";
import { test } from "node:test";
import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import type { KernelContext } from "../../src/os/linux/context.js";
import { leaderTaskHints, pidNamespaceEntries, xarrayEntries } from "../../src/os/linux/pid-ns.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import type { StructLayout } from "../../src/symbols/layout.js";
import { type VirtAddr, pa } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";

// A kernel in an identity-mapped buffer at a direct-map address, with hand-placed structures.
const BASE = 0xffff888000000000n;
const OFF: Record<string, number> = {
  "xa_node.shift": 0,
  "xa_node.slots": 40,
  "pid_namespace.idr.idr_rt.xa_head": 8,
  "pid_namespace.idr.idr_base": 16,
  "pid.numbers": 96,
  "upid.nr": 0,
  "pid.tasks": 40,
  "task_struct.pid_links": 100,
};
const layout: StructLayout = {
  source: "test",
  offsetof: (s, p) => OFF[`${s}.${p}`] ?? assert.fail(`no ${s}.${p}`),
  findOffset: (s, p) => OFF[`${s}.${p}`],
  sizeof: (s) => (s === "hlist_node" ? 16 : assert.fail(s)),
  findSize: (s) => (s === "hlist_node" ? 16 : undefined),
  memberSize: () => undefined,
  findEnumValue: () => undefined,
};

function craft() {
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(BASE, 1 << 20);
  let next = 0x1000;
  const alloc = (n: number) => {
    const at = next;
    next += (n + 63) & ~63;
    return BASE + BigInt(at);
  };
  const u64 = (a: bigint, v: bigint) => ram.writeBigUInt64LE(v, Number(a - BASE));
  const u32 = (a: bigint, v: number) => ram.writeUInt32LE(v, Number(a - BASE));
  const u8 = (a: bigint, v: number) => ram.writeUInt8(v, Number(a - BASE));
  const ns = alloc(64);
  /** A struct pid numbered `nr`, held by a fresh task; returns [pid, task]. */
  const pid = (nr: number): [bigint, bigint] => {
    const p = alloc(128);
    const task = alloc(256);
    u32(p + 96n, nr);
    u64(p + 40n, task + 100n);
    return [p, task];
  };
  const ctx: KernelContext = {
    kernel: AddressSpace.identity(mem),
    layout,
    bounds: addressBounds(X86_64_4LEVEL),
    symbols: {
      findAddress: (n) => (n === "init_pid_ns" ? ns : undefined),
      getAddress: (n) => (n === "init_pid_ns" ? ns : assert.fail(n)),
    },
    pageOffset: BASE,
    perCpuOffsets: [],
    userSpace: () => assert.fail("no user space here"),
    directToPhys: (a: VirtAddr) => pa(a - BASE),
  };
  return { ctx, ns, alloc, u64, u8, pid };
}

test("a two-level pid idr yields every pid in order, with its task", () => {
  const { ctx, ns, alloc, u64, u8, pid } = craft();
  const top = alloc(40 + 64 * 8);
  const leafA = alloc(40 + 64 * 8);
  const leafB = alloc(40 + 64 * 8);
  u8(top, 6);
  u64(top + 40n, leafA + 2n);
  u64(top + 40n + 8n, leafB + 2n);
  const [p1, t1] = pid(1);
  const [p2, t2] = pid(2);
  const [p70, t70] = pid(70);
  u64(leafA + 40n + 1n * 8n, p1);
  u64(leafA + 40n + 2n * 8n, p2);
  u64(leafA + 40n + 3n * 8n, 0x41n); // an XArray value entry: not a pointer, skipped
  u64(leafB + 40n + 6n * 8n, p70);
  u64(ns + 8n, top + 2n);
  const entries = pidNamespaceEntries(ctx);
  assert.deepEqual(
    entries.map((e) => [e.nr, e.pid, e.task]),
    [
      [1, p1, t1],
      [2, p2, t2],
      [70, p70, t70],
    ],
  );
});

test("a single pid stored directly in the head is found", () => {
  const { ctx, ns, u64, pid } = craft();
  const [p0, t0] = pid(0);
  u64(ns + 8n, p0);
  assert.deepEqual(pidNamespaceEntries(ctx), [{ nr: 0, pid: p0, task: t0 }]);
});

test("hostile idr data: a looping node, a bad shift, a pid whose number disagrees", () => {
  const loop = craft();
  const node = loop.alloc(40 + 64 * 8);
  loop.u8(node, 6);
  loop.u64(node + 40n, node + 2n);
  assert.throws(() => [...xarrayEntries(loop.ctx, node + 2n)], GuestDataError);

  const shift = craft();
  const bad = shift.alloc(40 + 64 * 8);
  shift.u8(bad, 7);
  assert.throws(() => [...xarrayEntries(shift.ctx, bad + 2n)], /shift 7/);

  const liar = craft();
  const [p] = liar.pid(5);
  const leaf = liar.alloc(40 + 64 * 8);
  liar.u64(leaf + 40n + 9n * 8n, p);
  liar.u64(liar.ns + 8n, leaf + 2n);
  assert.throws(() => pidNamespaceEntries(liar.ctx), /says 5 but sits at idr index 9/);
});

test("an unreadable struct pid and a garbage task link are GuestDataErrors naming the pid", () => {
  const gone = craft();
  const leaf = gone.alloc(40 + 64 * 8);
  gone.u64(leaf + 40n + 3n * 8n, BASE + (4n << 20n)); // a kernel pointer past the buffer
  gone.u64(gone.ns + 8n, leaf + 2n);
  assert.throws(
    () => pidNamespaceEntries(gone.ctx),
    (e: unknown) =>
      e instanceof GuestDataError && /struct pid 0x[0-9a-f]+ \(idr index 3\) is unreadable/.test(e.message),
  );

  const garbage = craft();
  const [p] = garbage.pid(7);
  garbage.u64(p + 40n, 0x4141414141414141n);
  const slots = garbage.alloc(40 + 64 * 8);
  garbage.u64(slots + 40n + 7n * 8n, p);
  garbage.u64(garbage.ns + 8n, slots + 2n);
  assert.throws(() => pidNamespaceEntries(garbage.ctx), /pid 7: tasks\[PIDTYPE_PID\] 0x4141414141414141/);
});

test("leaderTaskHints: the leaders a two-level table holds (a thread's pid has no TGID link), never an error", () => {
  const { ctx, ns, alloc, u64, u8, pid } = craft();
  const top = alloc(40 + 64 * 8);
  const leaf = alloc(40 + 64 * 8);
  u8(top, 6);
  u64(top + 40n, leaf + 2n);
  const [p1, t1] = pid(1);
  const [p2] = pid(2);
  const [p3, t3] = pid(3);
  // tasks[PIDTYPE_TGID] (pid.tasks + 8) points at the leader's pid_links[PIDTYPE_TGID] (+16).
  u64(p1 + 48n, t1 + 116n);
  u64(p3 + 48n, t3 + 116n);
  for (const [slot, p] of [p1, p2, p3].entries()) u64(leaf + 40n + BigInt(slot + 1) * 8n, p);
  u64(leaf + 40n + 5n * 8n, 0x41n); // an XArray value: skipped
  u64(ns + 8n, top + 2n);
  assert.deepEqual(leaderTaskHints(ctx), [t1, t3]);
  // A node met again is not read again; a table that points outside the kernel is no hint.
  u64(leaf + 40n + 63n * 8n, top + 2n);
  assert.deepEqual(leaderTaskHints(ctx), [t1, t3]);
  u64(ns + 8n, BASE + (4n << 20n) + 2n);
  assert.deepEqual(leaderTaskHints(ctx), []);
});
