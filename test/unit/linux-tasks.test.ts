import assert from "node:assert/strict";
import { test } from "node:test";
import { readCmdline, readEnviron } from "../../src/os/linux/process-memory.js";
import {
  kernelCommandLine,
  kernelRelease,
  listAllThreads,
  listTasks,
  listThreads,
  readTask,
} from "../../src/os/linux/tasks.js";
import { va } from "../../src/util/address.js";
import {
  ARG_AREA,
  CraftedKernel,
  CraftedTasks,
  LINUX_6_1,
  LINUX_6_12,
  type LayoutSpec,
  MINIMAL_PROFILE,
  PF_KTHREAD,
  PF_WQ_WORKER,
  addKernelStrings,
} from "../support/crafted-kernel.js";

const KW = PF_KTHREAD | PF_WQ_WORKER;
const RUNNING_WORK = 0xffff888000123450n;
const SOME_POOL = 0xffff888000234560n;

/** A small system: init, kthreads, workqueue workers, a shell, a threaded setuid app, a zombie. */
function system(spec: LayoutSpec = LINUX_6_1) {
  const ck = new CraftedKernel({ layout: spec });
  const t = new CraftedTasks(ck);
  const init = t.addProcess({
    pid: 1,
    comm: "systemd",
    state: 0x1,
    argv: ["/sbin/init", "splash"],
    envp: ["HOME=/", "TERM=linux"],
  });
  const kthreadd = t.addTask({ pid: 2, comm: "kthreadd", flags: PF_KTHREAD, state: 0x1, kthread: {} });
  const k = (pid: number, comm: string, extra: object) =>
    t.addTask({ pid, comm, parent: kthreadd, flags: PF_KTHREAD, state: 0x402, ...extra });
  k(3, "rcu_tasks_kthre", { kthread: { fullName: "rcu_tasks_kthread" } });
  const worker = (w: Parameters<CraftedTasks["addWorker"]>[0], fullName?: string) => ({
    flags: KW,
    kthread: { data: t.addWorker(w), ...(fullName === undefined ? {} : { fullName }) },
  });
  k(4, "kworker/0:1", worker({ desc: "events", currentWork: RUNNING_WORK, pool: SOME_POOL }));
  k(5, "kworker/u2:0", worker({ desc: "flush-8:0", pool: SOME_POOL }));
  k(6, "kworker/0:0", worker({ desc: "", pool: SOME_POOL }));
  k(7, "kworker/u256:12", worker({ desc: "events_unbound", pool: SOME_POOL }, "kworker/u256:123"));
  k(8, "kworker/1:2", worker({ desc: "mm_percpu_wq", pool: 0n }));
  k(9, "migration/0", { state: 0x40, kthread: {} });
  const bash = t.addProcess({ pid: 100, comm: "bash", parent: init.task, uid: 1000, gid: 1001, state: 0x1 });
  const app = t.addProcess({
    pid: 200,
    comm: "app",
    parent: bash.task,
    uid: 1000,
    gid: 1000,
    euid: 0,
    argv: ["./app", "--serve", "çà"],
  });
  const th1 = t.addTask({ pid: 201, comm: "app-io", leader: app.task, mm: app.mm, uid: 1000, state: 0x1 });
  t.addTask({ pid: 202, comm: "app-gc", leader: app.task, mm: app.mm, uid: 1000, state: 0x2 });
  t.addTask({ pid: 300, comm: "defunct", parent: bash.task, state: 0x80, exitState: 0x20 });
  addKernelStrings(ck, {
    release: "6.1.0-50-amd64",
    banner: "Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12) #1 SMP",
    commandLine: "BOOT_IMAGE=/vmlinuz root=/dev/vda console=ttyS0",
  });
  return { ck, t, ctx: ck.context(), init, bash, app, th1 };
}

const pick = <T extends object, K extends keyof T>(o: T, keys: K[]) =>
  Object.fromEntries(keys.map((k) => [k, o[k]])) as Pick<T, K>;

