/**
 * The candidate filter on a crafted boot: a kernel whose struct layout is made up here (no real
 * kernel has it), whose tasks, mm_structs and modules are written into sparse memory event by
 * event as the kernel would. The filter must find exactly the made-up offsets - the layout is
 * the ground truth, the filter never sees it.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { OffsetDiscovery } from "../../src/discovery/constraints.js";
import { isNameString, ringNodes } from "../../src/discovery/rules/reader.js";
import type { EventKind, GuestView, KernelFacts, PageRights, PageRun } from "../../src/discovery/types.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import { noise } from "../support/noise.js";

const L = {
  state: 16,
  flags: 36,
  tasks: 600,
  mm: 704,
  activeMm: 712,
  pid: 1000,
  tgid: 1004,
  realParent: 1016,
  parent: 1024,
  pending: 1200,
  comm: 1500,
};
const MM = {
  pgd: 48,
  startCode: 200,
  endCode: 208,
  argStart: 240,
  argEnd: 248,
  envStart: 256,
  envEnd: 264,
  auxv: 272,
};
/** Relative to struct module; `list` is at 8. */
const MOD = { state: 0, list: 8, name: 24, textBase: 304, textSize: 312, dataBase: 320, dataSize: 328 };
const TASK_SIZE = 2048;
const DIRECT = 0xffff888000000000n;
const INIT_TASK = 0xffffffff82000000n;
const INIT_MM = 0xffffffff82010000n;
const SWAPPER_PGD = 0xffffffff82020000n;
const SWAPPER_PHYS = 0x2020000n;
const MODULES_HEAD = 0xffffffff82030000n;
const PF_KTHREAD = 0x00200000;
const PF_FORKNOEXEC = 0x40;
const TASK_NEW = 0x800;
const STACK = 0x7ffff0000000n;

interface UserSpace {
  readonly pgdPhys: bigint;
  readonly runs: PageRun[];
  readonly bytes: Map<bigint, Buffer>;
}

/** Sparse kernel memory, per-process user memory, and the rights of module pages. */
class World implements GuestView {
  readonly bounds = addressBounds(X86_64_4LEVEL);
  private readonly regions: { addr: bigint; bytes: Buffer }[] = [];
  readonly users = new Map<bigint, UserSpace>();
  readonly execPages = new Set<bigint>();
  readonly mappedModulePages = new Set<bigint>();

  alloc(addr: bigint, size: number, seed: number): Buffer {
    const bytes = noise(size, seed);
    this.regions.push({ addr, bytes });
    return bytes;
  }
  private region(addr: bigint, len: number) {
    return this.regions.find((r) => addr >= r.addr && addr + BigInt(len) <= r.addr + BigInt(r.bytes.length));
  }
  read(addr: bigint, length: number): Buffer | undefined {
    const r = this.region(addr, length);
    if (!r) return undefined;
    const at = Number(addr - r.addr);
    return Buffer.from(r.bytes.subarray(at, at + length));
  }
  u64(addr: bigint, v: bigint): void {
    const r = this.region(addr, 8)!;
    r.bytes.writeBigUInt64LE(BigInt.asUintN(64, v), Number(addr - r.addr));
  }
  u32(addr: bigint, v: number): void {
    const r = this.region(addr, 4)!;
    r.bytes.writeUInt32LE(v >>> 0, Number(addr - r.addr));
  }
  str(addr: bigint, s: string, len: number): void {
    const r = this.region(addr, len)!;
    const b = Buffer.alloc(len);
    b.write(s, "latin1");
    b.copy(r.bytes, Number(addr - r.addr));
  }
  translate(addr: bigint): bigint | undefined {
    if (addr === SWAPPER_PGD) return SWAPPER_PHYS;
    return addr >= DIRECT && addr < DIRECT + (1n << 32n) ? addr - DIRECT : undefined;
  }
  kernelPage(addr: bigint): PageRights | undefined {
    const page = addr & ~0xfffn;
    if (this.execPages.has(page)) return { user: false, writable: false, executable: true };
    if (this.mappedModulePages.has(page)) return { user: false, writable: true, executable: false };
    return this.region(addr, 1) ? { user: false, writable: true, executable: false } : undefined;
  }
  userPage(pgd: bigint, addr: bigint): PageRights | undefined {
    return this.users.get(pgd)?.runs.find((r) => addr >= r.start && addr < r.end);
  }
  userRuns(pgd: bigint, start: bigint, end: bigint): readonly PageRun[] | undefined {
    return this.users.get(pgd)?.runs.filter((r) => r.start < end && r.end > start);
  }
  readUser(pgd: bigint, addr: bigint, length: number): Buffer | undefined {
    const u = this.users.get(pgd);
    if (!u) return undefined;
    for (const [at, b] of u.bytes) {
      if (addr >= at && addr + BigInt(length) <= at + BigInt(b.length)) {
        return b.subarray(Number(addr - at), Number(addr - at) + length);
      }
    }
    return undefined;
  }
}

