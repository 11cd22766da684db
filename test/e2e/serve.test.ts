/**
 * `vmsight serve` against a real guest: linux.ps over the protocol names the guest's own
 * processes (its /proc is the oracle), process.exec events arrive for a command the guest
 * runs, and a client that disconnects leaves no trap behind (the guest keeps answering). Two
 * clients share one guest's traps: both see its process events, one leaving does not end the
 * other's, and calls answer (as its /proc) while they run. A kill one client asks for while
 * another's subscription runs: the subscription sees the exit. A physical memory write is read
 * back by the guest itself; register writes take.
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
import { type Ps, assertPsMatchesView, eventually } from "../support/compare.js";
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
  const stop = async () => {
    await server.close();
    await core.close();
    await registry.close();
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return { g, core, server, stop };
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
});

describe(`vmsight serve holds a vCPU at a breakpoint until the client answers (${KERNEL} guest)`, () => {
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
});
