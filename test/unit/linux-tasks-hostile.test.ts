import assert from "node:assert/strict";
import { test } from "node:test";
import { readCmdline } from "../../src/os/linux/process-memory.js";
import {
  listAllThreads,
  listTasks,
  listThreads,
  nrProcesses,
  readTask,
  taskListWarnings,
} from "../../src/os/linux/tasks.js";
import { va } from "../../src/util/address.js";
import { FaultError, GuestDataError, VmsightError } from "../../src/util/errors.js";
import {
  CraftedKernel,
  CraftedTasks,
  LINUX_6_1,
  type LayoutSpec,
  PF_KTHREAD,
  PF_WQ_WORKER,
} from "../support/crafted-kernel.js";

const T = LINUX_6_1.task_struct!.members;
const TASKS = BigInt(T.tasks![0]);

function setup() {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  return { ck, t, ctx: ck.context() };
}

function timed<R>(fn: () => R): { result?: R; error?: unknown; ms: number } {
  const start = performance.now();
  try {
    return { result: fn(), ms: performance.now() - start };
  } catch (error) {
    return { error, ms: performance.now() - start };
  }
}

test("a tasks list that loops without returning to init_task: GuestDataError, quickly", () => {
  const { ck, t, ctx } = setup();
  const a = t.addTask({ pid: 1, comm: "a" });
  const b = t.addTask({ pid: 2, comm: "b" });
  t.addTask({ pid: 3, comm: "c" });
  ck.writeU64(b + TASKS, a + TASKS); // b -> a: never back to the head
  const r = timed(() => listTasks(ctx));
  assert.ok(r.error instanceof GuestDataError, String(r.error));
  assert.match((r.error as Error).message, /loops/);
  assert.ok(r.ms < 1000);
});

test("a task pointer into unmapped memory: GuestDataError from the walk, FaultError from readTask", () => {
  const { ck, t, ctx } = setup();
  const a = t.addTask({ pid: 1, comm: "a" });
  ck.writeU64(a + TASKS, ck.unmapped + TASKS);
  assert.throws(
    () => listTasks(ctx),
    (e: unknown) => e instanceof GuestDataError && /unreadable/.test(e.message),
  );
  assert.throws(
    () => readTask(ctx, ck.unmapped),
    (e: unknown) =>
      e instanceof FaultError && e.address >= ck.unmapped && e.address < ck.unmapped + BigInt(T.thread![0]),
  );
});

test("a tasks next pointer that is not a kernel pointer: GuestDataError", () => {
  const { ck, t, ctx } = setup();
  const a = t.addTask({ pid: 1, comm: "a" });
  ck.writeU64(a + TASKS, 0x4141414141414141n);
  assert.throws(() => listTasks(ctx), GuestDataError);
});

test("a comm with no NUL: all 16 bytes, and a warning", () => {
  const { t, ctx } = setup();
  t.addTask({ pid: 1, comm: Buffer.from("ABCDEFGHIJKLMNOP") });
  const [x] = listTasks(ctx);
  assert.equal(x!.comm, "ABCDEFGHIJKLMNOP");
  assert.equal(x!.name, "ABCDEFGHIJKLMNOP");
  assert.deepEqual(x!.warnings, ["comm has no NUL terminator"]);
});

test("garbage and unreadable cred pointers: ids undefined with a warning, the listing stands", () => {
  const { ck, t, ctx } = setup();
  t.addTask({ pid: 1, comm: "garbage", cred: 0x4141414141414141n });
  t.addTask({ pid: 2, comm: "unmapped", cred: ck.unmapped });
  t.addTask({ pid: 3, comm: "fine", uid: 7 });
  const tasks = listTasks(ctx);
  assert.deepEqual(
    tasks.map((x) => [x.pid, x.uid, x.gid, x.euid, x.warnings.length]),
    [
      [1, undefined, undefined, undefined, 1],
      [2, undefined, undefined, undefined, 1],
      [3, 7, 0, 7, 0],
    ],
  );
  assert.match(tasks[0]!.warnings[0]!, /cred pointer 0x4141414141414141 is not a kernel pointer/);
  assert.match(tasks[1]!.warnings[0]!, /unreadable/);
});

test("a garbage real_parent: ppid 0 with a warning", () => {
  const { ck, t, ctx } = setup();
  t.addTask({ pid: 5, comm: "orphan", parent: 0x1234n });
  t.addTask({ pid: 6, comm: "lost", parent: ck.unmapped });
  const tasks = listTasks(ctx);
  assert.deepEqual(
    tasks.map((x) => [x.ppid, x.warnings.length]),
    [
      [0, 1],
      [0, 1],
    ],
  );
});

test("a task_struct ending right after its last read member: nothing past `thread` is read", () => {
  const { ck, t, ctx } = setup();
  // The real allocation can be far shorter than BTF's sizeof; here RAM ends at `thread`.
  const at = ck.allocAtEnd(T.thread![0]);
  t.addTask({ pid: 1, comm: "edge", uid: 3 }, at);
  const [x] = listTasks(ctx);
  assert.deepEqual([x!.pid, x!.comm, x!.uid], [1, "edge", 3]);
  // And the end really is the end of RAM.
  assert.throws(() => ck.kernel.read(va(at + BigInt(T.thread![0])), 1), FaultError);
});