interface TaskSpec {
  pid: number;
  tgid?: number;
  comm: string;
  state: number;
  flags: number;
  mm: bigint;
  activeMm: bigint;
  parent: bigint;
}

/** A crafted kernel: tasks on a ring headed by init_task, mm_structs, modules, event log. */
class Boot {
  readonly w = new World();
  readonly listed: bigint[] = [];
  private nextTask = 0;
  private nextMm = 0;
  private events = 0;
  /** Tasks created so far: the next pid is one more. */
  threads = 0;
  /** Live threads that are not group leaders (not on the tasks list). */
  nonLeaders = 0;
  cr3 = SWAPPER_PHYS;

  constructor() {
    this.w.alloc(INIT_TASK, TASK_SIZE + 4096, 1);
    this.w.alloc(INIT_MM, 4096, 2);
    this.w.u64(INIT_MM + BigInt(MM.pgd), SWAPPER_PGD);
    this.w.alloc(MODULES_HEAD, 16, 3);
    this.w.u64(MODULES_HEAD, MODULES_HEAD);
    this.w.u64(MODULES_HEAD + 8n, MODULES_HEAD);
    this.setTask(INIT_TASK, {
      pid: 0,
      comm: "swapper/0",
      state: 0,
      flags: PF_KTHREAD | 0x2,
      mm: 0n,
      activeMm: INIT_MM,
      parent: INIT_TASK,
    });
    this.emptyList(INIT_TASK + BigInt(L.pending));
    this.relink();
  }

  setTask(addr: bigint, t: TaskSpec): void {
    const w = this.w;
    w.u32(addr + BigInt(L.pid), t.pid);
    w.u32(addr + BigInt(L.tgid), t.tgid ?? t.pid);
    w.str(addr + BigInt(L.comm), t.comm, 16);
    w.u32(addr + BigInt(L.state), t.state);
    w.u32(addr + BigInt(L.flags), t.flags);
    w.u64(addr + BigInt(L.mm), t.mm);
    w.u64(addr + BigInt(L.activeMm), t.activeMm);
    w.u64(addr + BigInt(L.realParent), t.parent);
    w.u64(addr + BigInt(L.parent), t.parent);
    w.u64(addr, 0n); // thread_info.flags
  }

  emptyList(at: bigint): void {
    this.w.u64(at, at);
    this.w.u64(at + 8n, at);
    this.w.u64(at + 16n, 0n);
  }

  /** Rewrites the tasks ring: init_task, then `listed` in order. */
  relink(): void {
    const nodes = [INIT_TASK, ...this.listed].map((t) => t + BigInt(L.tasks));
    nodes.forEach((n, i) => {
      this.w.u64(n, nodes[(i + 1) % nodes.length]!);
      this.w.u64(n + 8n, nodes[(i + nodes.length - 1) % nodes.length]!);
    });
  }

  newTask(t: TaskSpec, listed = true): bigint {
    const addr = DIRECT + 0x100000n + BigInt(this.nextTask++) * 0x1000n;
    this.w.alloc(addr, TASK_SIZE, 100 + this.nextTask);
    this.setTask(addr, t);
    this.emptyList(addr + BigInt(L.pending));
    if (listed) {
      this.listed.push(addr);
      this.relink();
    } else this.nonLeaders++;
    return addr;
  }

