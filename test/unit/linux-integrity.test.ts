import assert from "node:assert/strict";
import { test } from "node:test";
import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { describeCheck } from "../../src/commands/integrity.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { hiddenModules, runqueueTasks, syscallFindings } from "../../src/os/linux/integrity.js";
import type { KernelInfo } from "../../src/os/linux/kernel.js";
import { type ModuleRow, listModules } from "../../src/os/linux/modules.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import { SymbolTable } from "../../src/symbols/kallsyms/table.js";
import { type VirtAddr, va } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel } from "../support/crafted-kernel.js";
import { LAYOUT_6_1, fakeLayout } from "../support/crafted-maps.js";

// Kernel text, a syscall table and a runqueue in one identity-mapped buffer in the kernel half.
const BASE = 0xffffffff81000000n;
const TEXT_END = BASE + 0x10000n;
const TABLE = BASE + 0x20000n;
const RQ = BASE + 0x30000n;
const OFF: Record<string, number> = {
  "rq.curr": 0,
  "rq.cfs": 64,
  "cfs_rq.tasks_timeline.rb_root.rb_node": 8,
  "rb_node.rb_left": 16,
  "rb_node.rb_right": 8,
  "sched_entity.run_node": 16,
  "sched_entity.my_q": 200,
  "task_struct.se": 128,
};

function craft(tableEntries: readonly bigint[], padding: number) {
  const mem = new BufferPhysicalMemory();
  const ram = mem.map(BASE, 1 << 20);
  const u64 = (a: bigint, v: bigint) => ram.writeBigUInt64LE(v, Number(a - BASE));
  tableEntries.forEach((e, i) => u64(TABLE + BigInt(i * 8), e));
  const symbols = new SymbolTable([
    { name: "_stext", address: BASE, type: "T" },
    { name: "_etext", address: TEXT_END, type: "T" },
    { name: "sys_call_table", address: TABLE, type: "R" },
    { name: "after_table", address: TABLE + BigInt((tableEntries.length + padding) * 8), type: "R" },
    { name: "runqueues", address: 0n, type: "D", absolute: true },
  ]);
  const k = {
    kernel: AddressSpace.identity(mem),
    symbols,
    bounds: addressBounds(X86_64_4LEVEL),
    perCpuOffsets: [RQ],
    layout: {
      offsetof: (s: string, p: string) => OFF[`${s}.${p}`] ?? assert.fail(`no ${s}.${p}`),
      findOffset: (s: string, p: string) => OFF[`${s}.${p}`],
    },
  } as unknown as KernelInfo;
  return { k, u64 };
}

const module = (name: string, base: bigint, size: number): ModuleRow =>
  ({ addr: va(base + 0x8000n), name, base, size }) as ModuleRow;

test("syscall entries outside kernel text are findings naming the module that owns them; padding is not", () => {
  const hook = 0xffffffffc0001000n;
  const { k } = craft([BASE + 0x100n, hook, BASE + 0x200n, 0xffff888000001000n, BASE + 0x300n], 3);
  const rk = module("rk", 0xffffffffc0000000n, 0x4000);
  const findings = syscallFindings(k, [rk], new Set([rk.addr as bigint]));
  assert.deepEqual(
    findings.map((f) => [f.index, f.owner]),
    [
      [1, "rk"],
      [3, ""],
    ],
  );
  assert.match(findings[0]!.what, /module rk \(hidden\)/);
  assert.equal(findings[0]!.address, TABLE + 8n);
  assert.match(describeCheck(findings), /2 findings: 2 altered syscall-table entries$/);
  assert.match(describeCheck([]), /^clean:/);
});

test("a syscall table no symbol ends within 1024 entries is refused", () => {
  const { k } = craft([BASE + 0x100n], 2000);
  assert.throws(() => syscallFindings(k, [], new Set()), GuestDataError);
});

test("the runqueue gives curr and every task of the CFS tree, through group entities", () => {
  const { k, u64 } = craft([], 1);
  const task = (n: number): VirtAddr => va(BASE + 0x40000n + BigInt(n * 0x1000));
  const node = (t: bigint) => t + 128n + 16n; // task->se.run_node
  u64(RQ, task(0));
  u64(RQ + 64n + 8n, node(task(1)));
  u64(node(task(1)) + 16n, node(task(2))); // left child
  // A group entity on the right, whose own queue holds task 3.
  const group = BASE + 0x50000n;
  const groupQ = BASE + 0x51000n;
  u64(node(task(1)) + 8n, group + 16n);
  u64(group + 200n, groupQ);
  u64(groupQ + 8n, node(task(3)));
  assert.deepEqual(runqueueTasks(k).sort(), [task(0), task(1), task(2), task(3)].sort());
});