test("broken kthread and worker pointers: the name falls back to comm, never throws", () => {
  const { ck, t, ctx } = setup();
  const KW = PF_KTHREAD | PF_WQ_WORKER;
  t.addTask({ pid: 2, comm: "garbage-kthread", flags: PF_KTHREAD, kthread: 0x4141414141414141n });
  t.addTask({ pid: 3, comm: "unmapped-kthrea", flags: PF_KTHREAD, kthread: ck.unmapped });
  t.addTask({ pid: 4, comm: "bad-full-name", flags: PF_KTHREAD, kthread: { fullName: ck.unmapped } });
  t.addTask({ pid: 5, comm: "kworker/0:9", flags: KW, kthread: { data: ck.unmapped } });
  t.addTask({ pid: 6, comm: "kworker/0:8", flags: KW, kthread: 0n });
  t.addTask({ pid: 7, comm: "kworker/0:7", flags: KW, kthread: { data: 0x10n } });
  assert.deepEqual(
    listTasks(ctx).map((x) => x.name),
    ["garbage-kthread", "unmapped-kthrea", "bad-full-name", "kworker/0:9", "kworker/0:8", "kworker/0:7"],
  );
});

test("a missing required member names itself", () => {
  const members = { ...LINUX_6_1.task_struct!.members };
  // biome-ignore lint/performance/noDelete: building a layout without the member
  delete (members as Record<string, unknown>).pid;
  const spec: LayoutSpec = { ...LINUX_6_1, task_struct: { size: 9792, members } };
  const ck = new CraftedKernel({ layout: spec });
  new CraftedTasks(ck).addTask({ pid: 1, comm: "x" });
  assert.throws(
    () => listTasks(ck.context()),
    (e: unknown) =>
      e instanceof VmsightError && e.code === "E_MEMBER_UNKNOWN" && /task_struct\.pid\b/.test(e.message),
  );
});

test("a process whose thread list is broken: listThreads throws, listAllThreads keeps the leader with a warning", () => {
  const { ck, t, ctx } = setup();
  const a = t.addTask({ pid: 1, comm: "a" });
  t.addTask({ pid: 2, comm: "b" });
  ck.writeU64(a + BigInt(T.signal![0]), 0x4141414141414141n);
  assert.throws(() => listThreads(ctx, a), GuestDataError);
  const all = listAllThreads(ctx);
  assert.deepEqual(
    all.map((x) => [x.pid, x.warnings.length]),
    [
      [1, 1],
      [2, 0],
    ],
  );
});

test("a thread list that loops: GuestDataError", () => {
  const { ck, t, ctx } = setup();
  const a = t.addTask({ pid: 1, comm: "a" });
  const b = t.addTask({ pid: 2, comm: "a", leader: a });
  t.addTask({ pid: 3, comm: "a", leader: a });
  const node = BigInt(T.thread_node![0]);
  ck.writeU64(b + node, b + node);
  assert.throws(
    () => listThreads(ctx, a),
    (e: unknown) => e instanceof GuestDataError && /loops/.test(e.message),
  );
});

test("readCmdline: a garbage mm or an argument range outside user space is a GuestDataError", () => {
  const { t, ctx } = setup();
  t.addProcess({ pid: 1, comm: "p" });
  const task = listTasks(ctx)[0]!;
  assert.throws(() => readCmdline(ctx, { mm: 0x4141n }), GuestDataError);
  const mm = t.addMm({ pgd: 0n, argStart: 1n, argEnd: 2n, envStart: 2n, envEnd: 2n });
  assert.throws(() => readCmdline(ctx, { mm: BigInt(mm) }), GuestDataError);
  const mm2 = t.addMm({
    pgd: ctxPgd(t, task.mm),
    argStart: 0xffff800000000000n,
    argEnd: 0xffff800000000010n,
    envStart: 0n,
    envEnd: 0n,
  });
  assert.throws(() => readCmdline(ctx, { mm: BigInt(mm2) }), GuestDataError);
});

function ctxPgd(t: CraftedTasks, mm: bigint): bigint {
  return t.ck.kernel.readU64(va(mm + BigInt(LINUX_6_1.mm_struct!.members.pgd![0])));
}

test("a process list_del'd from the tasks list: process_counts still counts it, and the warning says so", () => {
  const { ck, t, ctx } = setup();
  const counter = ck.defineSymbol("process_counts", 8);
  t.addTask({ pid: 1, comm: "init" });
  const hidden = t.addTask({ pid: 2, comm: "hidden" });
  t.addTask({ pid: 3, comm: "shown" });
  ck.writeU64(counter, 3n); // per-CPU offset 0: the one CPU's counter is the symbol itself
  assert.deepEqual(taskListWarnings(ctx, listTasks(ctx).length), []);
  const node = hidden + TASKS;
  const next = ck.kernel.readU64(va(node));
  const prev = ck.kernel.readU64(va(node + 8n));
  ck.writeU64(prev, next);
  ck.writeU64(next + 8n, prev);
  const listed = listTasks(ctx);
  assert.deepEqual(
    listed.map((x) => x.pid),
    [1, 3],
  );
  assert.equal(nrProcesses(ctx), 3);
  assert.deepEqual(taskListWarnings(ctx, listed.length), [
    "the task_struct.tasks list has 2 processes but the kernel counts 3 (process_counts): some are unlinked from the list; `vmsight pids` lists them",
  ]);
});
