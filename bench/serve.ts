/**
 * `vmsight serve` against the same calls made in process, as ratios measured in the same run:
 *  - the median round trip of an 8-byte memory.read and of linux.ps over the protocol
 *    (WebSocket on the unix socket, JSON-RPC, schema validation) against the direct call;
 *  - event delivery rate to 1 and 10 subscribers.
 * The backend is the fake VM of the unit tests (no guest boots), so the figures are the
 * protocol's own cost; with VMSIGHT_QMP=SOCKET the reads and ps go to that live guest instead.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { WebSocket } from "ws";
import type { ServedVm } from "../src/server/backend.js";
import { ProtocolCore } from "../src/server/core.js";
import { openLibVm } from "../src/server/lib-vm.js";
import { listen } from "../src/server/ws.js";
import { FakeVm, fakeDirectory } from "../test/support/fake-vm.js";

const ROUNDS = 2000;
const EVENTS = 20_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

class Client {
  private id = 1;
  private readonly waiting = new Map<number, () => void>();
  events = 0;
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (d) => {
      const m = JSON.parse(String(d)) as { id?: number; method?: string };
      if (m.method === "event") this.events++;
      else if (typeof m.id === "number") this.waiting.get(m.id)?.();
    });
  }
  static open(url: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once("open", () => resolve(new Client(ws)));
      ws.once("error", reject);
    });
  }
  call(method: string, params: unknown): Promise<void> {
    const id = this.id++;
    return new Promise((resolve) => {
      this.waiting.set(id, () => {
        this.waiting.delete(id);
        resolve();
      });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
}

async function roundTrips(fn: () => Promise<unknown>, rounds: number): Promise<number> {
  for (let i = 0; i < 50; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return median(times);
}

/** Events always come from the fake: a guest cannot be made to emit at a chosen rate. */
async function deliveryRate(fake: FakeVm, url: string, subscribers: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: subscribers }, () => Client.open(url)));
  for (const c of clients) {
    await c.call("initialize", { protocolVersion: 1 });
    await c.call("events.subscribe", { vm: "events", types: ["process.exec"] });
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < EVENTS; i++) {
    fake.emit({ type: "exec", pid: 100, comm: "sh", filename: "/bin/true", n: i });
    if (i % 500 === 499) await new Promise((r) => setImmediate(r));
  }
  while (clients.some((c) => c.events < EVENTS)) await new Promise((r) => setTimeout(r, 1));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const c of clients) c.ws.close();
  return EVENTS / s;
}

async function main(): Promise<void> {
  const fake = new FakeVm(200);
  const qmp = process.env.VMSIGHT_QMP;
  const live: ServedVm | undefined = qmp ? await openLibVm(qmp) : undefined;
  const direct: ServedVm = live ?? fake;
  const dir = mkdtempSync(join(tmpdir(), "vmsight-bench-serve-"));
  const core = new ProtocolCore(fakeDirectory({ a: direct, events: fake }));
  const server = await listen(core, { unixPath: join(dir, "serve.sock") });
  try {
    const c = await Client.open(server.urls[0] ?? "");
    await c.call("initialize", { protocolVersion: 1 });
    const addr = live ? "0x100000" : "0x1000";
    const read = { vm: "a", address: addr, length: 8, space: "phys" };
    const rows: [string, number, number][] = [
      [
        "memory.read 8 B",
        await roundTrips(() => c.call("memory.read", read), ROUNDS),
        await roundTrips(() => direct.read(addr, 8, { kind: "phys" }), ROUNDS),
      ],
      [
        "linux.ps",
        await roundTrips(() => c.call("linux.ps", { vm: "a" }), live ? 50 : ROUNDS),
        await roundTrips(() => direct.ps(), live ? 50 : ROUNDS),
      ],
    ];
    c.ws.close();
    console.log(`backend: ${live ? `live guest at ${qmp}` : "fake VM (200 processes)"}`);
    console.log("call               protocol µs   in process µs   ratio");
    for (const [name, over, inproc] of rows) {
      console.log(
        `${name.padEnd(18)} ${over.toFixed(1).padStart(11)}   ${inproc.toFixed(1).padStart(13)}   ${(over / inproc).toFixed(1).padStart(5)}x`,
      );
    }
    for (const n of [1, 10]) {
      const rate = await deliveryRate(fake, server.urls[0] ?? "", n);
      console.log(
        `events to ${String(n).padStart(2)} subscriber(s): ${Math.round(rate)} events/s each (${Math.round(rate * n)} messages/s)`,
      );
    }
  } finally {
    await server.close();
    await core.close();
    await live?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
