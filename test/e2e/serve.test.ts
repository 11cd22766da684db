/**
 * `vmsight serve` against a real guest: linux.ps over the protocol names the guest's own
 * processes (its /proc is the oracle), process.exec events arrive for a command the guest
 * runs, and a client that disconnects leaves no trap behind (the guest keeps answering).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";
import { ProtocolCore } from "../../src/server/core.js";
import { openLibVm } from "../../src/server/lib-vm.js";
import { VmRegistry } from "../../src/server/vms.js";
import { type Listening, listen } from "../../src/server/ws.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";
import type { GuestView } from "../support/oracle.js";
import { until } from "../support/rpc-client.js";

const KERNEL = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1").split(",")[0] ?? "6.1";

interface Msg {
  id?: number;
  method?: string;
  result?: Record<string, unknown>;
  error?: { message: string };
  params?: Record<string, unknown>;
}

async function client(url: string) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const got: Msg[] = [];
  ws.on("message", (d) => got.push(JSON.parse(String(d)) as Msg));
  let id = 1;
  const call = async (method: string, params: unknown): Promise<Record<string, unknown>> => {
    const n = id++;
    ws.send(JSON.stringify({ jsonrpc: "2.0", id: n, method, params }));
    await until(() => got.some((m) => m.id === n), `reply to ${method}`, 180_000);
    const reply = got.find((m) => m.id === n);
    if (reply?.error) throw new Error(`${method}: ${reply.error.message}`);
    return reply?.result ?? {};
  };
  await call("initialize", { protocolVersion: 1 });
  return { ws, got, call };
}

describe(`vmsight serve against a ${KERNEL} guest`, () => {
  let g: TestGuest;
  let view: GuestView;
  let dir: string;
  let registry: VmRegistry;
  let core: ProtocolCore;
  let server: Listening;
  before(async () => {
    g = await bootTestGuest(KERNEL, { memoryBackend: ramBackendFor(KERNEL) });
    await g.waitReady(180_000);
    view = await g.view();
    dir = mkdtempSync(join(tmpdir(), "vmsight-serve-e2e-"));
    registry = new VmRegistry(openLibVm);
    registry.add("guest", g.qmpSocket);
    core = new ProtocolCore(registry);
    server = await listen(core, { unixPath: join(dir, "serve.sock") });
  });
  after(async () => {
    await server?.close();
    await core?.close();
    await registry?.close();
    await g?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("linux.ps names the guest's workload processes as its /proc does", async () => {
    const c = await client(server.urls[0] ?? "");
    const rows = (await c.call("linux.ps", { vm: "guest" })).rows as { pid: number; comm: string }[];
    assert.ok(view.roles.size > 0, "the guest reports its workload roles");
    for (const [role, pid] of view.roles) {
      const stat = view.processes.find((p) => p.pid === pid);
      const row = rows.find((r) => r.pid === pid);
      assert.ok(row, `role ${role} (pid ${pid}) is listed`);
      assert.equal(row.comm, stat?.comm, `comm of pid ${pid}`);
    }
    c.ws.close();
  });

  test("process.exec events arrive; a client that leaves takes its traps", async () => {
    const c = await client(server.urls[0] ?? "");
    await c.call("events.subscribe", { vm: "guest", types: ["process.exec"] });
    const events = () => c.got.filter((m) => m.method === "event").map((m) => m.params ?? {});
    // sh -c execs a new sh (busybox runs most applets without an exec).
    const ours = (e: Record<string, unknown>) =>
      (e.argv as string[] | undefined)?.includes("echo serve-e2e") === true;
    const seen = () => events().some(ours);
    // The subscription arms its traps after its reply, so the first commands may run before it.
    for (let i = 0; i < 10 && !seen(); i++) {
      await g.serial.command("sh -c 'echo serve-e2e' >/dev/null", 60_000);
      await until(seen, "our exec", 15_000).catch(() => {});
    }
    const exec = events().find(ours);
    const other = c.got.filter((m) => m.method !== undefined && m.method !== "event");
    assert.ok(exec, `our exec among ${JSON.stringify(events().slice(0, 5))} ${JSON.stringify(other)}`);
    assert.equal(exec.type, "process.exec");
    assert.equal(exec.vm, "guest");
    c.ws.close();
    await until(() => core.clients.size === 0, "the client is gone", 60_000);
    assert.match(await g.serial.command("echo still-running", 60_000), /still-running/);
  });
});
