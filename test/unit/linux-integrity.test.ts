import assert from "node:assert/strict";
import { test } from "node:test";
import { AddressSpace } from "../../src/arch/x86/address-space.js";
import { X86_64_4LEVEL } from "../../src/arch/x86/formats.js";
import { describeCheck } from "../../src/commands/integrity.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { runqueueTasks, syscallFindings } from "../../src/os/linux/integrity.js";
import type { KernelInfo } from "../../src/os/linux/kernel.js";
import type { ModuleRow } from "../../src/os/linux/modules.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import { SymbolTable } from "../../src/symbols/kallsyms/table.js";
import { type VirtAddr, va } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";

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