for (const [label, spec] of [
  ["6.1", LINUX_6_1],
  ["6.12", LINUX_6_12],
] as const) {
  test(`listTasks (${label} layout): pids, parents, ids, states, kthread flags`, () => {
    const { ctx, init, app } = system(spec);
    const tasks = listTasks(ctx);
    const rows = tasks.map((x) =>
      pick(x, ["pid", "tgid", "ppid", "uid", "gid", "euid", "state", "isKernelThread"]),
    );
    const kt = (pid: number, ppid: number, state: string) => ({
      pid,
      tgid: pid,
      ppid,
      uid: 0,
      gid: 0,
      euid: 0,
      state,
      isKernelThread: true,
    });
    assert.deepEqual(rows, [
      { pid: 1, tgid: 1, ppid: 0, uid: 0, gid: 0, euid: 0, state: "S", isKernelThread: false },
      kt(2, 0, "S"),
      kt(3, 2, "I"),
      kt(4, 2, "I"),
      kt(5, 2, "I"),
      kt(6, 2, "I"),
      kt(7, 2, "I"),
      kt(8, 2, "I"),
      kt(9, 2, "P"),
      { pid: 100, tgid: 100, ppid: 1, uid: 1000, gid: 1001, euid: 1000, state: "S", isKernelThread: false },
      { pid: 200, tgid: 200, ppid: 100, uid: 1000, gid: 1000, euid: 0, state: "R", isKernelThread: false },
      { pid: 300, tgid: 300, ppid: 100, uid: 0, gid: 0, euid: 0, state: "Z", isKernelThread: false },
    ]);
    assert.equal(tasks[0]!.mm, BigInt(init.mm));
    assert.equal(tasks[10]!.mm, BigInt(app.mm));
    assert.ok(tasks.filter((x) => x.isKernelThread).every((x) => x.mm === 0n));
    assert.ok(tasks.every((x) => x.warnings.length === 0));
    assert.equal(tasks[10]!.addr, app.task);
  });

  test(`listThreads (${label} layout): every thread of a process, leader first, ppid from the shared parent`, () => {
    const { ctx, app, bash } = system(spec);
    const threads = listThreads(ctx, app.task);
    assert.deepEqual(
      threads.map((x) => [x.pid, x.tgid, x.ppid, x.comm, x.state]),
      [
        [200, 200, 100, "app", "R"],
        [201, 200, 100, "app-io", "S"],
        [202, 200, 100, "app-gc", "D"],
      ],
    );
    // Asking from a non-leader thread gives the same group.
    assert.deepEqual(
      listThreads(ctx, threads[2]!).map((x) => x.pid),
      [200, 201, 202],
    );
    const single = listThreads(ctx, bash.task);
    assert.deepEqual(
      single.map((x) => x.pid),
      [100],
    );
  });

  test(`listAllThreads (${label} layout): processes expanded into their threads`, () => {
    const { ctx } = system(spec);
    assert.deepEqual(
      listAllThreads(ctx).map((x) => x.pid),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 200, 201, 202, 300],
    );
  });
}

test("names: full kthread names and workqueue descriptions as /proc/<pid>/stat shows them (6.1)", () => {
  const { ctx } = system(LINUX_6_1);
  const names = Object.fromEntries(listTasks(ctx).map((x) => [x.pid, [x.comm, x.name]]));
  assert.deepEqual(names, {
    1: ["systemd", "systemd"],
    2: ["kthreadd", "kthreadd"],
    3: ["rcu_tasks_kthre", "rcu_tasks_kthread"],
    4: ["kworker/0:1", "kworker/0:1+events"],
    5: ["kworker/u2:0", "kworker/u2:0-flush-8:0"],
    6: ["kworker/0:0", "kworker/0:0"],
    // 6.1's wq_worker_comm() starts from task->comm, truncated.
    7: ["kworker/u256:12", "kworker/u256:12-events_unbound"],
    // No pool: no description.
    8: ["kworker/1:2", "kworker/1:2"],
    9: ["migration/0", "migration/0"],
    100: ["bash", "bash"],
    200: ["app", "app"],
    300: ["defunct", "defunct"],
  });
});

test("names: 6.12 workers use the full worker id, and a worker without a pool is dying", () => {
  const { ctx } = system(LINUX_6_12);
  const names = Object.fromEntries(listTasks(ctx).map((x) => [x.pid, x.name]));
  assert.equal(names[4], "kworker/0:1+events");
  assert.equal(names[7], "kworker/u256:123-events_unbound");
  assert.equal(names[8], "kworker/dying");
  assert.equal(names[3], "rcu_tasks_kthread");
});

