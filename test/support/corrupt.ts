/**
 * Corrupting a live guest's kernel lists from outside, the way a bug or a rootkit would: the
 * guest paused while its memory is changed and read, the original bytes put back before it
 * runs again. Shared by the hostile-guest tests and the dashboard's hidden-process view.
 */
import assert from "node:assert/strict";
import { type KernelInfo, discoverKernel } from "../../src/os/linux/kernel.js";
import { listTasks } from "../../src/os/linux/tasks.js";
import { Target } from "../../src/qemu/session.js";
import { va } from "../../src/util/address.js";
import type { TestGuest } from "./guest.js";

/** include/linux/poison.h with CONFIG_ILLEGAL_POINTER_VALUE 0xdead000000000000 (x86-64). */
const LIST_POISON1 = 0xdead000000000100n;
const LIST_POISON2 = 0xdead000000000122n;

export interface Patch {
  readonly addr: bigint;
  readonly value: bigint;
}

/** `list_del(entry)`: the neighbours skip it, its own pointers are poisoned. */
export function listDel(k: KernelInfo, entry: bigint): Patch[] {
  const next = k.kernel.readU64(va(entry));
  const prev = k.kernel.readU64(va(entry + 8n));
  return [
    { addr: prev, value: next },
    { addr: next + 8n, value: prev },
    { addr: entry, value: LIST_POISON1 },
    { addr: entry + 8n, value: LIST_POISON2 },
  ];
}

/**
 * Pauses the guest, applies the patches `plan` makes, runs `check` on the frozen corrupt guest
 * (QEMU takes one QMP client at a time, so vmsight's own runs come between two attaches), then
 * writes the original bytes back and lets the guest run.
 */
export async function whileCorrupt(
  g: TestGuest,
  plan: (k: KernelInfo) => Patch[],
  check: () => Promise<void>,
): Promise<void> {
  let saved: Patch[] = [];
  try {
    await withPausedKernel(g, (k) => {
      for (const p of plan(k)) {
        saved.unshift({ addr: p.addr, value: k.kernel.readU64(va(p.addr)) });
        write(k, p);
      }
    });
    await check();
  } finally {
    await withPausedKernel(g, (k) => {
      for (const p of saved) write(k, p);
    });
    saved = [];
    const target = await Target.attach(g.qmpSocket);
    await target.resume();
    await target.close();
  }
}

/** Attaches, pauses the guest (it stays paused), finds its kernel and runs `fn` on it. */
async function withPausedKernel(g: TestGuest, fn: (k: KernelInfo) => void): Promise<void> {
  const target = await Target.attach(g.qmpSocket);
  try {
    await target.pause();
    const regs = await target.registers(0);
    const r = (n: string) => regs.get(n) ?? 0n;
    fn(discoverKernel(target.memory, { cr0: r("cr0"), cr3: r("cr3"), cr4: r("cr4"), efer: r("efer") }));
  } finally {
    await target.close();
  }
}

function write(k: KernelInfo, p: Patch): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(p.value);
  k.kernel.write(va(p.addr), b);
}

export const tasksOffset = (k: KernelInfo) => BigInt(k.layout.offsetof("task_struct", "tasks"));

export function taskOf(k: KernelInfo, pid: number): bigint {
  const t = listTasks(k).find((x) => x.pid === pid);
  assert.ok(t, `pid ${pid} is on the task list before the corruption`);
  return t.addr;
}
