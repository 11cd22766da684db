/**
 * `vmsight serve` against a real guest: linux.ps over the protocol names the guest's own
 * processes (its /proc is the oracle), process.exec events arrive for a command the guest
 * runs, and a client that disconnects leaves no trap behind (the guest keeps answering). Two
 * clients share one guest's traps: both see its process events, one leaving does not end the
 * other's, and calls answer (as its /proc) while they run. A kill one client asks for while
 * another's subscription runs: the subscription sees the exit. A physical memory write is read
 * back by the guest itself; register writes take. A write watch on the memwrite workload's
 * counter reports the values the guest's /proc shows; vm.pause/resume reach a subscriber as
 * STOP/RESUME while the guest's own clock stands still; an insmod is a module.load as
 * /proc/modules shows it. Then the real `vmsight serve --publish` takes the second guest: its
 * fork loops' process events reach JetStream once each, in order, as many as the loops printed:
 * the first loop's while the consumer reads and leaves, the second's while nats-server is down.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AckPolicy, type NatsConnection, connect } from "nats";
import { WebSocket } from "ws";
import { ProtocolCore } from "../../src/server/core.js";
import { openLibVm } from "../../src/server/lib-vm.js";
import { STREAM, subjectOf } from "../../src/server/nats.js";
import { VmRegistry } from "../../src/server/vms.js";
import { type Listening, listen } from "../../src/server/ws.js";
import { BackgroundCli } from "../support/background.js";
import { type Ps, assertPsMatchesView, eventually } from "../support/compare.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";
import { startNatsServer } from "../support/nats-server.js";
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
  const events = () => got.filter((m) => m.method === "event").map((m) => m.params ?? {});
  return { ws, got, call, events };
}

type Client = Awaited<ReturnType<typeof client>>;

/** The create and the exec of the `sh -c 'echo MARK'` a client saw (the serial shell forks, the child execs). */
function forkExec(c: Client, mark: string) {
  const exec = c
    .events()
    .find((e) => e.type === "process.exec" && (e.argv as string[] | undefined)?.includes(`echo ${mark}`));
  const create = c
    .events()
    .find(
      (e) => e.type === "process.create" && exec !== undefined && e.pid === exec.pid && e.thread !== true,
    );
  return exec && create ? { exec, create } : undefined;
}

/**
 * Runs `sh -c 'echo MARK-n'` in the guest until every client has seen the create and the exec of
 * one same run (a subscription arms its traps after its reply, so the first runs may go unseen).
 */
async function runSeenBy(g: TestGuest, clients: readonly Client[], mark: string) {
  for (let i = 0; i < 10; i++) {
    const m = `${mark}-${i}`;
    await g.serial.command(`sh -c 'echo ${m}' >/dev/null`, 60_000);
    const seen = () => clients.every((c) => forkExec(c, m) !== undefined);
    if (
      await until(seen, `${m} seen by all`, 15_000).then(
        () => true,
        () => false,
      )
    )
      return clients.map((c) => forkExec(c, m)!);
  }
  const got = clients.map((c) => [
    ...c.events().slice(-5),
    ...c.got.filter((m) => m.method !== "event" && m.id === undefined),
  ]);
  assert.fail(`no run of ${mark} was seen by every client: ${JSON.stringify(got)}`);
}

/** A guest booted and served in process (a VmRegistry, the protocol core, a unix socket). */
async function servedGuest() {
  const g = await bootTestGuest(KERNEL, { memoryBackend: ramBackendFor(KERNEL) });
  await g.waitReady(180_000).catch(async (error) => {
    await g.stop();
    throw error;
  });
  const dir = mkdtempSync(join(tmpdir(), "vmsight-serve-e2e-"));
  const registry = new VmRegistry(openLibVm);
  registry.add("guest", g.qmpSocket);
  const core = new ProtocolCore(registry);
  const server: Listening = await listen(core, { unixPath: join(dir, "serve.sock") });
  let released: Promise<void> | undefined;
  // Lets go of the guest's QMP socket (QEMU takes one client), so a CLI serve can have it.
  const release = () => {
    released ??= (async () => {
      await server.close();
      await core.close();
      await registry.close();
    })();
    return released;
  };
  const stop = async () => {
    await release();
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return { g, core, server, dir, release, stop };
}

/** Forks of the fork loop the NATS check traces: enough to stream, few enough for TCG. */
const FORKS = 120;

interface Published {
  readonly seq: number;
  readonly subject: string;
  readonly body: Record<string, unknown>;
}

/** Reads (and acks, confirmed) what the durable consumer has until `done` or the deadline. */
async function readUntil(nc: NatsConnection, got: Published[], done: () => boolean, ms: number) {
  const consumer = await nc.jetstream().consumers.get(STREAM, "e2e");
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) {
    for await (const m of await consumer.fetch({ max_messages: 500, expires: 1000 })) {
      got.push({ seq: m.seq, subject: m.subject, body: m.json() });
      await m.ackAck();
    }
  }
  return done();
}

