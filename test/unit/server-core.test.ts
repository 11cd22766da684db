/**
 * The protocol core of `vmsight serve` with strings in and out and a fake VM behind it: the
 * handshake, every error path of an incoming message, results against their schemas,
 * 1,000 requests in flight, and subscriptions that end with the client that made them.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { ProtocolCore } from "../../src/server/core.js";
import { METHODS, type MethodName, RPC_ERRORS } from "../../src/server/schema.js";
import { VmsightError } from "../../src/util/errors.js";
import { FakeVm, fakeDirectory } from "../support/fake-vm.js";
import { CoreClient, until } from "../support/rpc-client.js";

function setup(opts: ConstructorParameters<typeof ProtocolCore>[1] = {}) {
  const vm = new FakeVm();
  const dir = fakeDirectory({ a: vm });
  const core = new ProtocolCore(dir, opts);
  return { vm, dir, core };
}

test("initialize comes first, once, with a supported version", async () => {
  const { core } = setup();
  const c = new CoreClient(core);
  assert.equal((await c.call("vm.list", {})).error?.code, RPC_ERRORS.NOT_INITIALIZED.code);
  const bad = await c.call("initialize", { protocolVersion: 99 });
  assert.equal(bad.error?.code, RPC_ERRORS.UNSUPPORTED_VERSION.code);
  assert.deepEqual(bad.error?.data, { supported: [1] });
  const ok = await c.ok("initialize", { protocolVersion: 1, client: "test" });
  const caps = ok.capabilities as { methods: string[]; events: string[] };
  assert.deepEqual(caps.methods.sort(), Object.keys(METHODS).sort());
  assert.ok(caps.events.includes("process.exec"));
  assert.equal(
    (await c.call("initialize", { protocolVersion: 1 })).error?.code,
    RPC_ERRORS.NOT_INITIALIZED.code,
  );
});

test("a bad message gets one error reply and the connection goes on", async () => {
  const { core } = setup();
  const c = await new CoreClient(core).init();
  const raw = async (text: string) => {
    const before = c.received.length;
    await c.session.receive(text);
    assert.equal(c.received.length, before + 1, `one reply to ${text.slice(0, 40)}`);
    return c.received.at(-1)!;
  };
  assert.deepEqual((await raw("{not json")).error?.code, RPC_ERRORS.PARSE_ERROR.code);
  assert.equal((await raw("{not json")).id, null);
  assert.equal((await raw("[]")).error?.code, RPC_ERRORS.INVALID_REQUEST.code);
  assert.equal((await raw('"hello"')).error?.code, RPC_ERRORS.INVALID_REQUEST.code);
  const oldVersion = await raw('{"jsonrpc":"1.0","id":"r7","method":"vm.list"}');
  assert.equal(oldVersion.error?.code, RPC_ERRORS.INVALID_REQUEST.code);
  assert.equal(oldVersion.id, "r7");
  assert.equal(
    (await raw('{"jsonrpc":"2.0","id":"r8","method":"vm.list","params":[1]}')).error?.code,
    RPC_ERRORS.INVALID_REQUEST.code,
  );
  assert.equal((await c.call("vm.explode", {})).error?.code, RPC_ERRORS.METHOD_NOT_FOUND.code);
  const wrongType = await c.call("memory.read", { vm: "a", address: "0x1000", length: "8" });
  assert.equal(wrongType.error?.code, RPC_ERRORS.INVALID_PARAMS.code);
  assert.ok((wrongType.error?.data?.errors as { path: string }[]).some((e) => e.path === "/length"));
  const extra = await c.call("memory.read", { vm: "a", address: "0x1000", length: 8, evil: true });
  assert.equal(extra.error?.code, RPC_ERRORS.INVALID_PARAMS.code);
  const badAddress = await c.call("memory.read", { vm: "a", address: "4096", length: 8 });
  assert.equal(badAddress.error?.code, RPC_ERRORS.INVALID_PARAMS.code);
  const tooLong = await c.call("memory.read", { vm: "a", address: "0x0", length: 1 << 30 });
  assert.equal(tooLong.error?.code, RPC_ERRORS.INVALID_PARAMS.code);
  const big = `{"jsonrpc":"2.0","id":"r9","method":"vm.list","params":{"pad":"${"x".repeat(10 * 1024 * 1024)}"}}`;
  const bigReply = await raw(big);
  assert.equal(bigReply.error?.code, RPC_ERRORS.INVALID_REQUEST.code);
  assert.match(bigReply.error?.message ?? "", /over the limit/);
  assert.equal((await c.call("vm.list", {})).error, undefined, "still served after the bad messages");
});

test("a notification gets no reply, not even an error", async () => {
  const { core } = setup();
  const c = await new CoreClient(core).init();
  const before = c.received.length;
  await c.session.receive('{"jsonrpc":"2.0","method":"no.such"}');
  await c.session.receive('{"jsonrpc":"2.0","method":"vm.pause","params":{"vm":"a"}}');
  assert.equal(c.received.length, before);
});

test("vmsight failures carry their code; unknown VMs have their own", async () => {
  const { core } = setup();
  const c = await new CoreClient(core).init();
  const fault = await c.call("memory.read", { vm: "a", address: "0xfffff", length: 8, space: "phys" });
  assert.equal(fault.error?.code, RPC_ERRORS.SERVER_ERROR.code);
  assert.equal(fault.error?.data?.code, "E_FAULT");
  assert.equal((await c.call("linux.maps", { vm: "a", pid: 999 })).error?.data?.code, "E_NO_PROCESS");
  assert.equal((await c.call("linux.ps", { vm: "zz" })).error?.code, RPC_ERRORS.UNKNOWN_VM.code);
});

/** Calls every method once with valid params and checks each result against its schema. */
test("every method's result matches its schema", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  const calls: [MethodName, unknown][] = [
    ["vm.list", {}],
    ["vm.get_info", { vm: "a" }],
    ["vm.pause", { vm: "a" }],
    ["vm.resume", { vm: "a" }],
    ["vcpu.get_registers", { vm: "a" }],
    ["vcpu.set_registers", { vm: "a", cpu: 0, registers: { rax: "0x2a" } }],
    ["memory.write", { vm: "a", address: "0x2000", bytes: "0102030405060708", space: "phys" }],
    ["memory.read", { vm: "a", address: "0x2000", length: 8, space: "phys" }],
    ["memory.translate", { vm: "a", address: "0xffff888000002000" }],
    ["memory.set_access", { vm: "a", address: "0xffff888000002000", length: 8, access: "write" }],
    ["breakpoint.set", { vm: "a", at: "do_sys_open" }],
    ["breakpoint.reply", { event: "e999", reply: { action: "continue" } }],
    ["events.subscribe", { vm: "a", types: ["process.exec"] }],
    ["linux.kernel", { vm: "a" }],
    ["linux.ps", { vm: "a" }],
    ["linux.threads", { vm: "a" }],
    ["linux.pstree", { vm: "a" }],
    ["linux.lsmod", { vm: "a" }],
    ["linux.pids", { vm: "a" }],
    ["linux.check", { vm: "a" }],
    ["linux.maps", { vm: "a", pid: 1 }],
    ["linux.lsof", { vm: "a" }],
    ["linux.sockets", { vm: "a" }],
    ["linux.env", { vm: "a", pid: 1 }],
    ["linux.mounts", { vm: "a", pid: 1 }],
    ["linux.ns", { vm: "a" }],
    ["linux.containers", { vm: "a" }],
    ["linux.dmesg", { vm: "a" }],
    ["linux.kill", { vm: "a", pid: 5, signal: "TERM" }],
  ];
  const seen = new Set<string>(["initialize"]);
  for (const [method, params] of calls) {
    const result = await c.ok(method, params);
    assert.ok(
      TypeCompiler.Compile(METHODS[method].result).Check(result),
      `${method} result matches its schema`,
    );
    seen.add(method);
  }
  const sub = (await c.ok("events.subscribe", { vm: "a", types: ["syscall"] })).subscription;
  assert.deepEqual(await c.ok("events.unsubscribe", { subscription: sub }), {});
  const bp = (await c.ok("breakpoint.set", { vm: "a", at: "0xffffffff81000000" })).subscription;
  assert.deepEqual(await c.ok("breakpoint.clear", { subscription: bp }), {});
  seen.add("events.unsubscribe").add("breakpoint.clear");
  assert.deepEqual([...seen].sort(), Object.keys(METHODS).sort(), "the test covers every method");
  assert.equal(vm.ram.readUInt32LE(0x2000), 0x04030201);
  assert.equal(vm.registers.rax, "0x2a");
  assert.deepEqual(
    (await c.ok("memory.read", { vm: "a", address: "0x2000", length: 8, space: "phys" })).bytes,
    "0102030405060708",
  );
});

