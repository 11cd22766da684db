/**
 * The CLI's way to a served guest: the protocol client and RemoteGuest against the real core
 * and WebSocket listener over a fake VM (calls, errors with their codes, an event stream that
 * ends its subscription), and the announcement files that say which server holds which QMP
 * socket (a dead server's file is removed, a symlinked path finds the same guest).
 */
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { announce, serversOf } from "../../src/server/announce.js";
import { RpcClient } from "../../src/server/client.js";
import { ProtocolCore } from "../../src/server/core.js";
import { RemoteGuest } from "../../src/server/remote-guest.js";
import { type Listening, listen } from "../../src/server/ws.js";
import { isVmsightError } from "../../src/util/errors.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";
import { until } from "../support/rpc-client.js";

describe("RemoteGuest over the protocol", () => {
  let dir: string;
  let fake: FakeVm;
  let core: ProtocolCore;
  let server: Listening;
  let guest: RemoteGuest;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "vmsight-remote-"));
    fake = new FakeVm(5);
    core = new ProtocolCore(fakeDirectory({ g: fake }));
    server = await listen(core, { unixPath: join(dir, "s.sock") });
    guest = new RemoteGuest(await RpcClient.connect(server.urls[0]!), "g");
  });
  after(async () => {
    await guest?.close();
    await server?.close();
    await core?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("listings, memory and registers come back as the library returns them", async () => {
    assert.deepEqual(await guest.ps(), fake.processes);
    await guest.write(0x1000n, Buffer.from("abc"), "physical");
    assert.equal((await guest.read("0x1000", 3, "physical")).toString(), "abc");
    await guest.setRegs(0, { rax: 0x2an });
    assert.equal((await guest.regs(0)).rax, "0x2a");
    assert.deepEqual(await guest.pause(), { status: "paused", running: false });
  });

  test("a vmsight failure keeps its code; a protocol refusal is E_SERVER", async () => {
    await assert.rejects(guest.maps(999), (e) => isVmsightError(e) && e.code === "E_NO_PROCESS");
    const other = new RemoteGuest(await RpcClient.connect(server.urls[0]!), "nope");
    await assert.rejects(
      other.ps(),
      (e) => isVmsightError(e) && e.code === "E_SERVER" && /nope/.test(e.message),
    );
    await other.close();
  });

  test("an events() stream yields trace records and unsubscribes when the loop ends", async () => {
    let ready = false;
    const stream = guest.events({
      types: ["proc"],
      onReady: () => {
        ready = true;
      },
    });
    const first = stream.next();
    await until(() => ready && fake.streams.size === 1, "subscribed");
    fake.emit({ type: "exec", pid: 7, argv: ["/bin/true"] });
    assert.deepEqual((await first).value, { type: "exec", pid: 7, argv: ["/bin/true"] });
    await stream.return?.();
    await until(() => fake.streams.size === 0, "the server's stream ended");
  });

  test("the server going away ends a call with E_SERVER", async () => {
    const client = await RpcClient.connect(server.urls[0]!);
    for (const c of core.clients) void c.close();
    await server.close();
    await assert.rejects(client.call("vm.list"), (e) => isVmsightError(e) && e.code === "E_SERVER");
  });
});

describe("announcements", () => {
  let base: string;
  before(() => {
    base = mkdtempSync(join(tmpdir(), "vmsight-announce-"));
  });
  after(() => rmSync(base, { recursive: true, force: true }));

  test("a server's QMP sockets are found by any path to them, until it removes its file", () => {
    const qmp = join(base, "qmp.sock");
    writeFileSync(qmp, "");
    symlinkSync(qmp, join(base, "link.sock"));
    const a = announce("ws+unix:///x.sock", () => [{ name: "vm1", qmp }], base);
    assert.deepEqual(serversOf(join(base, "link.sock"), base), [
      { pid: process.pid, url: "ws+unix:///x.sock", vm: "vm1" },
    ]);
    assert.deepEqual(serversOf(join(base, "other.sock"), base), []);
    a.remove();
    assert.deepEqual(serversOf(qmp, base), []);
  });

  test("a file left by a server that died is removed, not followed", () => {
    const qmp = join(base, "q2.sock");
    const dead = 2 ** 22 + 7; // above PID_MAX_LIMIT: no process has it
    mkdirSync(join(base, "served"), { recursive: true, mode: 0o700 });
    writeFileSync(
      join(base, "served", `${dead}.json`),
      JSON.stringify({ pid: dead, url: "ws+unix:///gone", vms: [{ name: "x", qmp }] }),
    );
    assert.deepEqual(serversOf(qmp, base), []);
    assert.equal(existsSync(join(base, "served", `${dead}.json`)), false);
  });
});

test("a private directory that is not ours hides no server and stops no command", () => {
  const base = mkdtempSync(join(tmpdir(), "vmsight-announce-"));
  // Open to everyone (as another user would plant it): refused, so a file in it is not believed.
  mkdirSync(join(base, "served"));
  chmodSync(join(base, "served"), 0o777);
  writeFileSync(
    join(base, "served", `${process.pid}.json`),
    JSON.stringify({
      pid: process.pid,
      url: "ws+unix:///evil",
      vms: [{ name: "x", qmp: join(base, "q.sock") }],
    }),
  );
  try {
    assert.deepEqual(serversOf(join(base, "q.sock"), base), []);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
