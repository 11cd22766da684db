/**
 * Issue 2 end to end, the unusual cases: a QEMU whose only control option is `-qmp`, with 4 GiB
 * of RAM in a shared file (split around the PCI hole), and sockets that are not QEMU at all.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Target } from "../../src/qemu/session.js";
import { pa } from "../../src/util/address.js";
import { assertCleanError, cliJson, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";

/** Scans guest-physical pages from `start` (or down from `end`) for one that is not all zeros. */
function firstNonZeroPage(t: Target, start: bigint, end: bigint, fromTop = false): bigint {
  const chunk = 1n << 20n;
  for (let i = 0n; i < (end - start) / chunk; i++) {
    const base = fromTop ? end - (i + 1n) * chunk : start + i * chunk;
    const bytes = t.memory.read(pa(base), Number(chunk));
    for (let off = 0; off < bytes.length; off += 4096) {
      const page = fromTop ? bytes.length - 4096 - off : off;
      if (bytes.subarray(page, page + 4096).some((x) => x !== 0)) return base + BigInt(page);
    }
  }
  throw new Error(`no non-zero page in ${start.toString(16)}..${end.toString(16)}`);
}

describe("a 4 GiB guest with only -qmp and its RAM in a shared file", () => {
  let g: TestGuest;
  before(async () => {
    g = await bootTestGuest("6.12", { qmpOnly: true, memory: "4G", memoryBackend: "shared-file" });
    await g.waitReady(180_000);
  });
  after(async () => g?.stop());

  test("status finds the RAM file and both halves of RAM around the PCI hole", async () => {
    const s = await cliJson<{
      ramSize: string;
      memoryPath: string;
      ranges: { start: string; end: string }[];
    }>(["--qmp", g.qmpSocket, "status"]);
    assert.equal(BigInt(s.ramSize), 4n << 30n);
    assert.match(s.memoryPath, /^\/dev\/shm\//);
    assert.ok(s.ranges.some((r) => BigInt(r.start) === 0x100000000n && BigInt(r.end) === 0x140000000n));
  });

  test("reads above 4 GiB equal the gdbstub's physical reads, through the file and through the process", async () => {
    const byFile = await Target.attach(g.qmpSocket, { memory: "file" });
    // Probe pages known to hold data (all-zero pages would make the comparison vacuous): the
    // first non-zero pages below and above the PCI hole (the kernel allocates top-down).
    const probes = [
      firstNonZeroPage(byFile, 0x100000n, 0xc0000000n),
      firstNonZeroPage(byFile, 0x100000000n, 0x140000000n, true),
    ];
    const ours = probes.map((a) => byFile.memory.read(pa(a), 256));
    const gdb = await byFile.gdb();
    await gdb.setPhysicalMemoryMode(true);
    const theirs: Buffer[] = [];
    for (const a of probes) theirs.push(await gdb.readMemory(a, 256));
    await gdb.setPhysicalMemoryMode(false);
    await byFile.close();
    const byProcess = await Target.attach(g.qmpSocket, { memory: "process" });
    const viaProcess = probes.map((a) => byProcess.memory.read(pa(a), 256));
    await byProcess.close();
    assert.ok(
      theirs.some((b) => b.some((x) => x !== 0)),
      "some probed page holds data",
    );
    assert.deepEqual(ours, theirs);
    assert.deepEqual(viaProcess, theirs);
  });

  test("regs and kernel work with nothing configured but -qmp", async () => {
    const regs = await cliJson<Record<string, string>>(["--qmp", g.qmpSocket, "regs"]);
    assert.match(regs.cr3 ?? "", /^0x/);
    const [k] = await cliJson<{ version: string; symbols: number }[]>(["--qmp", g.qmpSocket, "kernel"]);
    assert.equal(k!.version, g.image.release);
    assert.ok(k!.symbols > 100_000);
  });
});

describe("sockets that are not a usable QEMU", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-bad-"));

  test("a path with no socket", async () => {
    const r = await runCli(["--qmp", join(dir, "nope.sock"), "status"]);
    assertCleanError(r);
    assert.match(r.stderr, /no QMP socket/);
  });

  test("a socket that speaks something else", async () => {
    const path = join(dir, "http.sock");
    const server = createServer((c) => c.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((ok) => server.listen(path, ok));
    try {
      const r = await runCli(["--qmp", path, "status"]);
      assertCleanError(r);
      assert.match(r.stderr, /not QMP|QMP/);
    } finally {
      server.close();
    }
  });

  test("a QEMU that dies while vmsight waits on it", async () => {
    const path = join(dir, "dying.sock");
    const qemu = spawn(
      "qemu-system-x86_64",
      ["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-qmp", `unix:${path},server=on,wait=off`],
      { stdio: "ignore" },
    );
    try {
      for (let i = 0; i < 100; i++) {
        const probe = await runCli(["--qmp", path, "status", "--json"]).catch(() => undefined);
        if (probe?.code === 0) break;
        await sleep(100);
      }
      qemu.kill("SIGSTOP");
      const pending = runCli(["--qmp", path, "status"]);
      await sleep(1000);
      qemu.kill("SIGKILL");
      const r = await pending;
      assertCleanError(r);
      assert.match(r.stderr, /closed|exit|greeting/i);
    } finally {
      qemu.kill("SIGKILL");
    }
  });

  test("usage errors exit 2 with the usage line", async () => {
    const r = await runCli(["--qmp", "/nonexistent", "read", "--phys", "zzz", "16"]);
    assert.equal(r.code, 2);
    assertCleanError(r);
  });
});
