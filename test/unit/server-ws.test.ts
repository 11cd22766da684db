/**
 * The WebSocket transport around the core: the unix socket is private, TCP needs the token,
 * a client that stops reading is shed while another is served, and a frame over the message
 * limit gets an error reply.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
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
      for (let i = 0; i < 50; i++)
        s.vm.emit({
          type: "syscall",
          pid: 1,
          tid: 1,
          comm: "x",
          nr: sent++,
          name: "read",
          args: [],
          ret: 0,
          pad,
        });
      await new Promise((r) => setImmediate(r));
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
