/**
 * Issue 3 end to end: with nothing but the QMP socket, vmsight's ps/threads/lsmod/maps/kernel
 * must equal, field by field, what the guest itself prints from /proc over its console.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import { cliJson } from "../support/cli.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";
import { guestSymbol, linkedTextAddress } from "../support/kallsyms-oracle.js";
import {
  checkLsmod,
  checkMaps,
  checkPids,
  checkPs,
  checkPstree,
  checkThreads,
} from "../support/semantics-checks.js";

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1,6.12").split(",");

for (const kernelId of KERNELS) {
  describe(`Linux semantics of a ${kernelId} guest (${ramBackendFor(kernelId)} RAM) equal its own /proc`, () => {
    let g: TestGuest;
    before(async () => {
      g = await bootTestGuest(kernelId, { memoryBackend: ramBackendFor(kernelId) });
      await g.waitReady(120_000);
    });
    after(async () => g?.stop());

    test("ps: every pid, ppid, uid, state, comm and cmdline", () => checkPs(g));

    test("pstree: every process under its name as the guest shows it", () => checkPstree(g));

    test("pids: the PID namespace's view of the processes equals the task list's", () => checkPids(g));

    test("threads: every task of every process, with its tgid", () => checkThreads(g));

    test("lsmod: names, sizes, states and base addresses of /proc/modules", () => checkLsmod(g));

    test("maps: workload processes, every column, line for line", () => checkMaps(g));

    test("kernel: the release the guest reports, KASLR on, symbols and types from memory", async () => {
      const view = await g.view();
      const [k] = await cliJson<{ version: string; slide: string; symbols: number; types: number }[]>([
        "--qmp",
        g.qmpSocket,
        "kernel",
      ]);
      assert.equal(k!.version, view.release);
      assert.ok(k!.symbols > 90_000);
      assert.ok(k!.types > 100_000);
      // The guest's own /proc/kallsyms says where _text is; the build's config where it was linked.
      const text = await guestSymbol(g.serial, "_text");
      const files = ensureKernel(kernelId);
      assert.equal(BigInt(k!.slide), text - linkedTextAddress(files.vmlinuz, files.release));
      assert.notEqual(BigInt(k!.slide), 0n, "the guest runs with KASLR");
    });
  });
}