describe(`vmsight serve against a ${KERNEL} guest`, () => {
  let served: Awaited<ReturnType<typeof servedGuest>>;
  let g: TestGuest;
  let view: GuestView;
  let core: ProtocolCore;
  let server: Listening;
  before(async () => {
    served = await servedGuest();
    ({ g, core, server } = served);
    view = await g.view();
  });
  after(async () => served?.stop());

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

  test("two clients both get one guest's process events; one leaving leaves the other's; ps answers meanwhile", async () => {
    const url = server.urls[0] ?? "";
    const [a, b] = [await client(url), await client(url)];
    const types = ["process.create", "process.exec"];
    await a.call("events.subscribe", { vm: "guest", types });
    await b.call("events.subscribe", { vm: "guest", types });
    const both = await runSeenBy(g, [a, b], "serve-two");
    for (const seen of both) {
      assert.equal(seen.exec.vm, "guest");
      assert.notEqual(seen.create.ppid, seen.create.pid, "the fork names its parent");
    }
    const [first, second] = both;
    assert.equal(first?.exec.pid, second?.exec.pid, "both clients saw the same process");
    a.ws.close();
    await until(() => core.clients.size === 1, "the first client is gone", 60_000);
    await runSeenBy(g, [b], "serve-one");
    await eventually(g, async (view) => {
      const rows = (await b.call("linux.ps", { vm: "guest" })).rows as Ps[];
      assertPsMatchesView(rows, view);
    });
    b.ws.close();
    await until(() => core.clients.size === 0, "the second client is gone", 60_000);
    assert.match(await g.serial.command("echo still-running", 60_000), /still-running/);
  });

  test("linux.kill from one client while another's subscription runs: it goes on and sees the exit", async () => {
    const url = server.urls[0] ?? "";
    const [watcher, killer] = [await client(url), await client(url)];
    await watcher.call("events.subscribe", { vm: "guest", types: ["process.create", "process.exit"] });
    // A subscription arms its traps after its reply: the victim's creation says they are armed.
    let pid = 0;
    for (
      let i = 0;
      i < 10 && !watcher.events().some((e) => e.type === "process.create" && e.pid === pid);
      i++
    ) {
      const out = await g.serial.command(
        "sh -c 'workload name serve-victim >/dev/null 2>&1 </dev/null & echo $!'",
      );
      pid = Number(out.replace(/\r/g, "").trim().split("\n").pop());
      await until(() => watcher.events().some((e) => e.pid === pid), "the victim's creation", 15_000).catch(
        () => {},
      );
    }
    assert.ok(
      watcher.events().some((e) => e.type === "process.create" && e.pid === pid),
      "armed",
    );
    const r = await killer.call("linux.kill", { vm: "guest", pid, signal: "KILL" });
    assert.ok(r.outcome === "gone" || r.outcome === "zombie", JSON.stringify(r));
    const exit = () => watcher.events().find((e) => e.type === "process.exit" && e.pid === pid);
    await until(() => exit() !== undefined, "the victim's exit", 60_000);
    assert.equal(exit()?.signal, 9);
    assert.equal((await g.serial.run(`test -e /proc/${pid}`)).status, 1, `${pid} still in the guest's /proc`);
    assert.ok(
      ((await killer.call("vm.get_info", { vm: "guest" })).traps as number) > 0,
      "the subscription's traps stay",
    );
    for (const c of [watcher, killer]) c.ws.close();
    await until(() => core.clients.size === 0, "the clients are gone", 60_000);
    assert.match(await g.serial.command("echo still-running", 60_000), /still-running/);
  });

  test("memory.write (physical) is what the guest then reads; vcpu.set_registers changes the paused guest", async () => {
    const c = await client(server.urls[0] ?? "");
    const pid = view.roles.get("memwrite")!;
    const counter = view.counterAddress!;
    // The counter's page as the process maps it, then written physically as a device would.
    const t = await c.call("memory.translate", { vm: "guest", address: `0x${counter.toString(16)}`, pid });
    const value = 0x5eed_0000_0000_0000n;
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(value);
    const at = { vm: "guest", address: t.phys as string, space: "phys" };
    assert.deepEqual(await c.call("memory.write", { ...at, bytes: bytes.toString("hex") }), { written: 8 });
    const guest = await g.serial.command(
      `dd if=/proc/${pid}/mem bs=8 skip=${counter / 8n} count=1 2>/dev/null | od -An -tx1`,
    );
    const now = Buffer.from(guest.trim().split(/\s+/).join(""), "hex").readBigUInt64LE(0);
    // The process goes on counting (once a second) from what was written.
    assert.ok(now >= value && now < value + 600n, `the guest reads 0x${now.toString(16)}`);
    await c.call("vm.pause", { vm: "guest" });
    try {
      const regs = (await c.call("vcpu.get_registers", { vm: "guest", cpu: 0 })).registers as Record<
        string,
        string
      >;
      const rax = regs.rax ?? "";
      const other = `0x${(BigInt(rax) ^ 0x5a5an).toString(16)}`;
      await c.call("vcpu.set_registers", { vm: "guest", cpu: 0, registers: { rax: other } });
      const changed = (await c.call("vcpu.get_registers", { vm: "guest", cpu: 0 })).registers as Record<
        string,
        string
      >;
      assert.equal(BigInt(changed.rax ?? ""), BigInt(other));
      await c.call("vcpu.set_registers", { vm: "guest", cpu: 0, registers: { rax } });
      const back = (await c.call("vcpu.get_registers", { vm: "guest", cpu: 0 })).registers as Record<
        string,
        string
      >;
      assert.equal(BigInt(back.rax ?? ""), BigInt(rax));
    } finally {
      await c.call("vm.resume", { vm: "guest" });
      c.ws.close();
    }
    assert.match(await g.serial.command("echo still-running", 60_000), /still-running/);
  });
  test("a write watch on memwrite's counter yields memory.access with the values the guest holds", async () => {
    const writer = view.roles.get("memwrite");
    const counter = view.counterAddress;
    assert.ok(writer !== undefined && counter !== undefined, "the guest reports memwrite's counter");
    const c = await client(server.urls[0] ?? "");
    const address = `0x${counter.toString(16)}`;
    const watch = { vm: "guest", address, length: 8, access: "write", pid: writer };
    const { subscription } = await c.call("memory.set_access", watch);
    const hits = () => c.events().filter((e) => e.type === "memory.access");
    await until(() => hits().length >= 2, "two stores to the counter", 60_000);
    await c.call("events.unsubscribe", { subscription });
    // The guest's own reading of the counter, through its /proc, after the last reported store.
    const text = await g.serial.command(
      `dd if=/proc/${writer}/mem bs=8 count=1 skip=$((${address} / 8)) 2>/dev/null | od -An -tu8`,
      60_000,
    );
    const now = BigInt(text.trim().split(/\s+/).at(-1) ?? "x");
    const [a, b] = hits();
    for (const e of [a, b]) {
      assert.equal(e?.pid, writer);
      assert.equal(e?.comm, view.processes.find((p) => p.pid === writer)?.comm);
      assert.equal(e?.access, "write");
      assert.equal(BigInt(String(e?.address)), counter);
    }
    const [va, vb] = [BigInt(String(a?.value)), BigInt(String(b?.value))];
    assert.equal(vb - va, 1n, "counter++ once a second");
    // memwrite stores once a second: the guest has counted on a little since, never back.
    assert.ok(now >= vb && now - vb < 120n, `the guest's counter ${now} follows the reported ${vb}`);
    c.ws.close();
  });

  test("vm.pause and vm.resume reach a vm.state subscriber as STOP then RESUME; the guest's clock stood still", async () => {
    const c = await client(server.urls[0] ?? "");
    await c.call("events.subscribe", { vm: "guest", types: ["vm.state"] });
    const uptime = async () =>
      Number((await g.serial.command("cat /proc/uptime", 60_000)).trim().split(/\s+/)[0]);
    const states = () => c.events().flatMap((e) => (e.type === "vm.state" ? [e.event] : []));
    const [guest0, host0] = [await uptime(), Date.now()];
    await c.call("vm.pause", { vm: "guest" });
    await new Promise((r) => setTimeout(r, 4000));
    await c.call("vm.resume", { vm: "guest" });
    const [guest1, host1] = [await uptime(), Date.now()];
    await until(() => states().includes("RESUME"), "the RESUME event", 60_000);
    assert.deepEqual(states(), ["STOP", "RESUME"]);
    const [guestS, hostS] = [guest1 - guest0, (host1 - host0) / 1000];
    assert.ok(guestS < hostS - 3, `the guest counted ${guestS}s of the host's ${hostS}s, 4 of them paused`);
    c.ws.close();
  });

  test("an insmod in the guest is a module.load over the protocol, as its /proc/modules shows", async () => {
    const c = await client(server.urls[0] ?? "");
    await c.call("events.subscribe", { vm: "guest", types: ["module.load", "module.unload"] });
    const cycle = () =>
      g.serial.command(
        "rmmod dummy 2>/dev/null; insmod $(grep /dummy /etc/vmsight/modules) && grep '^dummy ' /proc/modules",
        60_000,
      );
    const loads = () => c.events().filter((e) => e.type === "module.load" && e.name === "dummy");
    // The subscription arms its traps after its reply: cycle until one load is seen, then once more.
    for (let i = 0; i < 10 && loads().length === 0; i++) {
      await cycle();
      await until(() => loads().length > 0, "a dummy load", 15_000).catch(() => {});
    }
    const seen = loads().length;
    assert.ok(seen > 0, `no module.load: ${JSON.stringify(c.events().slice(-5))}`);
    const out = await cycle();
    await until(() => loads().length > seen, "the load of the last insmod", 60_000);
    // /proc/modules: "dummy 12288 0 - Live 0xffffffffc0561000"
    const [name, size, , , , base] = out.trim().split(/\s+/);
    const load = loads()[seen];
    assert.equal(load?.name, name);
    assert.equal(load?.size, Number(size));
    assert.equal(BigInt(String(load?.base)), BigInt(base ?? "x"));
    const unload = c.events().some((e) => e.type === "module.unload" && e.name === "dummy");
    assert.ok(unload, "the rmmod before it is a module.unload");
    c.ws.close();
  });
});

