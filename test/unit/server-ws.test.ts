/**
 * The WebSocket transport around the core: the unix socket is private (from its first moment),
 * TCP needs the token, a client that stops reading is shed while another is served and the
 * server's memory stays bounded meanwhile, and a frame over the message limit gets an error reply.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { WebSocket } from "ws";
import { ProtocolCore } from "../../src/server/core.js";
import { RPC_ERRORS } from "../../src/server/schema.js";
import { listen } from "../../src/server/ws.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";
import { until } from "../support/rpc-client.js";

interface Msg {
  id?: number | null;
  method?: string;
  result?: Record<string, unknown>;
  error?: { code: number };
  params?: Record<string, unknown>;
}

class WsClient {
  readonly got: Msg[] = [];
  closed = false;
  private id = 1;
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (d) => this.got.push(JSON.parse(String(d)) as Msg));
    ws.on("close", () => {
      this.closed = true;
    });
  }
  static open(url: string): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once("open", () => resolve(new WsClient(ws)));
      ws.once("error", reject);
    });
  }
  async call(method: string, params: unknown): Promise<Msg> {
    const id = this.id++;
    this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    await until(() => this.got.some((m) => m.id === id) || this.closed, `reply to ${method}`);
    const reply = this.got.find((m) => m.id === id);
    if (!reply) throw new Error(`closed before the reply to ${method}`);
    return reply;
  }
  events(): number {
    return this.got.filter((m) => m.method === "event").length;
  }
}

async function serve(maxBufferedBytes?: number) {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-serve-"));
  const vm = new FakeVm();
  const core = new ProtocolCore(fakeDirectory({ a: vm }));
  let shed = 0;
  const server = await listen(core, {
    unixPath: join(dir, "serve.sock"),
    tcp: { host: "127.0.0.1", port: 0 },
    ...(maxBufferedBytes === undefined ? {} : { maxBufferedBytes }),
    onShed: () => shed++,
  });
  const stop = async () => {
    await server.close();
    await core.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { dir, vm, core, server, shed: () => shed, stop };
}

test("the unix socket is private; TCP wants the token", async () => {
  const s = await serve();
  try {
    assert.equal(statSync(join(s.dir, "serve.sock")).mode & 0o777, 0o600);
    const [tcpUrl, unixUrl] = s.server.urls;
    assert.match(tcpUrl ?? "", /^ws:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]{32}$/);
    const local = await WsClient.open(unixUrl ?? "");
    assert.equal((await local.call("initialize", { protocolVersion: 1 })).error, undefined);
    local.ws.close();
    await assert.rejects(WsClient.open(`ws://127.0.0.1:${s.server.tcpPort}/`), /401/);
    await assert.rejects(WsClient.open(`ws://127.0.0.1:${s.server.tcpPort}/?token=${"A".repeat(32)}`), /401/);
    const remote = await WsClient.open(tcpUrl ?? "");
    assert.equal((await remote.call("initialize", { protocolVersion: 1 })).error, undefined);
    // Not parsed, so its id is unknown: the reply's id is null, as JSON-RPC says.
    remote.ws.send(
      JSON.stringify({ jsonrpc: "2.0", id: 99, method: "vm.list", params: { pad: "x".repeat(10 << 20) } }),
    );
    await until(() => remote.got.some((m) => m.id === null), "reply to the 10 MB message");
    assert.equal(remote.got.find((m) => m.id === null)?.error?.code, RPC_ERRORS.INVALID_REQUEST.code);
    assert.equal((await remote.call("vm.list", {})).error, undefined);
    remote.ws.close();
  } finally {
    await s.stop();
  }
});

test("the unix socket is 0600 from the moment it exists, whatever the umask", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-serve-"));
  const core = new ProtocolCore(fakeDirectory({ a: new FakeVm() }));
  const path = join(dir, "serve.sock");
  const old = process.umask(0);
  let mode: number;
  let listening: ReturnType<typeof listen>;
  try {
    // listen() binds before its first await: look at the socket before a later chmod could run.
    listening = listen(core, { unixPath: path });
    mode = statSync(path).mode & 0o777;
  } finally {
    process.umask(old);
  }
  try {
    assert.equal(mode, 0o600);
    assert.equal(process.umask(), old, "the process umask is put back");
  } finally {
    await (await listening).close();
    await core.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** Live heap and Buffer bytes after a full collection: what the server still holds. */
/** 50 padded syscall events numbered from `nr`, then a turn of the event loop; the next number. */
async function emitSyscalls(vm: { emit(e: Record<string, unknown>): void }, nr: number, pad: string) {
  for (let i = 0; i < 50; i++)
    vm.emit({ type: "syscall", pid: 1, tid: 1, comm: "x", nr: nr + i, name: "read", args: [], ret: 0, pad });
  await new Promise((r) => setImmediate(r));
  return nr + 50;
}

function retainedBytes(): number {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

test("flooding a client that never reads keeps the server's memory bounded by the shed limit", async (t) => {
  const limit = 4 << 20;
  const s = await serve(limit);
  try {
    const stuck = await WsClient.open(s.server.urls[0] ?? "");
    await stuck.call("initialize", { protocolVersion: 1 });
    await stuck.call("events.subscribe", { vm: "a", types: ["syscall"] });
    (stuck.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const before = retainedBytes();
    const pad = "z".repeat(8192);
    const offered = 12_000;
    let peak = 0;
    for (let nr = 0; nr < offered; ) {
      nr = await emitSyscalls(s.vm, nr, pad);
      if (nr % 1000 === 0) peak = Math.max(peak, retainedBytes() - before);
    }
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    assert.equal(s.shed(), 1, "the stuck client was shed");
    // Offered ~94 MiB; held at most the limit plus what a socket and the parser keep around.
    assert.ok(
      peak < limit + (12 << 20),
      `the server held ${mib(peak)} while ${mib(offered * 8192)} was offered`,
    );
    t.diagnostic(`held at most ${mib(peak)} of ${mib(offered * 8192)} offered`);
    stuck.ws.terminate();
  } finally {
    await s.stop();
  }
});

test("a client that never reads is shed; the other client gets every event", async () => {
  const s = await serve(64 * 1024);
  try {
    const url = s.server.urls[0] ?? "";
    const [stuck, reader] = [await WsClient.open(url), await WsClient.open(url)];
    for (const c of [stuck, reader]) {
      await c.call("initialize", { protocolVersion: 1 });
      await c.call("events.subscribe", { vm: "a", types: ["syscall"] });
    }
    assert.equal(s.vm.streams.size, 2);
    (stuck.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const pad = "y".repeat(8192);
    let sent = 0;
    // Bounded: 40,000 events of 8 KiB is far beyond any socket buffer.
    while (s.shed() === 0 && sent < 40_000) {
      sent = await emitSyscalls(s.vm, sent, pad);
    }
    assert.equal(s.shed(), 1, "the stuck client was shed");
    await until(() => s.vm.streams.size === 1, "the shed client's subscription ended");
    await until(() => reader.events() === sent, "the reader got every event");
    assert.equal((await reader.call("vm.list", {})).error, undefined);
    reader.ws.close();
    stuck.ws.terminate();
  } finally {
    await s.stop();
  }
});
