/**
 * Against a real, paused, BIOS-only QEMU (no kernel or disk needed). Skipped when
 * qemu-system-x86_64 is not on PATH (a failure under VMSIGHT_REQUIRE_ALL=1).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { constants, accessSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { after, before, test } from "node:test";
import { GdbClient } from "../../src/transport/gdb/client.js";
import { skipUnless } from "../support/skip.js";

const QEMU = "qemu-system-x86_64";

function onPath(bin: string): boolean {
  return (process.env.PATH ?? "").split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, bin), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const skip = skipUnless(onPath(QEMU), `${QEMU} is not on PATH`);
let qemu: ChildProcess | undefined;
let dir = "";
let client: GdbClient;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "gdb-live-"));
  const sock = join(dir, "gdb.sock");
  qemu = spawn(
    QEMU,
    ["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-gdb", `unix:${sock},server=on,wait=off`],
    {
      stdio: "ignore",
    },
  );
  // The socket file appears at bind(), a moment before QEMU listens: retry refused connects.
  for (let i = 0; ; i++) {
    try {
      client = await GdbClient.connect({ path: sock });
      break;
    } catch (err) {
      if (i >= 200) throw err;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
});

after(async () => {
  await client?.close();
  if (qemu && qemu.exitCode === null) {
    const exited = new Promise((r) => qemu!.once("exit", r));
    qemu.kill("SIGKILL");
    await exited;
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("registers at reset: rip = 0xfff0, cs = 0xf000, and g is 608 bytes", { skip }, async () => {
  assert.equal(client.layout?.size, 608);
  const regs = await client.readRegisters();
  assert.equal(regs.get("rip"), 0xfff0n);
  assert.equal(regs.get("cs"), 0xf000n);
  assert.equal(regs.get("eflags"), 0x2n);
  assert.equal(regs.get("cr0"), 0x60000010n);
  assert.equal((await client.request("g")).length, 608 * 2);
  assert.equal(await client.readRegister("cr3"), 0n);
});

test("physical reset vector holds a far jump to f000:e05b", { skip }, async () => {
  await client.setPhysicalMemoryMode(true);
  const bytes = await client.readMemory(0xffff0n, 5);
  await client.setPhysicalMemoryMode(false);
  assert.deepEqual(bytes, Buffer.from([0xea, 0x5b, 0xe0, 0x00, 0xf0]));
});

test(
  "a breakpoint at the BIOS entry stops continue there; interrupt stops a running guest",
  { skip },
  async () => {
    // At reset CS base is 0xffff0000; the far jump lands at f000:e05b, linear 0xfe05b.
    await client.insertBreakpoint(0, 0xfe05bn, 1);
    const stop = await client.continue();
    await client.removeBreakpoint(0, 0xfe05bn, 1);
    assert.equal(stop.type === "signal" && stop.signal, 5);
    assert.equal(await client.readRegister("rip"), 0xe05bn);
    assert.equal(await client.readRegister("cs"), 0xf000n);
    const stepped = await client.step();
    assert.equal(stepped.type === "signal" && stepped.signal, 5);
    assert.notEqual(await client.readRegister("rip"), 0xe05bn, "one instruction later");

    const running = client.continue();
    await new Promise((r) => setTimeout(r, 200));
    await client.interrupt();
    const stopped = await running;
    assert.equal(stopped.type === "signal" && stopped.signal, 2);
  },
);