test("names: truncated to 63 bytes like the kernel's 64-byte buffer", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  const long = `k${"x".repeat(79)}`;
  t.addTask({ pid: 2, comm: long.slice(0, 15), flags: PF_KTHREAD, kthread: { fullName: long } });
  const w = t.addWorker({ desc: "d".repeat(23), pool: SOME_POOL, currentWork: RUNNING_WORK });
  t.addTask({ pid: 3, comm: "kworker/0:1", flags: KW, kthread: { data: w } });
  const [a, b] = listTasks(ck.context());
  assert.equal(a!.name, long.slice(0, 63));
  assert.equal(b!.name, `kworker/0:1+${"d".repeat(23)}`);

  const ck12 = new CraftedKernel({ layout: LINUX_6_12 });
  const t12 = new CraftedTasks(ck12);
  const w12 = t12.addWorker({ desc: "e".repeat(31), pool: SOME_POOL });
  const id = `kworker/R-${"q".repeat(40)}`;
  t12.addTask({ pid: 5, comm: id.slice(0, 15), flags: KW, kthread: { data: w12, fullName: id } });
  assert.equal(listTasks(ck12.context())[0]!.name, `${id}-${"e".repeat(31)}`.slice(0, 63));
});

test("readTask reads one task at an address, ppid included", () => {
  const { ctx, th1 } = system();
  const x = readTask(ctx, th1);
  assert.deepEqual([x.pid, x.tgid, x.ppid, x.comm, x.uid], [201, 200, 100, "app-io", 1000]);
});

test("readCmdline / readEnviron: the raw NUL-separated strings and their split", () => {
  const { ctx } = system();
  const tasks = listTasks(ctx);
  const init = tasks.find((x) => x.pid === 1)!;
  const cmd = readCmdline(ctx, init);
  assert.deepEqual(cmd.bytes, Buffer.from("/sbin/init\0splash\0"));
  assert.deepEqual(cmd.strings, ["/sbin/init", "splash"]);
  assert.equal(cmd.text, "/sbin/init splash");
  assert.equal(cmd.partial, false);
  assert.equal(cmd.truncated, false);
  const env = readEnviron(ctx, init);
  assert.deepEqual(env.strings, ["HOME=/", "TERM=linux"]);
  assert.deepEqual(env.bytes, Buffer.from("HOME=/\0TERM=linux\0"));
  const app = tasks.find((x) => x.pid === 200)!;
  assert.deepEqual(readCmdline(ctx, app).strings, ["./app", "--serve", "çà"]);
  assert.deepEqual(readEnviron(ctx, app).strings, []);
});

test("readCmdline: kernel threads have none", () => {
  const { ctx } = system();
  const kthreadd = listTasks(ctx).find((x) => x.pid === 2)!;
  const r = readCmdline(ctx, kthreadd);
  assert.equal(r.bytes.length, 0);
  assert.deepEqual(r.strings, []);
  assert.equal(readEnviron(ctx, kthreadd).bytes.length, 0);
});

test("readCmdline: an unmapped argument page gives the pages before it, flagged partial", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  const first = "A".repeat(5000);
  const p = t.addProcess({ pid: 10, comm: "long", argv: [first, "second"] });
  p.user.unmap(ARG_AREA + 0x1000n);
  const task = listTasks(ck.context())[0]!;
  const r = readCmdline(ck.context(), task);
  assert.equal(r.partial, true);
  assert.equal(r.faultAddress, ARG_AREA + 0x1000n);
  assert.deepEqual(r.bytes, Buffer.from("A".repeat(4096)));
  assert.deepEqual(r.strings, ["A".repeat(4096)]);
});

test("readCmdline: a rewritten title (argv's last byte not NUL) reads as one string into the environment", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  const p = t.addProcess({
    pid: 10,
    comm: "nginx",
    argv: ["nginx", "-g"],
    envp: ["A=1", "LONGER_VARIABLE=abcdef"],
  });
  p.user.write(ARG_AREA, Buffer.from("nginx: worker process\0"));
  const r = readCmdline(ck.context(), listTasks(ck.context())[0]!);
  assert.deepEqual(r.bytes, Buffer.from("nginx: worker process\0"));
  assert.deepEqual(r.strings, ["nginx: worker process"]);
});