test("a CFS tree that loops is a GuestDataError, not a hang", () => {
  const { k, u64 } = craft([], 1);
  const n = BASE + 0x60000n;
  u64(RQ + 64n + 8n, n);
  u64(n + 16n, n);
  assert.throws(() => runqueueTasks(k), GuestDataError);
});

// ---- modules in module memory ------------------------------------------------------------------

/** 6.1's struct module: mkobj right after name[56]; struct module_kobject holds mod after kobj. */
const MODULE_TABLE = {
  ...LAYOUT_6_1,
  offsets: { ...LAYOUT_6_1.offsets, "module.mkobj": 80, "module_kobject.mod": 64 },
};
const SELF = 80n + 64n;
const MOD_AREA = 0xffffffffc0200000n;

/** A kernel whose module space holds 64 KiB of writable pages and a one-page read-only text. */
function moduleSpace() {
  const ck = new CraftedKernel();
  ck.mapModuleSpace(MOD_AREA, 0x10000);
  ck.mapModuleSpace(MOD_AREA + 0x10000n, 0x1000, false);
  const head = ck.alloc(16);
  ck.listInit(head);
  ck.symbols.table.set("modules", head);
  const k = ck.context(fakeLayout(MODULE_TABLE)) as unknown as KernelInfo;
  /** A struct module as load_module() leaves it in the module's data: named, stated, self-known. */
  const place = (at: bigint, name: string | Buffer, state = 0, self = at) => {
    ck.writeI32(at, state);
    ck.write(at + 24n, Buffer.concat([Buffer.from(name), Buffer.alloc(1)]));
    ck.writeU64(at + 320n, MOD_AREA + 0x10000n); // core_layout.base: its text
    ck.writeU32(at + 328n, 0x1000);
    ck.writeU64(at + SELF, self);
  };
  const list = (at: bigint) => ck.listAddTail(at + 8n, head);
  return { ck, k, place, list };
}

const hiddenIn = (k: KernelInfo) =>
  hiddenModules(k, listModules(k)).map((h) => ({ name: h.row.name, addr: h.row.addr, seenIn: h.seenIn }));

test("a module off the modules list is found in module memory by its mkobj.mod self-pointer", () => {
  const { k, place, list } = moduleSpace();
  const listed = MOD_AREA + 0x1040n;
  const hidden = MOD_AREA + 0x8040n;
  place(listed, "e1000");
  list(listed);
  place(hidden, "vmsight_rk");
  assert.deepEqual(hiddenIn(k), [{ name: "vmsight_rk", addr: hidden, seenIn: ["module memory"] }]);
  // The same module on the list is no finding: module memory is only the second view.
  list(hidden);
  assert.deepEqual(hiddenIn(k), []);
});

test("garbage in module memory is not a module: bad state, bad name, unformed, noise, read-only", () => {
  const { ck, k, place } = moduleSpace();
  place(MOD_AREA + 0x0040n, "stale", 9);
  place(MOD_AREA + 0x1040n, Buffer.from([0x01, 0x7f, 0x41]));
  place(MOD_AREA + 0x2040n, "");
  place(MOD_AREA + 0x3040n, "has space");
  place(MOD_AREA + 0x4040n, "freed", 3); // MODULE_STATE_UNFORMED: being freed
  // A self-pointer alone: the rest of the "struct" is noise that does not fault.
  let x = 0x2545f4914f6cdd1dn;
  for (let i = 0n; i < 0x1000n; i += 8n) {
    x = BigInt.asUintN(64, x * 6364136223846793005n + 1442695040888963407n);
    ck.writeU64(MOD_AREA + 0x6000n + i, x);
  }
  ck.writeU64(MOD_AREA + 0x6040n + SELF, MOD_AREA + 0x6040n);
  // A module's text is never its struct module's home: read-only pages are not scanned.
  place(MOD_AREA + 0x10040n, "in_text");
  // A well-formed module near the end of the writable pages, whose name lies past them.
  ck.writeU64(MOD_AREA + 0xfff8n, MOD_AREA + 0xfff8n - SELF);
  assert.deepEqual(hiddenIn(k), []);
  // The same spot, once it holds a sane module, is found: the checks above are what refused.
  place(MOD_AREA + 0x0040n, "stale", 0);
  assert.deepEqual(
    hiddenIn(k).map((h) => h.name),
    ["stale"],
  );
});