  /**
   * An mm_struct of a process running `argv` from a static binary at 0x401000. With
   * `codeCopies`, a later member holds the code range again (as mm->context may hold the vDSO's).
   */
  codeCopies = false;
  newMm(argv: string[], env: string[]): bigint {
    const k = this.nextMm++;
    const mm = DIRECT + 0x400000n + BigInt(k) * 0x1000n;
    const pgd = DIRECT + 0x800000n + BigInt(k) * 0x2000n;
    this.w.alloc(mm, 2048, 500 + k);
    this.w.alloc(pgd, 4096, 600 + k);
    this.w.u64(mm + BigInt(MM.pgd), pgd);
    const code = { user: true, writable: false, executable: true };
    const ro = { user: true, writable: false, executable: false };
    const rw = { user: true, writable: true, executable: false };
    const endCode = 0x4a0000n - 0x123n - BigInt(k) * 0x1000n;
    const runs: PageRun[] = [
      { start: 0x400000n, end: 0x401000n, ...ro },
      { start: 0x401000n, end: (endCode + 0xfffn) & ~0xfffn, ...code },
      { start: 0x4b0000n, end: 0x4b8000n, ...rw },
      { start: STACK, end: STACK + 0x21000n, ...ro }, // write-protected for copy-on-write
      { start: 0x7ffff7ffd000n, end: 0x7ffff7ffe000n, ...ro }, // vvar
      { start: 0x7ffff7ffe000n, end: 0x7ffff7fff000n, ...code }, // vdso
    ];
    const stack = Buffer.alloc(0x21000);
    const strings = Buffer.from(`${argv.join("\0")}\0${env.join("\0")}\0/bin/${argv[0]}\0`, "latin1");
    const at = 0x20000 - 0x200;
    strings.copy(stack, at);
    const argStart = STACK + BigInt(at);
    const argEnd = argStart + BigInt(Buffer.byteLength(`${argv.join("\0")}\0`));
    const envEnd = argEnd + BigInt(Buffer.byteLength(`${env.join("\0")}\0`));
    this.w.users.set(pgd, { pgdPhys: pgd - DIRECT, runs, bytes: new Map([[STACK, stack]]) });
    const m = (off: number, v: bigint) => this.w.u64(mm + BigInt(off), v);
    m(MM.startCode, 0x401000n);
    m(MM.endCode, endCode);
    m(MM.argStart, argStart);
    m(MM.argEnd, argEnd);
    m(MM.envStart, argEnd);
    m(MM.envEnd, envEnd);
    // saved_auxv: {AT_ENTRY, entry}, {AT_SYSINFO_EHDR, vdso}, {AT_EXECFN, filename == env_end}.
    const aux: [bigint, bigint][] = [
      [9n, 0x401a30n],
      [33n, 0x7ffff7ffe000n],
      [31n, envEnd],
      [0n, 0n],
    ];
    aux.forEach(([key, v], i) => {
      m(MM.auxv + i * 16, key);
      m(MM.auxv + i * 16 + 8, v);
    });
    if (this.codeCopies) {
      m(MM.auxv + 200, 0x401000n);
      m(MM.auxv + 208, endCode);
    }
    return mm;
  }

  pgdPhysOf(mm: bigint): bigint {
    const b = this.w.read(mm + BigInt(MM.pgd), 8)!.readBigUInt64LE(0);
    return this.w.translate(b)!;
  }

  observe(d: OffsetDiscovery, kind: EventKind, current: bigint, pointers: bigint[] = []) {
    if (kind === "create") this.threads++;
    return d.observe({
      index: this.events++,
      kind,
      current,
      cr3Root: this.cr3,
      processCount: this.listed.length,
      threadCount: this.listed.length + this.nonLeaders,
      pointers: [current, 0x1234n, ...pointers],
      view: this.w,
    });
  }

