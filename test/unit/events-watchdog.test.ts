/**
 * The SIGKILL watchdog against stand-in gdbstub and QMP servers: the cleanup removes exactly the
 * recorded traps, detaches (QEMU's `D;pid` with multiprocess), and `cont`s a stopped guest; the
 * spawned process does that only when its pipe closes without a goodbye.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { cleanupTraps } from "../../src/events/watchdog-cleanup.js";
import { encodePacket } from "../../src/transport/gdb/codec.js";
import { type FakeStub, startFakeStub } from "../fixtures/gdb/fake-server.js";
import { type FakeServer, scriptedQmp, startFakeServer } from "../fixtures/qmp/fake-server.js";

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups) await c();
});

/** A gdbstub that answers like QEMU 7.2 (no target description needed for z/D). */
async function fakeQemuStub(): Promise<FakeStub> {
  const stub = await startFakeStub({
    packet(data, conn) {
      const p = data.toString("latin1");
      let reply = "";
      if (p.startsWith("qSupported")) reply = "PacketSize=1000;vContSupported+;multiprocess+";
      else if (p === "vCont?") reply = "vCont;c;C;s;S";
      else if (/^z[0-4],/.test(p)) reply = "OK";
      else if (p === "D;1") reply = "OK";
      else if (p === "D") reply = "E22";
      conn.raw(Buffer.concat([Buffer.from("+"), encodePacket(reply)]));
    },
  });
  cleanups.push(() => stub.close());
  return stub;
}

async function fakeQmp(status: { running: boolean }): Promise<{ server: FakeServer; commands: string[] }> {
  const commands: string[] = [];
  const server = await startFakeServer(
    scriptedQmp((req, socket) => {
      commands.push(String(req.execute));
      const ret =
        req.execute === "query-status" ? { ...status, status: status.running ? "running" : "paused" } : {};
      if (req.execute === "cont") status.running = true;
      socket.write(`${JSON.stringify({ return: ret, id: req.id })}\r\n`);
    }),
  );
  cleanups.push(() => server.close());
  return { server, commands };
}

const TRAPS = [
  { type: 2 as const, addr: 0xffffffff8258c6c8n, kind: 4 },
  { type: 0 as const, addr: 0xffffffff81000000n, kind: 1 },
];

test("cleanup removes each recorded trap, detaches, and resumes a stopped guest", async () => {
  const stub = await fakeQemuStub();
  const qmp = await fakeQmp({ running: false });
  const r = await cleanupTraps({ gdbPath: stub.path, qmpPath: qmp.server.path, resume: true, traps: TRAPS });
  assert.deepEqual(
    stub.received.filter((p) => !p.startsWith("q") && p !== "vCont?"),
    ["z2,ffffffff8258c6c8,4", "z0,ffffffff81000000,1", "D;1"],
  );
  assert.deepEqual(r, { removed: 2, failed: 0, detached: true, resumedByQmp: true });
  assert.deepEqual(qmp.commands, ["query-status", "cont"]);
});

test("a guest that was paused before vmsight is not resumed", async () => {
  const stub = await fakeQemuStub();
  const qmp = await fakeQmp({ running: false });
  const r = await cleanupTraps({ gdbPath: stub.path, qmpPath: qmp.server.path, resume: false, traps: TRAPS });
  assert.equal(r.detached, false);
  assert.ok(!stub.received.some((p) => p.startsWith("D")));
  assert.deepEqual(qmp.commands, []);
});

const MAIN = fileURLToPath(new URL("../../src/events/watchdog-main.js", import.meta.url));

function runWatchdog(lines: unknown[], closeWithBye: boolean): Promise<number | null> {
  const child = spawn(process.execPath, [MAIN], { stdio: ["pipe", "ignore", "inherit"] });
  for (const l of lines) child.stdin.write(`${JSON.stringify(l)}\n`);
  if (closeWithBye) child.stdin.write(`${JSON.stringify({ bye: true })}\n`);
  child.stdin.end(); // as the kernel does when vmsight dies
  return new Promise((resolve) => child.on("close", resolve));
}

test("the watchdog process cleans up when its pipe closes without goodbye, and only then", async () => {
  const stub = await fakeQemuStub();
  const qmp = await fakeQmp({ running: true });
  const wire = (t: (typeof TRAPS)[number]) => ({ type: t.type, addr: t.addr.toString(), kind: t.kind });
  const plan = { plan: { gdbPath: stub.path, qmpPath: qmp.server.path, resume: true } };
  const messages = [plan, ...TRAPS.map((t) => ({ add: wire(t) })), { remove: wire(TRAPS[1]!) }];

  assert.equal(await runWatchdog(messages, true), 0);
  assert.equal(stub.received.length, 0, "a clean goodbye touches nothing");

  assert.equal(await runWatchdog(messages, false), 0);
  assert.deepEqual(
    stub.received.filter((p) => !p.startsWith("q") && p !== "vCont?"),
    ["z2,ffffffff8258c6c8,4", "D;1"],
    "only the trap still recorded is removed",
  );
  assert.deepEqual(qmp.commands, ["query-status"], "a running guest needs no cont");
});
