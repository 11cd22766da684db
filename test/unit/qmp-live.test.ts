/**
 * Against a real QEMU: the behaviours a fake server can only imitate
 * (one client at a time, a QEMU killed under a waiting command).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { QmpClient } from "../../src/transport/qmp/client.js";
import { ProtocolError } from "../../src/util/errors.js";
import { tempDir } from "../fixtures/qmp/fake-server.js";
import { skipUnless } from "../support/skip.js";

const QEMU = "qemu-system-x86_64";
const missing = spawnSync(QEMU, ["--version"]).error !== undefined;
const skip = skipUnless(!missing, `${QEMU} is not installed`);

let qemu: ChildProcess | undefined;
let dir = "";
let sock = "";

before(async () => {
  if (missing) return;
  dir = tempDir();
  sock = join(dir, "q.sock");
  const args = ["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "64"];
  qemu = spawn(QEMU, [...args, "-qmp", `unix:${sock},server=on,wait=off`], { stdio: "ignore" });
  for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
  assert.ok(existsSync(sock), "QEMU did not create its QMP socket");
});

after(() => {
  if (qemu !== undefined && qemu.exitCode === null && qemu.signalCode === null) qemu.kill("SIGKILL");
  if (dir !== "") rmSync(dir, { recursive: true, force: true });
});

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

test(
  "live QEMU: connect, query-status, one client at a time, E_QMP_CLOSED when QEMU is killed",
  { skip },
  async () => {
    const client = await QmpClient.connect(sock);
    const version = spawnSync(QEMU, ["--version"], { encoding: "utf8" }).stdout;
    const { major, minor, micro } = client.greeting.version;
    assert.ok(
      version.includes(`version ${major}.${minor}.${micro}`),
      `greeting ${major}.${minor}.${micro} vs ${version}`,
    );
    assert.deepEqual(await client.execute("query-status"), {
      status: "prelaunch",
      singlestep: false,
      running: false,
    });

    const started = Date.now();
    await assert.rejects(QmpClient.connect(sock, { timeoutMs: 500 }), (e: unknown) => {
      assert.ok(e instanceof ProtocolError);
      assert.equal(e.code, "E_QMP_TIMEOUT");
      assert.match(e.message, /no QMP greeting from .* within 500 ms/);
      assert.match(e.hint ?? "", /one QMP client at a time: another client/);
      return true;
    });
    assert.ok(Date.now() - started >= 450);
    // The first client is unaffected by the second one's attempt.
    assert.equal(((await client.execute("query-status")) as { status: string }).status, "prelaunch");

    // Stopped, QEMU cannot answer, so the command is surely still waiting when SIGKILL lands.
    const child = qemu!;
    child.kill("SIGSTOP");
    const pending = client.execute("query-status");
    const outcome = pending.then(
      () => "resolved",
      (e: unknown) => e,
    );
    await sleep(50);
    child.kill("SIGKILL");
    await exited(child);
    const err = await outcome;
    assert.ok(err instanceof ProtocolError, `pending command ${String(err)}`);
    assert.equal(err.code, "E_QMP_CLOSED");
    assert.equal(err.message, "QEMU closed the QMP connection — did it exit?");
    await assert.rejects(
      client.execute("query-status"),
      (e: unknown) => e instanceof ProtocolError && e.code === "E_QMP_CLOSED",
    );
    await assert.rejects(QmpClient.connect(sock), (e: unknown) => {
      assert.ok(e instanceof ProtocolError);
      assert.equal(e.code, "E_QMP_CONNECT");
      assert.match(e.message, /nothing is listening/);
      return true;
    });
  },
);
