/**
 * 5-level paging (CR4.LA57, e.g. QEMU `-cpu max` with a Debian kernel): the kernel half starts
 * at 0xff00000000000000 and the direct map at 0xff11000000000000 plus the KASLR offset, far
 * below where 4-level kernels put anything. The bounds below are written from the Intel SDM's
 * canonical-address rule (bits 63..N-1 all equal, N = 48 or 57), not from walk.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { X86_64_4LEVEL, X86_64_5LEVEL } from "../../src/arch/x86/formats.js";
import { readCmdline } from "../../src/os/linux/process-memory.js";
import { listTasks, listThreads } from "../../src/os/linux/tasks.js";
import { BrokenListError, addressBounds, isKernelPointer, isUserAddress } from "../../src/os/linux/walk.js";
import { CraftedKernel, CraftedTasks, LA57_PAGE_OFFSET } from "../support/crafted-kernel.js";

const L4 = addressBounds(X86_64_4LEVEL);
const L5 = addressBounds(X86_64_5LEVEL);

test("the kernel half and user half of each paging mode", () => {
  const lowestKernel4 = 0xffff_8000_0000_0000n;
  const lowestKernel5 = 0xff00_0000_0000_0000n;
  const cases: [bigint, boolean, boolean][] = [
    // [address, kernel under 4-level, kernel under 5-level]
    [0xff43_789b_0121_29b0n, false, true], // a task_struct in a 5-level direct map
    [0xff11_0000_0000_0000n, false, true], // the unrandomised 5-level direct map
    [0xffa0_0000_0000_0000n, false, true], // 5-level vmalloc
    [lowestKernel5, false, true],
    [lowestKernel5 - 1n, false, false], // non-canonical in both
    [lowestKernel4, true, true],
    [0xffff_8880_0000_0000n, true, true],
    [0xffff_ffff_8100_0000n, true, true],
    [0xffff_ffff_ffff_fff4n, false, false], // ERR_PTR(-12), not an object
    [0x0000_7fff_ffff_f000n, false, false],
    [0n, false, false],
  ];
  for (const [p, k4, k5] of cases) {
    assert.equal(isKernelPointer(p, L4), k4, `4-level ${p.toString(16)}`);
    assert.equal(isKernelPointer(p, L5), k5, `5-level ${p.toString(16)}`);
  }
  assert.equal(L4.levels, 4);
  assert.equal(L5.levels, 5);
  assert.ok(isUserAddress(0x0000_7fff_ffff_ffffn, L4) && !isUserAddress(0x0000_8000_0000_0000n, L4));
  assert.ok(isUserAddress(0x00ff_ffff_ffff_ffffn, L5) && !isUserAddress(0x0100_0000_0000_0000n, L5));
  assert.throws(() => addressBounds({ vaBits: 32 }), /32-bit/);
});

/** A 5-level kernel: init, a process with a command line in its (5-level) user space, a thread. */
function la57System() {
  const ck = new CraftedKernel({ levels: 5 });
  const t = new CraftedTasks(ck);
  const init = t.addProcess({ pid: 1, comm: "init", argv: ["/sbin/init"] });
  const app = t.addProcess({ pid: 42, comm: "app", argv: ["app", "--la57"], parent: init.task });
  t.addTask({ pid: 43, comm: "app-worker", leader: app.task, parent: init.task });
  return { ck, t, init, app };
}

test("a crafted 5-level kernel: page tables of five levels and tasks in the LA57 direct map", () => {
  const { ck, app } = la57System();
  assert.equal(ck.kernel.format?.levels.length, 5);
  assert.ok(app.task >= LA57_PAGE_OFFSET && app.task < 0xffff_8000_0000_0000n, "a 5-level-only pointer");
  const ctx = ck.context();
  const tasks = listTasks(ctx);
  assert.deepEqual(
    tasks.map((x) => [x.pid, x.ppid, x.comm]),
    [
      [1, 0, "init"],
      [42, 1, "app"],
    ],
  );
  assert.deepEqual(
    listThreads(ctx, app.task).map((x) => x.pid),
    [42, 43],
  );
  assert.equal(readCmdline(ctx, tasks[1]!).strings.join(" "), "app --la57");
});

test("the same memory judged with 4-level bounds: the walk names the list and the pointer it refused", () => {
  const { ck } = la57System();
  const ctx = { ...ck.context(), bounds: L4 };
  assert.throws(
    () => listTasks(ctx),
    (e: unknown) =>
      e instanceof BrokenListError &&
      e.list === "task_struct.tasks" &&
      /task_struct\.tasks next pointer at 0xffffffff[0-9a-f]+ is not a kernel pointer: 0xff2ffac2/.test(
        e.message,
      ),
  );
});