test("1,000 requests in flight are all answered; the next one over the limit is refused", async () => {
  const { core, vm } = setup({ maxInFlight: 1000 });
  let open!: () => void;
  const gate = new Promise<void>((r) => {
    open = r;
  });
  const ps = vm.ps.bind(vm);
  vm.ps = async () => {
    await gate;
    return ps();
  };
  const c = await new CoreClient(core).init();
  const pending = Array.from({ length: 1000 }, () => c.call("linux.ps", { vm: "a" }));
  await until(() => c.session.inFlight === 1000, "1000 in flight");
  assert.equal((await c.call("vm.list", {})).error?.code, RPC_ERRORS.TOO_MANY_REQUESTS.code);
  open();
  const replies = await Promise.all(pending);
  assert.equal(new Set(replies.map((r) => r.id)).size, 1000);
  assert.ok(replies.every((r) => (r.result?.rows as unknown[]).length === vm.processes.length));
  assert.equal(c.session.inFlight, 0);
});

test("events reach the subscriber with their protocol type; unsubscribe ends the stream", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  const { subscription } = await c.ok("events.subscribe", {
    vm: "a",
    types: ["process.exec", "module.load"],
  });
  assert.equal(vm.streams.size, 1);
  assert.deepEqual([...([...vm.streams][0]?.req.types ?? [])].sort(), ["modules", "proc"]);
  vm.emit({ type: "exec", pid: 42, comm: "sh", filename: "/bin/ls" });
  vm.emit({ type: "exit", pid: 42, code: 0 });
  vm.emit({ type: "load", name: "dummy", base: "0xffffffffc0001000", size: 4096 });
  await until(() => c.events().length === 2, "two events");
  assert.deepEqual(
    c.events().map((e) => [e.type, e.vm, e.subscription]),
    [
      ["process.exec", "a", subscription],
      ["module.load", "a", subscription],
    ],
  );
  await c.ok("events.unsubscribe", { subscription });
  assert.equal(vm.streams.size, 0);
  assert.equal(
    (await c.call("events.unsubscribe", { subscription })).error?.code,
    RPC_ERRORS.UNKNOWN_SUBSCRIPTION.code,
  );
});