  /** A loaded module: struct module at `mod`, text [text, text+textSize) executable. */
  addModule(
    mod: bigint,
    name: string,
    text: bigint,
    textSize: number,
    dataSize: number,
    live: boolean,
  ): void {
    // The struct sits at the start of its page (mapped whole); the page before is a guard page.
    this.w.alloc(mod, 4096, 900 + Number(mod & 0xffffn));
    this.w.mappedModulePages.add(mod);
    this.w.u32(mod + BigInt(MOD.state), live ? 0 : 3);
    this.w.str(mod + BigInt(MOD.name), name, 56);
    this.w.u64(mod + BigInt(MOD.textBase), text);
    this.w.u32(mod + BigInt(MOD.textSize), textSize);
    this.w.u64(mod + BigInt(MOD.dataBase), text + 0x100000n);
    this.w.u32(mod + BigInt(MOD.dataSize), dataSize);
    const node = mod + BigInt(MOD.list);
    const first = this.w.read(MODULES_HEAD, 8)!.readBigUInt64LE(0);
    this.w.u64(node, first);
    this.w.u64(node + 8n, MODULES_HEAD);
    this.w.u64(first + 8n, node);
    this.w.u64(MODULES_HEAD, node);
  }

  goLive(mod: bigint, text: bigint, textSize: number): void {
    this.w.u32(mod + BigInt(MOD.state), 0);
    for (let p = text; p < text + BigInt(textSize); p += 4096n) this.w.execPages.add(p);
  }
}

/** The idle task's first child, as it is at its creation event (not yet run). */
function firstChild(b: Boot, comm = "swapper/0"): bigint {
  return b.newTask({ pid: 1, comm, state: TASK_NEW, flags: 0x40, mm: 0n, activeMm: 0n, parent: INIT_TASK });
}

const FACTS: KernelFacts = {
  initTask: INIT_TASK,
  initMm: INIT_MM,
  modulesHead: MODULES_HEAD,
  taskSize: TASK_SIZE,
};

