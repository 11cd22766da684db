import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { QmpClient } from "../../src/transport/qmp/client.js";
import { QmpCommandError, connectFailure } from "../../src/transport/qmp/failures.js";
import { ProtocolError } from "../../src/util/errors.js";
import {
  type FakeServer,
  GREETING,
  readLines,
  scriptedQmp,
  startFakeServer,
  tempDir,
} from "../fixtures/qmp/fake-server.js";

const servers: FakeServer[] = [];
const dirs: string[] = [];
after(async () => {
  for (const s of servers) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function fake(onConnection: Parameters<typeof startFakeServer>[0]): Promise<FakeServer> {
  const server = await startFakeServer(onConnection);
  servers.push(server);
  return server;
}

function isError(code: string, message?: RegExp, hint?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected a ProtocolError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (message) assert.match(e.message, message);
    if (hint) assert.match(e.hint ?? "", hint);
    return true;
  };
}

const reply = (socket: import("node:net").Socket, obj: unknown) => socket.write(`${JSON.stringify(obj)}\r\n`);

test("connect parses the greeting and negotiates capabilities", async () => {
  const seen: string[] = [];
  const server = await fake(
    scriptedQmp((req, socket) => {
      seen.push(String(req.execute));
      reply(socket, { return: { status: "running" }, id: req.id });
    }),
  );
  const client = await QmpClient.connect(server.path);
  assert.deepEqual(client.greeting, {
    version: { major: 7, minor: 2, micro: 22 },
    package: "fake",
    capabilities: ["oob"],
  });
  assert.deepEqual(await client.execute("query-status"), { status: "running" });
  assert.deepEqual(seen, ["query-status"]);
  await client.close();
  assert.equal(client.closed, true);
});

test("replies are matched to commands by id, even out of order", async () => {
  const held: Record<string, unknown>[] = [];
  const server = await fake(
    scriptedQmp((req, socket) => {
      held.push(req);
      if (held.length < 3) return;
      for (const r of held.reverse()) reply(socket, { return: `answer to ${String(r.execute)}`, id: r.id });
    }),
  );
  const client = await QmpClient.connect(server.path);
  const results = await Promise.all([client.execute("a"), client.execute("b"), client.execute("c")]);
  assert.deepEqual(results, ["answer to a", "answer to b", "answer to c"]);
  await client.close();
});

test("a QMP error reply rejects with E_QMP_COMMAND, 'command: desc' and qmpClass", async () => {
  const server = await fake(
    scriptedQmp((req, socket) =>
      reply(socket, { id: req.id, error: { class: "DeviceNotFound", desc: "Device 'x' not found" } }),
    ),
  );
  const client = await QmpClient.connect(server.path);
  await assert.rejects(client.execute("device_del", { id: "x" }), (e: unknown) => {
    assert.ok(e instanceof QmpCommandError && e instanceof ProtocolError);
    assert.equal(e.code, "E_QMP_COMMAND");
    assert.equal(e.message, "device_del: Device 'x' not found");
    assert.equal(e.qmpClass, "DeviceNotFound");
    return true;
  });
  await client.close();
});

test("an error reply without an id (QEMU could not parse a request) fails the oldest command", async () => {
  const server = await fake(
    scriptedQmp((_req, socket) =>
      reply(socket, { error: { class: "GenericError", desc: "JSON parse error" } }),
    ),
  );
  const client = await QmpClient.connect(server.path);
  await assert.rejects(client.execute("x"), isError("E_QMP_COMMAND", /^x: JSON parse error$/));
  await client.close();
});

test("hmp sends command-line and returns text with \\n line ends", async () => {
  let args: unknown;
  const server = await fake(
    scriptedQmp((req, socket) => {
      args = req.arguments;
      reply(socket, {
        return: "Host virtual address for 0x1000 (pc.ram) is 0x7f00\r\nsecond\r\n",
        id: req.id,
      });
    }),
  );
  const client = await QmpClient.connect(server.path);
  assert.equal(
    await client.hmp("gpa2hva 0x1000"),
    "Host virtual address for 0x1000 (pc.ram) is 0x7f00\nsecond\n",
  );
  assert.deepEqual(args, { "command-line": "gpa2hva 0x1000" });
  await client.close();
});

test("events reach listeners until they unsubscribe; waitForEvent picks the named one", async () => {
  const server = await fake(
    scriptedQmp((req, socket) => {
      const ts = { seconds: 1, microseconds: 2 };
      reply(socket, { event: "RESUME", timestamp: ts });
      reply(socket, { event: "STOP", data: { why: 1 }, timestamp: ts });
      reply(socket, { return: {}, id: req.id });
    }),
  );
  const client = await QmpClient.connect(server.path);
  const seen: string[] = [];
  const unsubscribe = client.onEvent((e) => seen.push(e.event));
  const stop = client.waitForEvent("STOP", 2000);
  await client.execute("stop");
  assert.deepEqual(await stop, {
    event: "STOP",
    data: { why: 1 },
    timestamp: { seconds: 1, microseconds: 2 },
  });
  unsubscribe();
  await client.execute("stop");
  assert.deepEqual(seen, ["RESUME", "STOP"]);
  await assert.rejects(client.waitForEvent("SHUTDOWN", 30), isError("E_QMP_TIMEOUT", /no SHUTDOWN event/));
  await client.close();
});

test("a command with no reply times out with E_QMP_TIMEOUT; its late reply is ignored", async () => {
  let first: Record<string, unknown> | undefined;
  const server = await fake(
    scriptedQmp((req, socket) => {
      if (first === undefined) {
        first = req;
        return;
      }
      reply(socket, { return: "late", id: first.id });
      reply(socket, { return: "on time", id: req.id });
    }),
  );
  const client = await QmpClient.connect(server.path, { commandTimeoutMs: 60 });
  const started = Date.now();
  await assert.rejects(
    client.execute("slow"),
    isError("E_QMP_TIMEOUT", /^slow: no reply from QEMU within 60 ms$/, /longer timeout/),
  );
  assert.ok(Date.now() - started >= 55);
  assert.equal(await client.execute("fast", undefined, { timeoutMs: 2000 }), "on time");
  await client.close();
});

test("the recorder sees every line sent and received, without terminators, in order", async () => {
  const server = await fake(scriptedQmp((req, socket) => reply(socket, { return: 7, id: req.id })));
  const lines: string[] = [];
  const client = await QmpClient.connect(server.path, {
    record: (dir, line) => lines.push(`${dir} ${line}`),
  });
  await client.execute("query-x", { a: "ü" });
  await client.close();
  assert.deepEqual(lines, [
    `recv ${GREETING}`,
    'send {"execute":"qmp_capabilities","id":1}',
    'recv {"return":{},"id":1}',
    'send {"execute":"query-x","arguments":{"a":"ü"},"id":2}',
    'recv {"return":7,"id":2}',
  ]);
});

test("unserialisable arguments reject with E_QMP_ENCODE and leave the client usable", async () => {
  const server = await fake(scriptedQmp((req, socket) => reply(socket, { return: 1, id: req.id })));
  const client = await QmpClient.connect(server.path);
  await assert.rejects(client.execute("x", { big: 1n }), isError("E_QMP_ENCODE"));
  assert.equal(await client.execute("x"), 1);
  await client.close();
});

test("missing socket path: E_QMP_CONNECT naming the path, hint gives the -qmp option", async () => {
  const dir = tempDir();
  dirs.push(dir);
  const path = join(dir, "nope.sock");
  await assert.rejects(
    QmpClient.connect(path),
    isError(
      "E_QMP_CONNECT",
      new RegExp(`^no QMP socket at ${path}$`),
      new RegExp(`-qmp unix:${path},server=on,wait=off`),
    ),
  );
});

test("a regular file or a directory as the path: E_QMP_CONNECT 'is not a socket'", async () => {
  const dir = tempDir();
  dirs.push(dir);
  const file = join(dir, "file");
  writeFileSync(file, "x");
  await assert.rejects(
    QmpClient.connect(file),
    isError("E_QMP_CONNECT", /file is not a socket \(it is a file\)/),
  );
  mkdirSync(join(dir, "d"));
  await assert.rejects(
    QmpClient.connect(join(dir, "d")),
    isError("E_QMP_CONNECT", /is not a socket \(it is a directory\)/),
  );
  await assert.rejects(
    QmpClient.connect(join(file, "x")),
    isError("E_QMP_CONNECT", /a parent of it is not a directory/),
  );
});

test("a socket file nobody listens on (QEMU died): E_QMP_CONNECT 'nothing is listening'", async () => {
  const dir = tempDir();
  dirs.push(dir);
  const path = join(dir, "stale.sock");
  // A killed process leaves its socket file behind, as a crashed QEMU does.
  const child = spawn(process.execPath, [
    "-e",
    "require('net').createServer().listen(process.argv[1], () => console.log('up'))",
    path,
  ]);
  await new Promise((resolve) => child.stdout.once("data", resolve));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  assert.ok(existsSync(path));
  await assert.rejects(
    QmpClient.connect(path),
    isError("E_QMP_CONNECT", /^nothing is listening on the QMP socket /, /QEMU may have exited/),
  );
});

test("a socket path longer than sun_path allows is refused up front", async () => {
  const path = `/tmp/${"a".repeat(120)}.sock`;
  await assert.rejects(
    QmpClient.connect(path),
    isError("E_QMP_CONNECT", /longer than the 107/, /shorter path/),
  );
});

test("permission denied names the socket and says what to do (errno mapping; root cannot provoke EACCES)", () => {
  const cause = Object.assign(new Error("connect EACCES /run/q.sock"), { code: "EACCES" });
  const err = connectFailure("/run/q.sock", cause, "socket");
  assert.equal(err.code, "E_QMP_CONNECT");
  assert.equal(err.message, "permission denied connecting to the QMP socket /run/q.sock");
  assert.match(err.hint ?? "", /user QEMU runs as/);
  assert.equal(err.cause, cause);
});

test("a server that sends garbage: E_QMP_NOT_QMP quoting it", async () => {
  const server = await fake((socket) => socket.write("garbage in, garbage out\r\n"));
  await assert.rejects(
    QmpClient.connect(server.path),
    isError(
      "E_QMP_NOT_QMP",
      /expected one JSON object per line, got: "garbage in, garbage out"/,
      /-qmp unix:/,
    ),
  );
});

test("QEMU's human monitor instead of QMP: the hint says so", async () => {
  const server = await fake((socket) =>
    socket.write("QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "),
  );
  await assert.rejects(
    QmpClient.connect(server.path),
    isError("E_QMP_NOT_QMP", /"QEMU 7\.2\.22 monitor/, /human monitor \(-monitor\)/),
  );
});

test("a peer that sends half a line and goes quiet: E_QMP_NOT_QMP with what it sent", async () => {
  const server = await fake((socket) => socket.write("(qemu) "));
  await assert.rejects(
    QmpClient.connect(server.path, { timeoutMs: 100 }),
    isError("E_QMP_NOT_QMP", /not a QMP greeting: "\(qemu\) "/, /human monitor/),
  );
});

test("a first message that is QMP but not a greeting: E_QMP_NOT_QMP", async () => {
  const server = await fake((socket) => reply(socket, { return: {} }));
  await assert.rejects(
    QmpClient.connect(server.path),
    isError("E_QMP_NOT_QMP", /the first message is not a QMP greeting: "\{\\"return\\":\{\}\}"/),
  );
});

test("a server that never greets: E_QMP_TIMEOUT after timeoutMs, hint about another client", async () => {
  const server = await fake(() => {});
  const started = Date.now();
  await assert.rejects(
    QmpClient.connect(server.path, { timeoutMs: 150 }),
    isError("E_QMP_TIMEOUT", /^no QMP greeting from .* within 150 ms$/, /one QMP client at a time/),
  );
  const took = Date.now() - started;
  assert.ok(took >= 140 && took < 2000, `took ${took} ms`);
  // The failed client hung up.
  await sleep(20);
  assert.equal(server.sockets[0]?.destroyed || server.sockets[0]?.readableEnded, true);
});

test("a server that closes before greeting: E_QMP_CLOSED", async () => {
  const server = await fake((socket) => socket.end());
  await assert.rejects(
    QmpClient.connect(server.path),
    isError("E_QMP_CLOSED", /before sending a QMP greeting/),
  );
});

test("qmp_capabilities refused: connect rejects with the QMP error", async () => {
  const server = await fake((socket) => {
    socket.write(`${GREETING}\r\n`);
    readLines(socket, (line) =>
      reply(socket, { id: JSON.parse(line).id, error: { class: "GenericError", desc: "no" } }),
    );
  });
  await assert.rejects(QmpClient.connect(server.path), isError("E_QMP_COMMAND", /^qmp_capabilities: no$/));
});

test("QEMU closing mid-command fails every pending command, event wait and later call with E_QMP_CLOSED", async () => {
  let count = 0;
  const server = await fake(
    scriptedQmp((_req, socket) => {
      if (++count === 2) socket.destroy();
    }),
  );
  const client = await QmpClient.connect(server.path);
  const closed = /^QEMU closed the QMP connection — did it exit\?$/;
  await Promise.all([
    assert.rejects(client.waitForEvent("STOP", 5000), isError("E_QMP_CLOSED", closed)),
    assert.rejects(client.execute("one"), isError("E_QMP_CLOSED", closed, /still running/)),
    assert.rejects(client.execute("two"), isError("E_QMP_CLOSED", closed, /still running/)),
  ]);
  await assert.rejects(client.execute("three"), isError("E_QMP_CLOSED", closed));
  await assert.rejects(client.hmp("info status"), isError("E_QMP_CLOSED", closed));
  assert.equal(client.closed, true);
});

test("garbage after the handshake fails pending commands with E_QMP_NOT_QMP and ends the client", async () => {
  const server = await fake(scriptedQmp((_req, socket) => socket.write("\x00\x01binary\r\n")));
  const client = await QmpClient.connect(server.path);
  await assert.rejects(client.execute("x"), isError("E_QMP_NOT_QMP", /"\\u0000\\u0001binary"/));
  await assert.rejects(client.execute("y"), isError("E_QMP_NOT_QMP"));
});

test("close() fails pending commands with E_QMP_CLOSED and is idempotent", async () => {
  const server = await fake(scriptedQmp(() => {}));
  const client = await QmpClient.connect(server.path);
  const pending = assert.rejects(
    client.execute("never"),
    isError("E_QMP_CLOSED", /^the QMP client was closed$/),
  );
  await client.close();
  await client.close();
  await pending;
});