test("a client that goes away takes its subscriptions and held vCPUs with it; others keep theirs", async () => {
  const { core, vm } = setup();
  const gone = await new CoreClient(core).init();
  const stays = await new CoreClient(core).init();
  await gone.ok("events.subscribe", { vm: "a", types: ["syscall"] });
  await gone.ok("breakpoint.set", { vm: "a", at: "do_exit", wait: true, replyMs: 60_000 });
  await stays.ok("events.subscribe", { vm: "a", types: ["syscall"] });
  assert.equal(vm.streams.size, 3);
  vm.emit({ type: "break", at: "do_exit", cpu: 0, pid: 1, tid: 1, comm: "init", rip: "0x1", args: [] }, true);
  await until(() => gone.events().length === 1, "held breakpoint event");
  assert.deepEqual(vm.actions, []);
  await gone.session.close();
  assert.equal(vm.streams.size, 1);
  assert.deepEqual(vm.actions, [{ action: "continue" }], "the held vCPU continues");
  vm.emit({ type: "syscall", pid: 1, tid: 1, comm: "init", nr: 0, name: "read", args: [], ret: 0 });
  await until(() => stays.events().length === 1, "the other client's event");
  assert.equal(gone.events().length, 1);
});

test("a held breakpoint takes the subscriber's action, or continues at its deadline", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  // Long enough for the reply to beat it on a loaded machine; the second hit waits it out.
  await c.ok("breakpoint.set", { vm: "a", at: "do_exit", wait: true, replyMs: 1000 });
  assert.equal([...vm.streams][0]?.req.holdMs, 1000, "the backend is asked to hold the vCPU");
  const hit = { type: "break", at: "do_exit", cpu: 0, pid: 1, tid: 1, comm: "init", rip: "0x1", args: [] };
  vm.emit(hit, true);
  await until(() => c.events().length === 1, "first hit");
  const reply = c.events()[0]?.reply as { event: string; deadlineMs: number };
  assert.equal(reply.deadlineMs, 1000);
  const skip = await c.ok("breakpoint.reply", { event: reply.event, reply: { action: "skip" } });
  assert.deepEqual(skip, { applied: true });
  vm.emit(hit, true);
  await until(() => vm.actions.length === 2, "the deadline continues the second hit");
  assert.deepEqual(vm.actions, [{ action: "skip" }, { action: "continue" }]);
  const late = c.events()[1]?.reply as { event: string };
  assert.deepEqual(await c.ok("breakpoint.reply", { event: late.event, reply: { action: "skip" } }), {
    applied: false,
  });
  const bad = await c.call("breakpoint.reply", { event: late.event, reply: { action: "set_registers" } });
  assert.equal(bad.error?.code, RPC_ERRORS.INVALID_PARAMS.code);
});