test("readCmdline: a rewritten title stops where the environment ends", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  // argv + envp span 17 bytes ("nginx\0-g\0A=1\0B=2\0"); get_mm_cmdline() returns no more.
  const p = t.addProcess({ pid: 10, comm: "nginx", argv: ["nginx", "-g"], envp: ["A=1", "B=2"] });
  p.user.write(ARG_AREA, Buffer.from("nginx: worker process\0"));
  const r = readCmdline(ck.context(), listTasks(ck.context())[0]!);
  assert.deepEqual(r.bytes, Buffer.from("nginx: worker pro"));
});

test("readCmdline: a huge argument area is cut at 128 KiB and flagged", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  const big = "z".repeat(140 * 1024);
  t.addProcess({ pid: 10, comm: "big", argv: [big] });
  const r = readCmdline(ck.context(), listTasks(ck.context())[0]!);
  assert.equal(r.truncated, true);
  assert.equal(r.partial, false);
  assert.equal(r.bytes.length, 128 * 1024);
});

test("kernelRelease and kernelCommandLine", () => {
  const { ctx } = system();
  assert.equal(kernelRelease(ctx), "6.1.0-50-amd64");
  assert.equal(kernelCommandLine(ctx), "BOOT_IMAGE=/vmlinuz root=/dev/vda console=ttyS0");
});

test("kernelRelease falls back to linux_banner without init_uts_ns", () => {
  const ck = new CraftedKernel();
  addKernelStrings(ck, {
    banner: "Linux version 6.12.111+deb12-amd64 (debian-kernel@lists.debian.org) (gcc)",
  });
  assert.equal(kernelRelease(ck.context()), "6.12.111+deb12-amd64");
});

test("a minimal offsets profile: long state, thread_group ring, no cred, no kthread pointer", () => {
  const ck = new CraftedKernel({ layout: MINIMAL_PROFILE });
  const t = new CraftedTasks(ck);
  const init = t.addTask({ pid: 1, comm: "init", state: 0x1 });
  t.addTask({ pid: 2, comm: "rcu_tasks_kthre", flags: PF_KTHREAD, state: 0x402 });
  t.addTask({ pid: 3, comm: "init-thread", leader: init, state: 0x2 });
  const ctx = ck.context();
  const tasks = listTasks(ctx);
  assert.deepEqual(
    tasks.map((x) => [x.pid, x.ppid, x.uid, x.name, x.state]),
    [
      [1, 0, undefined, "init", "S"],
      [2, 0, undefined, "rcu_tasks_kthre", "I"],
    ],
  );
  assert.deepEqual(
    listThreads(ctx, init).map((x) => [x.pid, x.tgid, x.state]),
    [
      [1, 1, "S"],
      [3, 1, "D"],
    ],
  );
  // Starting from the non-leader, the ring still yields the leader first.
  assert.deepEqual(
    listThreads(ctx, tasks[0]!).map((x) => x.pid),
    [1, 3],
  );
  assert.deepEqual(
    listThreads(ctx, va(BigInt(init))).map((x) => x.pid),
    [1, 3],
  );
});

test("ppid is the parent's tgid even when a non-leader thread forked the child", () => {
  const { ck, t, th1 } = system();
  t.addTask({ pid: 400, comm: "child", parent: th1 });
  const child = listTasks(ck.context()).find((x) => x.pid === 400)!;
  assert.equal(child.ppid, 200);
});

test("a kernel thread borrowing an mm (kthread_use_mm) reports mm 0 and no command line", () => {
  const { ck, t, app } = system();
  t.addTask({ pid: 500, comm: "io_borrower", flags: PF_KTHREAD, mm: app.mm, kthread: {} });
  const ctx = ck.context();
  const k = listTasks(ctx).find((x) => x.pid === 500)!;
  assert.equal(k.mm, 0n);
  assert.deepEqual(readCmdline(ctx, k).strings, []);
});
