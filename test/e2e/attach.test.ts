/**
 * Issue 2 end to end: attach to real Debian guests through nothing but QMP, read guest memory
 * physically and virtually, translate kernel and user addresses, read registers, and hit a
 * breakpoint and a watchpoint. The guest itself (its /proc, its pagemap) is the oracle.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { canMapFiles } from "../../src/memory/mmap.js";
import { discoverRamLayout, openGuestMemory } from "../../src/memory/qemu/layout.js";
import { type KernelInfo, discoverKernel } from "../../src/os/linux/kernel.js";
import { listForEachEntry } from "../../src/os/linux/walk.js";
import { Target } from "../../src/qemu/session.js";
import { pa, va } from "../../src/util/address.js";
import { cliJson, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";
import type { GuestView } from "../support/oracle.js";
import { skipUnless } from "../support/skip.js";

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1,6.12").split(",");

/** Attaches in-process, runs `fn` with the kernel discovered, and lets the guest run again. */
async function withKernel<T>(qmp: string, fn: (t: Target, k: KernelInfo) => Promise<T>): Promise<T> {
  const target = await Target.attach(qmp);
  try {
    const regs = await target.registers(0);
    const r = (n: string) => regs.get(n) ?? 0n;
    const k = discoverKernel(target.memory, { cr0: r("cr0"), cr3: r("cr3"), cr4: r("cr4"), efer: r("efer") });
    return await fn(target, k);
  } finally {
    await target.close();
  }
}

/** The physical address of a process's top-level page table, from its task_struct. */
function processPgdPhys(k: KernelInfo, pid: number): bigint {
  const L = k.layout;
  const head = va(k.symbols.getAddress("init_task") + BigInt(L.offsetof("task_struct", "tasks")));
  for (const task of listForEachEntry(k, head, "task_struct", "tasks")) {
    if (k.kernel.readU32(va(task + BigInt(L.offsetof("task_struct", "pid")))) !== pid) continue;
    const mm = k.kernel.readU64(va(task + BigInt(L.offsetof("task_struct", "mm"))));
    const pgd = k.kernel.readU64(va(mm + BigInt(L.offsetof("mm_struct", "pgd"))));
    return k.directToPhys(va(pgd));
  }
  throw new Error(`pid ${pid} not found`);
}