/** A boot like the test guests': kernel threads, init, a forked process, a thread, a module. */
function boot(opts: { equalModuleSizes?: boolean; oneModuleLast?: boolean; codeCopies?: boolean } = {}): {
  b: Boot;
  d: OffsetDiscovery;
  init: bigint;
} {
  const b = new Boot();
  b.codeCopies = opts.codeCopies === true;
  const d = new OffsetDiscovery(FACTS);
  const kthread = (name: string, parent: bigint, state = TASK_NEW) =>
    b.newTask({
      pid: b.threads + 1,
      comm: name,
      state,
      flags: PF_KTHREAD | PF_FORKNOEXEC,
      mm: 0n,
      activeMm: 0n,
      parent,
    });
  const init = b.newTask({
    pid: 1,
    comm: "swapper/0",
    state: TASK_NEW,
    flags: PF_FORKNOEXEC,
    mm: 0n,
    activeMm: 0n,
    parent: INIT_TASK,
  });
  b.observe(d, "create", INIT_TASK, [init]);
  b.w.u32(init + BigInt(L.state), 1);
  const kthreadd = kthread("swapper/0", INIT_TASK);
  b.observe(d, "create", INIT_TASK, [kthreadd]);
  b.w.str(kthreadd + BigInt(L.comm), "kthreadd", 16);
  b.w.u32(kthreadd + BigInt(L.state), 0);
  const workers: bigint[] = [];
  for (const name of ["kworker/0:0", "ksoftirqd/0", "rcu_gp", "kworker/u2:0", "cryptomgr_test"]) {
    const k = kthread(name, kthreadd);
    b.observe(d, "create", kthreadd, [k]);
    b.w.u32(k + BigInt(L.state), name.startsWith("kworker") ? 0x402 : 1);
    workers.push(k);
  }
  // cryptomgr_test exits and is reaped (autoreap) while init waits.
  b.w.u32(init + BigInt(L.state), 1);
  b.observe(d, "release", workers[4]!);
  b.listed.splice(b.listed.indexOf(workers[4]!), 1);
  b.relink();

  // init execs /init: a user process on its own page tables.
  const initMm = b.newMm(["/bin/sh", "/init"], ["HOME=/", "TERM=linux"]);
  b.setTask(init, {
    pid: 1,
    comm: "init",
    state: 0,
    flags: 0x400100,
    mm: initMm,
    activeMm: initMm,
    parent: INIT_TASK,
  });
  b.cr3 = b.pgdPhysOf(initMm);
  const forkUser = (comm: string, argv: string[]) => {
    const mm = b.newMm(argv, ["HOME=/"]);
    const t = b.newTask({
      pid: b.threads + 1,
      comm: "init",
      state: TASK_NEW,
      flags: 0x400140,
      mm,
      activeMm: mm,
      parent: init,
    });
    b.observe(d, "create", init, [t]);
    b.setTask(t, { pid: b.threads, comm, state: 1, flags: 0x400100, mm, activeMm: mm, parent: init });
    return { t, mm };
  };
  const wl = forkUser("wl-threads", ["workload", "threads", "1"]);
  const wlPid = b.threads;
  // The workload's main thread creates a thread: not on the tasks list, same tgid.
  b.cr3 = b.pgdPhysOf(wl.mm);
  b.w.u32(wl.t + BigInt(L.state), 0);
  const thread = b.newTask(
    {
      pid: b.threads + 1,
      tgid: wlPid,
      comm: "wl-threads",
      state: TASK_NEW,
      flags: 0x400140,
      mm: wl.mm,
      activeMm: wl.mm,
      parent: init,
    },
    false,
  );
  b.w.u32(wl.t + BigInt(L.tgid), wlPid);
  b.w.u32(wl.t + BigInt(L.pid), wlPid);
  b.observe(d, "create", wl.t, [thread]);
  b.w.u32(wl.t + BigInt(L.state), 1);

  // init forks insmod, which loads a module, exits, and is reaped; then init forks again.
  b.cr3 = b.pgdPhysOf(b.w.read(init + BigInt(L.mm), 8)!.readBigUInt64LE(0));
  b.w.u32(init + BigInt(L.state), 0);
  const insmod = forkUser("insmod", ["insmod", "/lib/crc7.ko"]);
  const mod = 0xffffffffc0002000n;
  const text = 0xffffffffc0010000n;
  const textSize = 0x2000;
  b.addModule(mod, "crc7", text, textSize, opts.equalModuleSizes ? textSize : 0x3000, false);
  b.observe(d, "module", insmod.t);
  b.goLive(mod, text, textSize);
  b.w.u32(init + BigInt(L.state), 1);
  b.observe(d, "release", init);
  b.listed.splice(b.listed.indexOf(insmod.t), 1);
  b.relink();
  b.w.u32(init + BigInt(L.state), 0);
  // The guest's last event: nothing shows the module loaded.
  if (opts.oneModuleLast) return { b, d, init };
  // A UTF-8 name and argument (bytes, written one char per byte) must not rule out the real comm
  // and argument offsets, as in the test guest's "utf8" role.
  forkUser("caf\xc3\xa9", ["/bin/wl-caf\xc3\xa9", "name", "caf\xc3\xa9"]);
  // A second module of the same sizes: only the name tells them apart.
  const insmod2 = forkUser("insmod", ["insmod", "/lib/dummy.ko"]);
  const mod2 = 0xffffffffc0022000n;
  const text2 = 0xffffffffc0030000n;
  b.addModule(mod2, "dummy", text2, textSize, opts.equalModuleSizes ? textSize : 0x3000, false);
  b.observe(d, "module", insmod2.t);
  b.goLive(mod2, text2, textSize);
  b.w.u32(init + BigInt(L.state), 1);
  b.observe(d, "release", init);
  b.listed.splice(b.listed.indexOf(insmod2.t), 1);
  b.relink();
  b.w.u32(init + BigInt(L.state), 0);
  forkUser("vmsight-view", ["/bin/sh", "/bin/vmsight-view"]);
  return { b, d, init };
}

/** A boot that has made processes (kernel threads) and no thread yet: pid and tgid are twins. */
function processesOnly() {
  const b = new Boot();
  const d = new OffsetDiscovery(FACTS, { groups: ["task"] });
  const kid = firstChild(b);
  b.observe(d, "create", INIT_TASK, [kid]);
  for (let i = 0; i < 4; i++) {
    const k = b.newTask({
      pid: b.threads + 1,
      comm: `k${i}`,
      state: TASK_NEW,
      flags: PF_KTHREAD | 0x40,
      mm: 0n,
      activeMm: 0n,
      parent: kid,
    });
    b.observe(d, "create", kid, [k]);
  }
  const ids = (k: string) => d.status().find((m) => m.key === k)!.candidates;
  return { b, d, kid, ids };
}

