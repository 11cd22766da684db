/**
 * After a vmsight process died with traps armed (SIGKILL), its watchdog must have removed them
 * and let the guest run: the guest's run state comes back to "running", and a fresh gdb client's
 * continue is not stopped while the guest forks, execs and reaps (a leftover trap would stop it).
 * The fresh client connects without `?` (which would itself clear QEMU's traps).
 */
import assert from "node:assert/strict";
import { gdbSocketPath } from "../../src/qemu/qemu-process.js";
import { Target } from "../../src/qemu/session.js";
import { GdbClient } from "../../src/transport/gdb/client.js";
import { cliJson } from "./cli.js";
import type { TestGuest } from "./guest.js";

export async function guestStatus(g: TestGuest): Promise<string> {
  return (await cliJson<{ status: string }>(["--qmp", g.qmpSocket, "status"])).status;
}

export async function assertRunsWithNoTrap(g: TestGuest): Promise<void> {
  const deadline = Date.now() + 30_000;
  while ((await guestStatus(g)) !== "running") {
    assert.ok(Date.now() < deadline, "guest did not run again after vmsight was killed");
    await new Promise((r) => setTimeout(r, 200));
  }
  const target = await Target.attach(g.qmpSocket);
  const path = gdbSocketPath(target.pid);
  await target.close();
  const gdb = await GdbClient.connect({ path });
  try {
    const resumed = gdb.continue();
    let stopped = false;
    resumed.then(() => {
      stopped = true;
    });
    const out = await g.serial.command("workload forkloop 20; sh -c 'exit 3'; echo still-here", 60_000);
    assert.match(out, /still-here/);
    assert.equal(stopped, false, "a leftover trap stopped the guest");
    await gdb.interrupt();
    const s = await resumed;
    assert.equal(s.type === "signal" && s.signal, 2, "stopped by our interrupt, not a trap");
    assert.equal(s.type === "signal" && s.watch, undefined);
    assert.equal((await gdb.request("D;1")).toString(), "OK");
  } finally {
    await gdb.close();
  }
  assert.equal(await guestStatus(g), "running");
}