describe(`vmsight serve holds a vCPU at a breakpoint until the client answers, then publishes to NATS (${KERNEL} guest)`, () => {
  let served: Awaited<ReturnType<typeof servedGuest>>;
  let g: TestGuest;
  let server: Listening;
  before(async () => {
    served = await servedGuest();
    ({ g, server } = served);
  });
  after(async () => served?.stop());

  test("set_registers on a held kill(2) makes it return -EPERM to the guest's shell", async () => {
    const probe = "sh -c 'kill -0 $$; echo RC=$?'";
    assert.match(await g.serial.command(probe, 60_000), /RC=0/, "kill -0 on itself succeeds untouched");
    const c = await client(server.urls[0] ?? "");
    const { subscription } = await c.call("breakpoint.set", {
      vm: "guest",
      at: "__x64_sys_kill",
      comm: "sh",
      wait: true,
      replyMs: 60_000,
    });
    const held = () => c.events().find((e) => e.type === "breakpoint");
    // The breakpoint is armed after the reply: try until one kill(2) is held.
    let out: Promise<string> | undefined;
    for (let i = 0; i < 10 && !held(); i++) {
      out = g.serial.command(probe, 120_000);
      const seen = await until(() => held() !== undefined, "a held kill", 15_000).then(
        () => true,
        () => false,
      );
      if (!seen) await out;
    }
    const e = held();
    assert.ok(e && out, "the breakpoint was hit");
    assert.equal(e.comm, "sh");
    const reply = e.reply as { event: string; deadlineMs: number };
    // While held: the guest is stopped, and calls answer from it.
    const regs = (await c.call("vcpu.get_registers", { vm: "guest", cpu: e.cpu as number }))
      .registers as Record<string, string>;
    assert.equal(BigInt(regs.rip ?? ""), BigInt(e.rip as string), "the vCPU is where it stopped");
    const rsp = BigInt(regs.rsp ?? "");
    const ret = (await c.call("memory.read", { vm: "guest", address: `0x${rsp.toString(16)}`, length: 8 }))
      .bytes as string;
    // Return to the caller at once with -EPERM, as if kill(2) had refused.
    const registers = {
      rip: `0x${Buffer.from(ret, "hex").readBigUInt64LE(0).toString(16)}`,
      rsp: `0x${(rsp + 8n).toString(16)}`,
      rax: `0x${BigInt.asUintN(64, -1n).toString(16)}`,
    };
    const answer = await c.call("breakpoint.reply", {
      event: reply.event,
      reply: { action: "set_registers", registers },
    });
    assert.deepEqual(answer, { applied: true });
    const text = await out;
    assert.match(text, /RC=1/, `the shell saw kill fail:\n${text}`);
    assert.match(text, /not permitted/i);
    await c.call("breakpoint.clear", { subscription });
    assert.match(await g.serial.command(probe, 60_000), /RC=0/, "untouched again once cleared");
    c.ws.close();
  });

  test("serve --publish: the guest's fork loop reaches JetStream once each, in order, across a consumer reconnect and a nats-server restart", async () => {
    await served.release();
    const nats = await startNatsServer();
    const cli = new BackgroundCli([
      "serve",
      ...["--vm", `guest=${g.qmpSocket}`, "--socket", join(served.dir, "cli.sock")],
      ...["--publish", nats.url],
    ]);
    try {
      await cli.waitFor(/serve: publishing /, 120_000);
      const servers = nats.url.slice("nats://".length);
      const admin = await connect({ servers });
      await (await admin.jetstreamManager()).consumers.add(STREAM, {
        durable_name: "e2e",
        ack_policy: AckPolicy.Explicit,
        filter_subject: "vmsight.*.guest.process.>",
      });
      await admin.close();
      const got: Published[] = [];
      const bodies = (type: string) =>
        got.filter((m) => m.body.type === `process.${type}`).map((m) => m.body);
      const marked = (i: number) =>
        bodies("exec").some((e) => (e.argv as string[]).includes(`echo nats-${i}`));
      // The publisher's traps arm after serve starts: run a marked command until JetStream has it.
      let nc = await connect({ servers });
      for (let i = 0; ; i++) {
        assert.ok(i < 10, `no marked exec reached JetStream: ${cli.stderr}`);
        await g.serial.command(`sh -c 'echo nats-${i}' >/dev/null`, 60_000);
        if (await readUntil(nc, got, () => marked(i), 15_000)) break;
      }
      // Two loops, so that on any host events are published in both conditions: the first while
      // the consumer reads (it leaves once it has some), the second while nats-server is down.
      const forkLoop = async () => {
        const out = await g.serial.command(
          `workload forkloop ${FORKS} & F=$!; echo "FL $F"; wait $F`,
          300_000,
        );
        const loop = Number(/^FL (\d+)$/m.exec(out)?.[1]);
        const printed = Number(/^forkloop (\d+)$/m.exec(out)?.[1]);
        assert.ok(loop > 0 && printed === FORKS, `the guest's fork loop printed:\n${out}`);
        return loop;
      };
      const first = forkLoop();
      const children = () => bodies("create").filter((e) => e.comm === "wl-forkloop");
      assert.ok(await readUntil(nc, got, () => children().length >= 20, 120_000), "the loop's first forks");
      await nc.close();
      const loops = [await first];
      await nats.halt();
      loops.push(await forkLoop());
      await nats.restart();
      const printed = 2 * FORKS;
      nc = await connect({ servers });
      const exits = () => bodies("exit").filter((e) => loops.includes(Number(e.ppid)));
      const all = await readUntil(nc, got, () => exits().length >= printed, 120_000);
      await nc.close();
      assert.ok(all, `${exits().length} of ${printed} exits reached JetStream; serve said:\n${cli.stderr}`);
      assert.match(cli.stderr, /acknowledges again/, "serve saw NATS go and come back");

      assert.equal(new Set(got.map((m) => m.seq)).size, got.length, "no message read twice");
      const creates = bodies("create").filter((e) => loops.includes(Number(e.ppid)));
      assert.equal(creates.length, printed, "one create per fork the loop counted");
      assert.deepEqual(
        exits().map((e) => e.pid),
        creates.map((e) => e.pid),
        "each child exits once, in the order it was created",
      );
      const pids = creates.map((e) => Number(e.pid));
      assert.ok(
        pids.every((p, i) => i === 0 || p > (pids[i - 1] ?? 0)),
        "creates in the order the guest gave out pids",
      );
      const at = (type: string, pid: unknown) =>
        got.findIndex((m) => m.body.type === `process.${type}` && m.body.pid === pid);
      assert.ok(
        creates.every((e) => at("create", e.pid) < at("exit", e.pid)),
        "each create before its exit",
      );
      assert.ok(exits().every((e) => e.exitCode === 0 && e.comm === "wl-forkloop"));
      const exec = bodies("exec").find((e) => e.pid === loops[1]);
      assert.deepEqual(exec?.argv, ["workload", "forkloop", String(FORKS)]);
      const subject = got.find((m) => m.body === exec)?.subject;
      assert.equal(subject, subjectOf(hostname(), "guest", "process.exec"));
    } finally {
      cli.kill("SIGTERM");
      await cli.exited;
      await nats.stop();
    }
  });
});