describe("boot-time offset discovery on a crafted kernel", () => {
  test("every awaited member converges to the made-up layout", () => {
    const { d } = boot();
    const left = d.status().filter((m) => m.candidates.length !== 1);
    assert.deepEqual(
      left.map((m) => m.key),
      [],
    );
    assert.equal(d.converged(), true);
    assert.deepEqual(d.profile(), {
      "task_struct.tasks": L.tasks,
      "task_struct.pid": L.pid,
      "task_struct.tgid": L.tgid,
      "task_struct.comm": L.comm,
      "task_struct.__state": L.state,
      "task_struct.flags": L.flags,
      "task_struct.mm": L.mm,
      "task_struct.active_mm": L.activeMm,
      "task_struct.real_parent": L.realParent,
      "task_struct.pending": L.pending,
      "task_struct.pending.signal": L.pending + 16,
      "task_struct.thread_info.flags": 0,
      "mm_struct.pgd": MM.pgd,
      "mm_struct.start_code": MM.startCode,
      "mm_struct.end_code": MM.endCode,
      "mm_struct.arg_start": MM.argStart,
      "mm_struct.arg_end": MM.argEnd,
      "mm_struct.env_start": MM.envStart,
      "mm_struct.env_end": MM.envEnd,
      "module.state": 0,
      "module.list": MOD.list,
      "module.name": MOD.name,
      "module.module_core": MOD.textBase,
      "module.core_text_size": MOD.textSize,
    });
  });

  test("real_parent and parent are told apart only by declaration order, and the report says so", () => {
    const { d } = boot();
    const rp = d.status().find((m) => m.key === "task_struct.real_parent")!;
    assert.match(rp.note ?? "", /declared first/);
    assert.equal(rp.history.removedBy.twin, 1);
  });

  test("pid and tgid stay ambiguous until a thread is created", () => {
    const { b, d, kid, ids } = processesOnly();
    assert.deepEqual(ids("task_struct.pid"), [L.pid, L.tgid]);
    assert.deepEqual(ids("task_struct.tgid"), [L.pid, L.tgid]);
    assert.equal(d.converged(), false);
  });

  test("a thread creation whose new thread is not among the pointers leaves pid and tgid as they were", () => {
    const { b, d, kid, ids } = processesOnly();
    b.nonLeaders++; // the counters say a thread was made; no pointer seen is that thread
    b.observe(d, "create", kid);
    assert.deepEqual(ids("task_struct.pid"), [L.pid, L.tgid]);
    assert.deepEqual(ids("task_struct.tgid"), [L.pid, L.tgid]);
  });

  test("a child that overtook an earlier one (a lower pid than the last, preempted after alloc_pid) leaves twin pid/tgid as they were", () => {
    const { b, d, kid, ids } = processesOnly();
    const stale = b.newTask({
      pid: 3,
      comm: "stale",
      state: TASK_NEW,
      flags: PF_KTHREAD | 0x40,
      mm: 0n,
      activeMm: 0n,
      parent: kid,
    });
    b.observe(d, "create", kid, [stale]);
    assert.deepEqual(ids("task_struct.pid"), [L.pid, L.tgid]);
    assert.deepEqual(ids("task_struct.tgid"), [L.pid, L.tgid]);
  });

  test("pending is told from other always-empty list heads by flush_sigqueue(&tsk->pending) at a release", () => {
    const b = new Boot();
    const d = new OffsetDiscovery(FACTS, { groups: ["task"] });
    // Another list head that every task keeps empty, followed by a zero word, like pending.
    const DECOY = 1800;
    b.emptyList(INIT_TASK + BigInt(DECOY));
    const spawn = (parent: bigint, flags: number) => {
      const t = b.newTask({
        pid: b.threads + 1,
        comm: `k${b.threads}`,
        state: TASK_NEW,
        flags,
        mm: 0n,
        activeMm: 0n,
        parent,
      });
      b.emptyList(t + BigInt(DECOY));
      b.observe(d, "create", parent, [t]);
      return t;
    };
    const first = spawn(INIT_TASK, 0x40);
    const kids = [0, 1, 2, 3].map(() => spawn(first, PF_KTHREAD | 0x40));
    const pending = () => d.status().find((m) => m.key === "task_struct.pending")!.candidates;
    assert.deepEqual(pending(), [L.pending, DECOY]);

    // A signal_struct's shared_pending, and a task that is still listed (a thread's release):
    // neither maps to a released task through any candidate.
    d.sigqueueFlushed(90, 0xffff888000900040n, b.w);
    d.sigqueueFlushed(91, kids[1]! + BigInt(L.pending), b.w);
    assert.deepEqual(pending(), [L.pending, DECOY]);

    // __exit_signal: __unhash_process() took the task off the list, then flush_sigqueue(&tsk->pending).
    const gone = kids[2]!;
    b.listed.splice(b.listed.indexOf(gone), 1);
    b.relink();
    b.w.u64(gone + BigInt(L.tasks) + 8n, 0xdead000000000122n);
    d.sigqueueFlushed(92, gone + BigInt(L.pending), b.w);
    assert.deepEqual(pending(), [L.pending]);
    assert.equal(d.profile()["task_struct.pending"], L.pending);
  });

  for (const [usage, capAlign, uid] of [
    [4, 4, 4], // atomic_t usage, kernel_cap_t as u32[2] (before 6.3)
    [8, 8, 8], // atomic_long_t usage (6.7, and stable backports), kernel_cap_t as u64
    [4, 8, 4],
  ] as const) {
    test(`cred: real_cred from init_cred, uid ${uid} from init_cred's layout (usage ${usage} bytes, caps aligned to ${capAlign})`, () => {
      const b = new Boot();
      const INIT_CRED = 0xffffffff82040000n;
      b.w.alloc(INIT_CRED, 128, 9);
      // usage (a live count), 8 zero ids, zero securebits, padding, then the capability sets.
      b.w.u64(INIT_CRED, usage === 4 ? 0x0000001100000011n : 17n);
      for (let i = 0; i < 9; i++) b.w.u32(INIT_CRED + BigInt(usage + 4 * i), 0);
      const inheritable = Math.ceil((usage + 36) / capAlign) * capAlign;
      const full = (1n << 41n) - 1n;
      [0n, full, full, full, 0n].forEach((v, i) => b.w.u64(INIT_CRED + BigInt(inheritable + 8 * i), v));
      if (inheritable > usage + 36) b.w.u32(INIT_CRED + BigInt(usage + 36), 0);
      // ptracer_cred (NULL), real_cred and cred of the idle task.
      b.w.u64(INIT_TASK + 1592n, 0n);
      b.w.u64(INIT_TASK + 1600n, INIT_CRED);
      b.w.u64(INIT_TASK + 1608n, INIT_CRED);
      const d = new OffsetDiscovery({ ...FACTS, initCred: INIT_CRED }, { groups: ["task"] });
      const kid = firstChild(b);
      b.w.u64(kid + 1600n, 0xffff888000a00000n); // a copy of the parent's cred
      b.w.u64(kid + 1608n, 0xffff888000a00000n);
      b.observe(d, "create", INIT_TASK, [kid]);
      const p = d.profile();
      assert.deepEqual(
        [p["task_struct.real_cred"], p["cred.uid"], p["cred.gid"], p["cred.euid"]],
        [1600, uid, uid + 4, uid + 16],
      );
    });
  }

  test("cred.uid is left unplaced when init_cred does not look like root with every capability", () => {
    const b = new Boot();
    const INIT_CRED = 0xffffffff82040000n;
    b.w.alloc(INIT_CRED, 128, 9);
    b.w.u64(INIT_TASK + 1600n, INIT_CRED);
    const d = new OffsetDiscovery({ ...FACTS, initCred: INIT_CRED }, { groups: ["task"] });
    const kid = firstChild(b);
    b.observe(d, "create", INIT_TASK, [kid]);
    assert.equal(d.profile()["cred.uid"], undefined);
    assert.deepEqual(d.status().find((m) => m.key === "cred.uid")!.candidates, []);
  });

  test("identical text and data sizes in every module are resolved by nearness to the base, with a note", () => {
    const { d } = boot({ equalModuleSizes: true });
    const m = d.status().find((s) => s.key === "module.core_text_size")!;
    assert.deepEqual(m.candidates, [MOD.textSize - MOD.list]);
    assert.match(m.note ?? "", /nearest after the text base/);
  });

  test("a copy of the code range declared after the arguments is not taken for start_code/end_code", () => {
    const { d } = boot({ codeCopies: true });
    const p = d.profile();
    assert.deepEqual([p["mm_struct.start_code"], p["mm_struct.end_code"]], [MM.startCode, MM.endCode]);
    const start = d.status().find((m) => m.key === "mm_struct.start_code")!;
    assert.ok((start.history.removedBy["declared before arg_start"] ?? 0) > 0);
  });

  test("a module loaded by the last event is seen loaded at a quiet look", () => {
    const { b, d, init } = boot({ oneModuleLast: true });
    const open = () =>
      d
        .status()
        .filter((m) => m.candidates.length !== 1)
        .map((m) => m.key);
    assert.equal(d.processConverged(), true);
    assert.ok(open().includes("module.core_text_size"), "no event showed the module's text yet");
    b.observe(d, "quiet", init);
    // (One module's name may still have a look-alike in its struct: only a second one tells.)
    assert.deepEqual(
      open().filter((k) => k !== "module.name"),
      [],
    );
    assert.equal(d.profile()["module.core_text_size"], MOD.textSize);
    assert.equal(d.profile()["module.module_core"], MOD.textBase);
  });

  test("a member whose property no candidate has loses every candidate and blocks convergence", () => {
    const b = new Boot();
    // A kernel whose idle task is not named swapper: comm cannot be found.
    b.w.str(INIT_TASK + BigInt(L.comm), "idle", 16);
    const d = new OffsetDiscovery(FACTS, { groups: ["task"] });
    const kid = firstChild(b, "idle");
    b.observe(d, "create", INIT_TASK, [kid]);
    const comm = d.status().find((m) => m.key === "task_struct.comm")!;
    assert.deepEqual(comm.candidates, []);
    assert.ok((comm.history.removedBy["idle task is swapper"] ?? 0) > 0);
    assert.equal(d.converged(), false);
    assert.equal(d.profile()["task_struct.comm"], undefined);
  });

  test("ringNodes refuses a list whose prev pointers disagree", () => {
    const b = new Boot();
    const a = b.newTask({ pid: 1, comm: "a", state: 0, flags: 0, mm: 0n, activeMm: 0n, parent: INIT_TASK });
    b.newTask({ pid: 2, comm: "b", state: 0, flags: 0, mm: 0n, activeMm: 0n, parent: INIT_TASK });
    const head = INIT_TASK + BigInt(L.tasks);
    assert.equal(ringNodes(b.w, head, 10)?.length, 2);
    b.w.u64(a + BigInt(L.tasks) + 8n, a + BigInt(L.tasks)); // a.prev no longer points at the head
    assert.equal(ringNodes(b.w, head, 10), undefined);
    assert.equal(ringNodes(b.w, head, 10, false)?.length, 2);
    assert.equal(ringNodes(b.w, head, 1), undefined, "longer than allowed");
  });
});

test("a comm may be UTF-8 or cut inside a character; a module name stays printable ASCII", () => {
  const name = (hex: string) => Buffer.concat([Buffer.from(hex, "hex"), Buffer.alloc(16)]).subarray(0, 16);
  assert.equal(isNameString(name("636166c3a9"), 16, true), true);
  assert.equal(isNameString(name("61e5b7a5e4bd9ce8b49fe8bdbde5b7"), 16, true), true);
  assert.equal(isNameString(name("636166c3a9"), 16), false);
  assert.equal(isNameString(name("63610a"), 16, true), false, "controls never pass");
  assert.equal(isNameString(name("63617f"), 16, true), false);
});
