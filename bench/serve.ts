/**
 * `vmsight serve` on a live guest (a 6.12 TCG guest it boots, or VMSIGHT_QMP=SOCKET), served
 * through the library as `vmsight serve` does, against the same calls made in process, as ratios
 * measured in the same run:
 *  - the median round trip of an 8-byte memory.read and of linux.ps over the protocol
 *    (WebSocket on the unix socket, JSON-RPC, schema validation) against the same ServedVm call;
 *  - process events delivered to 1 and to 10 subscribers while the guest runs a fork loop: every
 *    subscriber's events per second (host clock, first to last event of the loop), beside a
 *    library stream reading the same loop in process, and the guest's own fork rate each time;
 *  - the protocol's own delivery ceiling (events from the unit tests' fake VM, no guest).
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
import { type TestGuest, bootTestGuest } from "../test/support/guest.js";

const READS = Number(process.env.BENCH_READS ?? 2000);
const PS_ROUNDS = Number(process.env.BENCH_PS ?? 50);
const FORKS = Number(process.env.BENCH_FORKS ?? 500);
const FAKE_EVENTS = 20_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? Number.NaN;
}

type Event = { ppid?: number };

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
  for (let i = 0; i < Math.min(50, rounds); i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return median(times);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`never happened: ${what}`);
    await sleep(5);
  }
}

/** Runs the fork loop in the guest: its pid and the guest's forks per second. */
async function forkLoop(g: TestGuest, onPid: (pid: number) => void): Promise<number> {
  // The pid comes first (through a file the loop's own shell writes before it forks).
  const out = await g.serial.command(
    `read T0 X </proc/uptime; sh -c 'echo $$ >/tmp/fl; exec workload forkloop ${FORKS}' >/dev/null; read T1 X </proc/uptime; echo "FL $(cat /tmp/fl) UP $T0 $T1"`,
    600_000,
  );
  const m = /FL (\d+) UP ([\d.]+) ([\d.]+)/.exec(out);
  if (!m) throw new Error(`the guest printed:\n${out}`);
  onPid(Number(m[1]));
  return FORKS / Math.max(Number(m[3]) - Number(m[2]), 0.01);
}

/** Events per second each subscriber received from one fork loop (children's creates and exits). */
async function liveDelivery(g: TestGuest, url: string, n: number) {
  const clients = await Promise.all(Array.from({ length: n }, () => Client.open(url)));
  for (const c of clients) {
    await c.call("initialize", { protocolVersion: 1 });
    await c.call("events.subscribe", { vm: "a", types: ["process.create", "process.exit"] });
  }
  // Traps are armed after the replies: until every client has seen an event.
  for (let i = 0; !clients.every((c) => c.events > 0); i++) {
    if (i > 50) throw new Error("the subscriptions saw no event");
    await g.serial.command("sh -c true");
    await sleep(100);
  }
  let loop = 0;
  // The loop's pid is known only once it has run: keep every event, pick the loop's afterwards.
  const seen = clients.map(() => [] as { ppid: number; at: number }[]);
  clients.forEach((c, i) => {
    c.ws.on("message", (d) => {
      const m = JSON.parse(String(d)) as { method?: string; params?: Event };
      if (m.method === "event") seen[i]!.push({ ppid: m.params?.ppid ?? 0, at: performance.now() });
    });
  });
  const guestRate = await forkLoop(g, (pid) => {
    loop = pid;
  });
  const want = 2 * FORKS;
  await waitFor(() => seen.every((s) => s.filter((e) => e.ppid === loop).length >= want), "every event");
  const rates = seen.map((s) => {
    const mine = s.filter((e) => e.ppid === loop);
    return mine.length / ((mine.at(-1)!.at - mine[0]!.at) / 1000);
  });
  for (const c of clients) c.ws.close();
  return { each: median(rates), guestRate };
}

