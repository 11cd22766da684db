/** --scan DIR: a QMP socket that appears is a VM, one that goes away is VANISHED, never fatal. */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { type Server, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { RPC_ERRORS } from "../../src/server/schema.js";
import { VmRegistry, vmName } from "../../src/server/vms.js";
import { FakeVm } from "../support/fake-vm.js";
import { until } from "../support/rpc-client.js";

function socketAt(path: string): Promise<Server> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(path, () => resolve(s));
  });
}

test("vm names drop the socket suffix", () => {
  assert.equal(vmName("/run/vms/web-1.sock"), "web-1");
  assert.equal(vmName("/run/vms/db.qmp"), "db");
  assert.equal(vmName("/run/vms/plain"), "plain");
});

test("a scanned directory's sockets come and go as VMs", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-scan-"));
  const opened: string[] = [];
  const registry = new VmRegistry(async (qmp) => {
    opened.push(qmp);
    return new FakeVm();
  });
  const changes: [string, boolean][] = [];
  registry.onChange((name, present) => changes.push([name, present]));
  const first = await socketAt(join(dir, "one.sock"));
  writeFileSync(join(dir, "notes.txt"), "not a socket");
  try {
    registry.scan(dir);
    assert.deepEqual(changes, [["one", true]]);
    const second = await socketAt(join(dir, "two.qmp"));
    await until(() => changes.some(([n]) => n === "two"), "two appears");
    await registry.get("two");
    assert.deepEqual(opened, [join(dir, "two.qmp")]);
    await new Promise<void>((r) => second.close(() => r()));
    await until(() => changes.some(([n, p]) => n === "two" && !p), "two vanishes");
    assert.deepEqual(
      registry
        .list()
        .map((v) => [v.name, v.present])
        .sort(),
      [
        ["one", true],
        ["two", false],
      ],
    );
    await assert.rejects(
      registry.get("two"),
      (e: { code?: number }) => e.code === RPC_ERRORS.UNKNOWN_VM.code,
    );
    await assert.rejects(
      registry.get("notes"),
      (e: { code?: number }) => e.code === RPC_ERRORS.UNKNOWN_VM.code,
    );
  } finally {
    first.close();
    await registry.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
