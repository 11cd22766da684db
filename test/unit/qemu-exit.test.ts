/**
 * A Target whose QEMU is killed: failures are explained as QEMU's exit (one code, one message)
 * and close() gives up on the run state instead of failing. Against a real, bare QEMU.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Target } from "../../src/qemu/session.js";
import { VmsightError } from "../../src/util/errors.js";
import { tempDir } from "../fixtures/qmp/fake-server.js";

const QEMU = "qemu-system-x86_64";
const skip = spawnSync(QEMU, ["--version"]).error !== undefined ? `${QEMU} is not installed` : false;
let qemu: ChildProcess | undefined;
const dir = tempDir();
after(() => {
  qemu?.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("a killed QEMU: E_QEMU_EXITED naming its pid, and close() still succeeds", { skip }, async () => {
  const sock = join(dir, "q.sock");
  const args = ["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "64"];
  qemu = spawn(QEMU, [...args, "-qmp", `unix:${sock},server=on,wait=off`], { stdio: "ignore" });
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
  const target = await Target.attach(sock, { memory: "process" });
  const unrelated = new VmsightError("E_FAULT", "some read failed");
  assert.equal(target.explain(unrelated), unrelated, "QEMU alive: errors are left as they are");
  assert.equal(target.qemuExited(), false);

  const gone = new Promise((r) => qemu!.once("exit", r));
  qemu.kill("SIGKILL");
  await gone;
  const failure = await target.runState().then(
    () => assert.fail("query-status answered by a dead QEMU"),
    (e: unknown) => e,
  );
  assert.equal(target.qemuExited(), true);
  const shown = target.explain(failure);
  assert.ok(shown instanceof VmsightError);
  assert.equal(shown.code, "E_QEMU_EXITED");
  assert.equal(shown.message, `QEMU (pid ${qemu.pid}) exited while vmsight was using it`);
  assert.equal(shown.cause, failure);
  await target.close(); // no run state to restore: must not throw
  assert.equal(target.qemuExited(), true, "still known after our own close");
});
