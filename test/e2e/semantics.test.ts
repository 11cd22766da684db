/**
 * Issue 3 end to end: with nothing but the QMP socket, vmsight's ps/threads/lsmod/maps/kernel
 * must equal, field by field, what the guest itself prints from /proc over its console.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import { cliJson } from "../support/cli.js";
import { type Ps, assertPsMatchesView, eventually, reconcileState, transient } from "../support/compare.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";
import { guestSymbol, linkedTextAddress } from "../support/kallsyms-oracle.js";

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1,6.12").split(",");

for (const kernelId of KERNELS) {
  describe(`Linux semantics of a ${kernelId} guest (${ramBackendFor(kernelId)} RAM) equal its own /proc`, () => {
    let g: TestGuest;
    before(async () => {
      g = await bootTestGuest(kernelId, { memoryBackend: ramBackendFor(kernelId) });
      await g.waitReady(120_000);
    });
    after(async () => g?.stop());

    test("ps: every pid, ppid, uid, state, comm and cmdline", async () => {
      await eventually(g, async (view) => {
        const ours = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
        assertPsMatchesView(ours, view);
        assert.ok(ours.some((p) => p.comm === "my worker 1"));
        assert.ok(ours.some((p) => p.comm === "abcdefghijklmno"));
        assert.ok(
          ours.some(
            (p) => p.comm === "averyveryverylo" && p.cmdline === "workload name averyveryverylongname",
          ),
        );
      });
    });

    test("pids: the PID namespace's view of the processes equals the task list's", async () => {
      await eventually(g, async () => {
        const ps = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
        const pids = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "pids"]);
        assert.deepEqual(pids, ps);
      });
    });

    test("threads: every task of every process, with its tgid", async () => {
      await eventually(g, async (view) => {
        const ours = await cliJson<{ tid: number; tgid: number; state: string; comm: string }[]>([
          "--qmp",
          g.qmpSocket,
          "threads",
        ]);
        const skip = transient(view);
        const theirs = [...view.threads.entries()]
          .filter(([tgid]) => !skip.has(tgid))
          .flatMap(([, tasks]) =>
            tasks.map((t) => ({ tid: t.pid, tgid: t.tgid, state: t.state, comm: t.comm })),
          )
          .sort((a, b) => a.tgid - b.tgid || a.tid - b.tid);
        const byTid = new Map(theirs.map((t) => [t.tid, t]));
        const kthreads = new Set(view.processes.filter((p) => p.ppid === 2).map((p) => p.pid));
        assert.deepEqual(
          ours.map((t) =>
            reconcileState(
              { tid: t.tid, tgid: t.tgid, state: t.state, comm: t.comm },
              byTid.get(t.tid),
              kthreads.has(t.tgid),
            ),
          ),
          theirs,
        );
        const threaded = ours.filter((t) => t.tgid === view.roles.get("threads"));
        assert.equal(threaded.length, 5);
      });
    });

    test("lsmod: names, sizes, states and base addresses of /proc/modules", async () => {
      const view = await g.view();
      const ours = await cliJson<{ name: string; base: string; size: number; state: string }[]>([
        "--qmp",
        g.qmpSocket,
        "lsmod",
      ]);
      assert.deepEqual(
        ours.map((m) => ({ name: m.name, size: m.size, state: m.state, base: BigInt(m.base) })),
        view.modules.map((m) => ({ name: m.name, size: m.size, state: m.state, base: m.address })),
      );
      assert.equal(ours.length, 3);
    });

    test("maps: two workload processes, line for line", async () => {
      const view = await g.view();
      for (const role of ["memwrite", "threads"]) {
        const pid = view.roles.get(role)!;
        const ours = await cliJson<
          {
            start: string;
            end: string;
            perms: string;
            offset: string;
            dev: string;
            inode: string;
            path: string;
          }[]
        >(["--qmp", g.qmpSocket, "maps", String(pid)]);
        const theirs = view.maps.get(pid)!;
        assert.ok(theirs.length > 3, `the guest printed maps for ${role}`);
        assert.deepEqual(
          ours.map((m) => ({
            start: BigInt(m.start),
            end: BigInt(m.end),
            perms: m.perms,
            offset: BigInt(m.offset),
            dev: m.dev,
            inode: BigInt(m.inode),
            path: m.path,
          })),
          theirs.map((m) => ({
            start: m.start,
            end: m.end,
            perms: m.perms,
            offset: m.offset,
            dev: m.dev,
            inode: m.inode,
            path: m.path,
          })),
          `maps of ${role} (pid ${pid})`,
        );
      }
    });

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
