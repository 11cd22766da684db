/**
 * Offline dumps and the snapshot fallback: a QEMU ELF dump (dump-guest-memory) and a snapshot
 * attach must read exactly as the live guest does at the same instant, and bad dump files give
 * one clear line.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { openKernel } from "../../src/commands/linux.js";
import { psRows } from "../../src/commands/processes.js";
import { ensureKernel } from "../../src/guests/kernels.js";
import { Target } from "../../src/qemu/session.js";
import { assertCleanError, cliJson, runCli } from "../support/cli.js";
import type { Ps } from "../support/compare.js";
import { type TestGuest, bootTestGuest, qemuElfDump } from "../support/guest.js";
import {
  guestSymbol,
  linkedTextAddress,
  readGuestKallsyms,
  systemMapFromKallsyms,
} from "../support/kallsyms-oracle.js";
import type { GuestView } from "../support/oracle.js";

describe("a QEMU ELF dump reads like the live guest it was taken from", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-dump-"));
  const dump = join(dir, "guest.elf");
  let g: TestGuest;
  let view: GuestView;
  let livePs: Ps[];
  let liveRegs: Record<string, string>;
  before(async () => {
    g = await bootTestGuest("6.12");
    await g.waitReady(180_000);
    view = await g.view();
    await qemuElfDump(g.qmpSocket, dump, { timeoutMs: 120_000, pause: "leave" });
    // Still paused: the live guest is in the very state the dump recorded.
    livePs = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    liveRegs = await cliJson<Record<string, string>>(["--qmp", g.qmpSocket, "regs"]);
    const t2 = await Target.attach(g.qmpSocket);
    await t2.resume();
    await t2.close();
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("ps from the dump equals ps of the paused live guest, workload included", async () => {
    const fromDump = await cliJson<Ps[]>(["--dump", dump, "ps"]);
    assert.deepEqual(fromDump, livePs);
    for (const [role, pid] of view.roles) {
      const theirs = view.processes.find((p) => p.pid === pid)!;
      const ours = fromDump.find((p) => p.pid === pid);
      assert.equal(ours?.comm, theirs.comm, `role ${role}`);
      assert.equal(ours?.state, theirs.state, `role ${role}`);
    }
  });

  test("registers come from the dump's CPU notes", async () => {
    const regs = await cliJson<Record<string, string>>(["--dump", dump, "regs"]);
    for (const name of ["cr0", "cr3", "cr4", "rip", "rsp"]) assert.equal(regs[name], liveRegs[name], name);
  });

  test("maps and lsmod work on the dump", async () => {
    const pid = view.roles.get("memwrite")!;
    const maps = await cliJson<{ path: string }[]>(["--dump", dump, "maps", String(pid)]);
    assert.ok(maps.some((m) => m.path === "/bin/workload"));
    const mods = await cliJson<{ name: string }[]>(["--dump", dump, "lsmod"]);
    assert.deepEqual(mods.map((m) => m.name).sort(), view.modules.map((m) => m.name).sort());
  });

  test("a snapshot attach (the fallback when QEMU's memory may not be opened) lists the same tasks", async () => {
    const t = await Target.attach(g.qmpSocket, { memory: "snapshot" });
    try {
      await t.pause();
      const viaSnapshot = psRows(await openKernel(t));
      assert.ok(viaSnapshot.length > 40);
      const workload = viaSnapshot.filter((p) => [...view.roles.values()].includes(p.pid));
      assert.equal(workload.length, view.roles.size);
      assert.throws(() => t.memory.write(0x1000n as never, Buffer.from([1])), /read-only/);
    } finally {
      await t.resume();
      await t.close();
    }
  });

  test("the guest's own symbol list, as System.map or as /proc/kallsyms, gives the same listing and slide", async () => {
    const kallsyms = await readGuestKallsyms(g.serial);
    const files = ensureKernel("6.12");
    const slide = (await guestSymbol(g.serial, "_text")) - linkedTextAddress(files.vmlinuz, files.release);
    const map = join(dir, "System.map");
    writeFileSync(map, systemMapFromKallsyms(kallsyms, slide));
    const procKallsyms = join(dir, "kallsyms");
    writeFileSync(procKallsyms, kallsyms);
    const [fromMemory] = await cliJson<{ slide: string }[]>(["--dump", dump, "kernel"]);
    assert.equal(BigInt(fromMemory!.slide), slide);
    assert.notEqual(slide, 0n, "the guest runs with KASLR");
    for (const file of [map, procKallsyms]) {
      assert.deepEqual(await cliJson<Ps[]>(["--dump", dump, "ps", "--system-map", file]), livePs, file);
      const [withMap] = await cliJson<{ slide: string }[]>(["--dump", dump, "kernel", "--system-map", file]);
      assert.equal(BigInt(withMap!.slide), slide, file);
    }
  });

  test("bad dump files give one clear line", async () => {
    const missing = await runCli(["--dump", join(dir, "nope.elf"), "ps"]);
    assertCleanError(missing);
    const junk = join(dir, "junk.elf");
    writeFileSync(junk, "not an elf file at all, just text".repeat(10));
    const r = await runCli(["--dump", junk, "ps"]);
    assertCleanError(r);
    const live = await runCli(["--dump", dump, "pause"]);
    assertCleanError(live);
    assert.match(live.stderr, /live guest/);
  });
});