/** The same loop read by a library stream in this process: the peer of the protocol's rate. */
async function inProcessDelivery(g: TestGuest, vm: ServedVm) {
  const stream = vm.events({ types: ["proc"] })[Symbol.asyncIterator]();
  const got: { ppid: number; at: number }[] = [];
  const reading = (async () => {
    for (;;) {
      const r = await stream.next();
      if (r.done) return;
      got.push({ ppid: Number(r.value.ppid ?? 0), at: performance.now() });
    }
  })();
  for (let i = 0; got.length === 0; i++) {
    if (i > 50) throw new Error("the stream saw no event");
    await g.serial.command("sh -c true");
    await sleep(100);
  }
  let loop = 0;
  const guestRate = await forkLoop(g, (pid) => {
    loop = pid;
  });
  await waitFor(() => got.filter((e) => e.ppid === loop).length >= 2 * FORKS, "every event in process");
  await stream.return?.();
  await reading;
  const mine = got.filter((e) => e.ppid === loop);
  return { each: mine.length / ((mine.at(-1)!.at - mine[0]!.at) / 1000), guestRate };
}

async function fakeDelivery(fake: FakeVm, url: string, subscribers: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: subscribers }, () => Client.open(url)));
  for (const c of clients) {
    await c.call("initialize", { protocolVersion: 1 });
    await c.call("events.subscribe", { vm: "events", types: ["process.exec"] });
  }
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < FAKE_EVENTS; i++) {
    fake.emit({ type: "exec", pid: 100, comm: "sh", filename: "/bin/true", n: i });
    if (i % 500 === 499) await new Promise((r) => setImmediate(r));
  }
  while (clients.some((c) => c.events < FAKE_EVENTS)) await sleep(1);
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const c of clients) c.ws.close();
  return FAKE_EVENTS / s;
}

async function main(): Promise<void> {
  const qmp = process.env.VMSIGHT_QMP;
  const g = qmp ? undefined : await bootTestGuest("6.12");
  await g?.waitReady(300_000);
  const vm = await openLibVm(qmp ?? g!.qmpSocket);
  const fake = new FakeVm(200);
  const dir = mkdtempSync(join(tmpdir(), "vmsight-bench-serve-"));
  const core = new ProtocolCore(fakeDirectory({ a: vm, events: fake }));
  const server = await listen(core, { unixPath: join(dir, "serve.sock") });
  const url = server.urls[0] ?? "";
  try {
    const c = await Client.open(url);
    await c.call("initialize", { protocolVersion: 1 });
    const read = { vm: "a", address: "0x100000", length: 8, space: "phys" };
    const rows: [string, number, number][] = [
      [
        "memory.read 8 B",
        await roundTrips(() => c.call("memory.read", read), READS),
        await roundTrips(() => vm.read("0x100000", 8, { kind: "phys" }), READS),
      ],
      [
        "linux.ps",
        await roundTrips(() => c.call("linux.ps", { vm: "a" }), PS_ROUNDS),
        await roundTrips(() => vm.ps(), PS_ROUNDS),
      ],
    ];
    c.ws.close();
    console.log(`backend: the library on a live guest (${qmp ?? "6.12 under TCG"})`);
    console.log("call               protocol µs   in process µs   ratio");
    for (const [name, over, inproc] of rows) {
      console.log(
        `${name.padEnd(18)} ${over.toFixed(1).padStart(11)}   ${inproc.toFixed(1).padStart(13)}   ${(over / inproc).toFixed(1).padStart(5)}x`,
      );
    }
    if (g) {
      const base = await inProcessDelivery(g, vm);
      console.log(
        `process events of ${FORKS} forks, in process (library stream): ${Math.round(base.each)} events/s; guest forks ${Math.round(base.guestRate)}/s`,
      );
      for (const n of [1, 10]) {
        const r = await liveDelivery(g, url, n);
        console.log(
          `process events to ${String(n).padStart(2)} subscriber(s): ${Math.round(r.each)} events/s each (${(r.each / base.each).toFixed(2)}x in process); guest forks ${Math.round(r.guestRate)}/s`,
        );
      }
    } else console.log("live event delivery needs the bench's own guest (VMSIGHT_QMP given): skipped");
    for (const n of [1, 10]) {
      const rate = await fakeDelivery(fake, url, n);
      console.log(
        `protocol ceiling (fake VM) to ${String(n).padStart(2)} subscriber(s): ${Math.round(rate)} events/s each (${Math.round(rate * n)} messages/s)`,
      );
    }
  } finally {
    await server.close();
    await core.close();
    await vm.close();
    await g?.stop();
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