for (const kernelId of KERNELS) {
  const backend = ramBackendFor(kernelId);
  describe(`attach to a ${kernelId} guest (${backend} RAM) through QMP`, () => {
    let g: TestGuest;
    let view: GuestView;
    before(async () => {
      g = await bootTestGuest(kernelId, { memoryBackend: backend });
      await g.waitReady(120_000);
      view = await g.view();
    });
    after(async () => g?.stop());

    test("status: running, 512 MiB, read straight from QEMU's memory", async () => {
      const s = await cliJson<{ running: boolean; ramSize: string; memoryPath: string }>([
        "--qmp",
        g.qmpSocket,
        "status",
      ]);
      assert.equal(s.running, true);
      assert.equal(BigInt(s.ramSize), 512n << 20n);
      if (backend === "anonymous") assert.match(s.memoryPath, /^\/proc\/\d+\/mem$/);
      else {
        // RAM through the memfd (mapped when the native reader is built); firmware ROM through mem.
        const unmapped = skipUnless(
          canMapFiles(),
          "the native reader (scripts/build-native.sh) is not built",
        );
        const mapped = unmapped ? "" : " \\(mapped\\)";
        assert.match(
          s.memoryPath,
          new RegExp(`^shared RAM /proc/\\d+/map_files/[0-9a-f]+-[0-9a-f]+ \\+ /proc/\\d+/mem${mapped}$`),
        );
      }
    });

    // Only a memfd guest has a second way to its RAM; CI runs no test as skipped.
    if (backend === "memfd") {
      test("the same bytes through the memfd and through /proc/<pid>/mem", async () => {
        const auto = await Target.attach(g.qmpSocket);
        try {
          await auto.pause();
          const byProcess = openGuestMemory(await discoverRamLayout(auto.qmp, auto.pid), "process");
          try {
            for (const [addr, length] of [
              [0x1000n, 4096],
              [0x100000n, 65536],
              [0x1ff00000n, 4096],
            ] as const) {
              assert.deepEqual(
                auto.memory.read(pa(addr), length),
                byProcess.read(pa(addr), length),
                `at ${addr}`,
              );
            }
          } finally {
            byProcess.close();
          }
        } finally {
          await auto.resume();
          await auto.close();
        }
      });
    }

    test("regs twice in a row (the second reuses the gdbstub); the guest keeps running", async () => {
      for (let i = 0; i < 2; i++) {
        const regs = await cliJson<Record<string, string>>(["--qmp", g.qmpSocket, "regs"]);
        for (const name of [
          "rip",
          "rsp",
          "cr0",
          "cr3",
          "cr4",
          "efer",
          "fs_base",
          "gs_base",
          "k_gs_base",
          "cs",
        ]) {
          assert.match(regs[name] ?? "", /^0x[0-9a-f]+$/, `register ${name}`);
        }
        assert.notEqual(BigInt(regs.cr0!) & (1n << 31n), 0n, "paging is on");
      }
      const s = await cliJson<{ running: boolean }>(["--qmp", g.qmpSocket, "status"]);
      assert.equal(s.running, true);
    });

    test("registers from the gdbstub equal QEMU's own `info registers`", async () => {
      const target = await Target.attach(g.qmpSocket);
      try {
        await target.pause();
        const regs = await target.registers(0);
        const hmp = await target.qmp.hmp("info registers");
        const field = (n: string) => BigInt(`0x${new RegExp(`${n}=([0-9a-f]+)`).exec(hmp)![1]}`);
        assert.equal(regs.get("cr3"), field("CR3"));
        assert.equal(regs.get("rip"), field("RIP"));
        assert.equal(regs.get("cr4"), field("CR4"));
      } finally {
        await target.resume();
        await target.close();
      }
    });

    test("the kernel banner reads the same through physical and virtual addresses", async () => {
      const { virt, phys } = await withKernel(g.qmpSocket, async (t, k) => {
        const v = k.symbols.getAddress("linux_banner");
        return { virt: v, phys: k.kernel.translate(va(v)).phys };
      });
      const len = 80;
      const byVirt = await cliJson<{ bytes: string }>([
        "--qmp",
        g.qmpSocket,
        "read",
        "--virt",
        `0x${virt.toString(16)}`,
        `${len}`,
      ]);
      const byPhys = await cliJson<{ bytes: string }>([
        "--qmp",
        g.qmpSocket,
        "read",
        "--phys",
        `0x${phys.toString(16)}`,
        `${len}`,
      ]);
      assert.equal(byVirt.bytes, byPhys.bytes);
      assert.ok(
        Buffer.from(byPhys.bytes, "hex").toString("latin1").startsWith(`Linux version ${view.release} `),
      );
    });

    test("translate: kernel text, the direct map, and a user address checked against the guest's pagemap", async () => {
      const { textPhys, text, pageOffset, pgd } = await withKernel(g.qmpSocket, async (_t, k) => ({
        text: k.textStart,
        textPhys: k.kernel.translate(va(k.textStart)).phys,
        pageOffset: k.pageOffset,
        pgd: processPgdPhys(k, view.roles.get("memwrite")!),
      }));
      const t1 = await cliJson<{ phys: string; executable: boolean }>([
        "--qmp",
        g.qmpSocket,
        "translate",
        `0x${text.toString(16)}`,
      ]);
      assert.equal(BigInt(t1.phys), textPhys);
      assert.equal(t1.executable, true);
      const direct = pageOffset + textPhys;
      const t2 = await cliJson<{ phys: string }>([
        "--qmp",
        g.qmpSocket,
        "translate",
        `0x${direct.toString(16)}`,
      ]);
      assert.equal(BigInt(t2.phys), textPhys, "the direct map maps phys + page_offset_base to phys");

      const pid = view.roles.get("memwrite")!;
      const counter = view.counterAddress!;
      // The guest's own answer: /proc/<pid>/pagemap holds the frame number of each page.
      const pfnHex = await g.serial.command(
        `dd if=/proc/${pid}/pagemap bs=8 skip=${counter / 4096n} count=1 2>/dev/null | od -An -tx8`,
      );
      const pfn = BigInt(`0x${pfnHex.trim()}`) & ((1n << 55n) - 1n);
      assert.ok(pfn > 0n, "the guest reports the counter page present");
      const t3 = await cliJson<{ phys: string; user: boolean }>([
        "--qmp",
        g.qmpSocket,
        "translate",
        `0x${counter.toString(16)}`,
        "--cr3",
        `0x${pgd.toString(16)}`,
      ]);
      assert.equal(BigInt(t3.phys), pfn * 4096n + (counter & 0xfffn));
      assert.equal(t3.user, true);
    });

    test("a breakpoint on kernel_clone hits when the guest forks; a write watchpoint on jiffies hits", async () => {
      const target = await Target.attach(g.qmpSocket);
      try {
        const regs = await target.registers(0);
        const r = (n: string) => regs.get(n) ?? 0n;
        const k = discoverKernel(target.memory, {
          cr0: r("cr0"),
          cr3: r("cr3"),
          cr4: r("cr4"),
          efer: r("efer"),
        });
        const gdb = await target.gdb();
        const clone = k.symbols.getAddress("kernel_clone");
        await gdb.insertBreakpoint(0, clone, 1);
        const stopped = gdb.continue();
        g.serial.send("ls / >/dev/null");
        const bp = await stopped;
        await gdb.removeBreakpoint(0, clone, 1);
        assert.equal((await gdb.readRegisters()).get("rip"), clone);
        assert.equal(bp.type === "signal" ? bp.signal : -1, 5);

        const jiffies = k.symbols.getAddress("jiffies_64");
        await gdb.insertBreakpoint(2, jiffies, 8);
        const wp = await gdb.continue();
        await gdb.removeBreakpoint(2, jiffies, 8);
        assert.equal(wp.type === "signal" ? wp.watch?.address : undefined, jiffies);
      } finally {
        await target.close();
      }
      const s = await cliJson<{ running: boolean }>(["--qmp", g.qmpSocket, "status"]);
      assert.equal(s.running, true, "the guest runs again after the test's traps");
    });

    test("bad addresses give one clear line", async () => {
      const r1 = await runCli(["--qmp", g.qmpSocket, "read", "--phys", "0x7ffff0000000", "16"]);
      assert.equal(r1.code, 1);
      assert.match(r1.stderr, /^vmsight: phys: no guest RAM backs this address .*at 0x7ffff0000000\n$/);
      const r2 = await runCli(["--qmp", g.qmpSocket, "translate", "0x8000000000000000"]);
      assert.equal(r2.code, 1);
      assert.match(r2.stderr, /non-canonical/);
    });
  });
}