test("an execute watch reports breakpoint hits as memory.access", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  await c.ok("memory.set_access", { vm: "a", address: "0xffffffff81000000", length: 1, access: "execute" });
  assert.equal([...vm.streams][0]?.req.at, "0xffffffff81000000");
  vm.emit({
    type: "break",
    at: "0xffffffff81000000",
    cpu: 0,
    pid: 3,
    tid: 3,
    comm: "x",
    rip: "0x1",
    args: [],
  });
  await until(() => c.events().length === 1, "access event");
  assert.equal(c.events()[0]?.type, "memory.access");
  assert.equal(c.events()[0]?.access, "execute");
});

test("a VM that goes away is a vm.state event and ends its subscriptions, not the server", async () => {
  const { core, vm, dir } = setup();
  const c = await new CoreClient(core).init();
  assert.equal(
    (await c.call("events.subscribe", { vm: "*", types: ["syscall"] })).error?.code,
    RPC_ERRORS.INVALID_PARAMS.code,
  );
  await c.ok("events.subscribe", { vm: "*", types: ["vm.state"] });
  const { subscription } = await c.ok("events.subscribe", { vm: "a", types: ["syscall"] });
  dir.set("a", false);
  await until(() => vm.streams.size === 0, "stream ended");
  assert.deepEqual(
    c.events().map((e) => [e.vm, e.type, e.event]),
    [["a", "vm.state", "VANISHED"]],
  );
  const ended = c.received.find((r) => r.method === "subscription.ended");
  assert.equal(ended?.params?.subscription, subscription);
  assert.equal((await c.call("linux.ps", { vm: "a" })).error?.code, RPC_ERRORS.UNKNOWN_VM.code);
  dir.set("a", true);
  assert.equal(c.events().at(-1)?.event, "APPEARED");
  assert.equal((await c.call("linux.ps", { vm: "a" })).error, undefined);
});

test("a backend that refuses a subscription leaves nothing registered", async () => {
  const { core, vm } = setup();
  vm.events = () => {
    throw new VmsightError("E_REFUSED", "not this kind");
  };
  const c = await new CoreClient(core).init();
  const r = await c.call("events.subscribe", { vm: "a", types: ["switch"] });
  assert.equal(r.error?.data?.code, "E_REFUSED");
  assert.equal(c.session.subscriptions.size, 0);
});

test("a client that leaves while its subscribe waits for the VM gets no stream", async () => {
  const vm = new FakeVm();
  let release!: () => void;
  const slow = new Promise<void>((r) => {
    release = r;
  });
  const dir = fakeDirectory({ a: vm });
  const get = dir.get.bind(dir);
  dir.get = async (name: string) => {
    await slow;
    return get(name);
  };
  const core = new ProtocolCore(dir);
  const c = await new CoreClient(core).init();
  const pending = c.session.receive(
    JSON.stringify({
      jsonrpc: "2.0",
      id: "x",
      method: "events.subscribe",
      params: { vm: "a", types: ["syscall"] },
    }),
  );
  await c.session.close();
  release();
  await pending;
  assert.equal(vm.streams.size, 0);
  assert.equal(c.session.subscriptions.size, 0);
});

test("an execute watch on a physical address is refused with a hint, and arms nothing", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  const r = await c.call("memory.set_access", {
    vm: "a",
    address: "0x1000000",
    length: 1,
    access: "execute",
    space: "phys",
  });
  assert.equal(r.error?.code, RPC_ERRORS.SERVER_ERROR.code);
  const data = r.error?.data as { code: string; hint?: string };
  assert.equal(data.code, "E_WATCH_ADDRESS");
  assert.match(data.hint ?? "", /virtual address/);
  assert.equal(vm.streams.size, 0, "no breakpoint armed");
});

test("a read or write watch's memory.access says read or write, as the watch was set", async () => {
  const { core, vm } = setup();
  const c = await new CoreClient(core).init();
  const at = { vm: "a", address: "0xffff888000002000", length: 8 };
  await c.ok("memory.set_access", { ...at, access: "write" });
  await c.ok("memory.set_access", { ...at, access: "read" });
  const who = { address: at.address, cpu: 0, pid: 3, tid: 3, comm: "x", rip: "0x1", value: "0x2" };
  // The library reports the gdb stop's name.
  vm.emit({ type: "watch", access: "watch", ...who });
  vm.emit({ type: "watch", access: "rwatch", ...who });
  await until(() => c.events().length === 4, "both records to both watches");
  assert.deepEqual(
    c.events().map((e) => e.access),
    ["write", "write", "read", "read"],
  );
});
