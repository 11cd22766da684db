/**
 * The trap core against a fake gdbstub that logs every call as a packet-like string: shared Z
 * packets and their reference counts, per-client release, stepping off a breakpoint, and which
 * handles see a stop. The expected sequences are written out from the GDB remote protocol and
 * QEMU's behaviour (a `c` on a breakpoint address stops again at once).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type RawTrap,
  TrapCore,
  type TrapGdb,
  type TrapRecorder,
  type TrapStop,
} from "../../src/qemu/traps.js";
import type { BreakpointType } from "../../src/transport/gdb/client.js";
import type { SignalStop, StopReply } from "../../src/transport/gdb/stop-reply.js";
import { VmsightError } from "../../src/util/errors.js";
import { FakeGdb } from "../support/fake-gdb.js";
import { Recorder } from "../support/trap-recorder.js";

const BP: RawTrap = { type: 0, addr: 0xffffffff81000000n, kind: 1 };
const W: RawTrap = { type: 2, addr: 0xffffffff82000000n, kind: 8 };
const V: RawTrap = { type: 2, addr: 0xffffffff82000100n, kind: 4 };

function signal(fields: Partial<SignalStop> = {}): SignalStop {
  return {
    type: "signal",
    signal: 5,
    thread: "p01.02",
    swbreak: false,
    hwbreak: false,
    registers: new Map(),
    fields: new Map(),
    ...fields,
  };
}

const watchHit = (address: bigint) => signal({ watch: { kind: "watch", address } });

/** The trap core's stub: stops on vCPU 2's thread, so the tests see which thread steps. */
class FakeStub extends FakeGdb {
  constructor() {
    super("p01.02");
  }
}

function setup() {
  const stub = new FakeStub();
  const core = new TrapCore(stub, { recorder: new Recorder(stub.log) });
  return { stub, core };
}

test("two handles inserting one trap share its Z packet; the z goes with the last hold", async () => {
  const { stub, core } = setup();
  const a = core.client("a");
  const b = core.client("b");
  await a.insert(W);
  await b.insert(W);
  await a.insert(W);
  assert.deepEqual(stub.log, ["rec+2,ffffffff82000000", "Z2,ffffffff82000000,8"]);
  await a.remove(W);
  await b.remove(W);
  assert.equal(stub.log.length, 2, "a still holds it once");
  assert.ok(a.holds(W) && !b.holds(W));
  await a.remove(W);
  await a.remove(W); // not held any more: nothing to send
  assert.deepEqual(stub.log.slice(2), ["z2,ffffffff82000000,8", "rec-2,ffffffff82000000"]);
  assert.deepEqual(core.traps(), []);
});

test("two handles inserting one trap at the same moment send one Z and both hold it", async () => {
  const { stub, core } = setup();
  const a = core.client("a");
  const b = core.client("b");
  await Promise.all([a.insert(W), b.insert(W)]);
  assert.deepEqual(stub.log, ["rec+2,ffffffff82000000", "Z2,ffffffff82000000,8"]);
  assert.ok(a.holds(W) && b.holds(W));
  await a.release();
  assert.ok(b.holds(W), "b's hold outlives a's release");
  assert.deepEqual(core.traps(), [W]);
});

test("release removes the handle's traps that no other handle holds, and only those", async () => {
  const { stub, core } = setup();
  const a = core.client("a");
  const b = core.client("b");
  await a.insert(BP);
  await a.insert(W);
  await a.insert(W);
  await b.insert(W);
  await b.insert(V);
  stub.log.length = 0;
  await a.release();
  assert.deepEqual(stub.log, ["z0,ffffffff81000000,1", "rec-0,ffffffff81000000"]);
  assert.deepEqual(core.traps(), [W, V]);
  assert.deepEqual(b.traps(), [W, V]);
  await assert.rejects(a.insert(BP), { code: "E_TRAPS_RELEASED" });
  await b[Symbol.asyncDispose](); // what `await using` calls
  assert.deepEqual(stub.log.slice(2), [
    "z2,ffffffff82000000,8",
    "rec-2,ffffffff82000000",
    "z2,ffffffff82000100,4",
    "rec-2,ffffffff82000100",
  ]);
  await core.goodbye();
  assert.equal(stub.log.at(-1), "bye");
});

test("a failed z is thrown after every other removal, and keeps the recorder armed", async () => {
  const { stub, core } = setup();
  const a = core.client("a");
  await a.insert(BP);
  await a.insert(W);
  stub.refuse.add("z0,ffffffff81000000,1");
  await assert.rejects(a.release(), { code: "E_GDB_ERROR" });
  assert.ok(stub.log.includes("z2,ffffffff82000000,8"), "the other trap was still removed");
  assert.ok(!stub.log.includes("rec-0,ffffffff81000000"), "the recorder still has the stuck one");
  await core.goodbye();
  assert.ok(!stub.log.includes("bye"));
});

test("a refused Z is a typed error and leaves nothing recorded", async () => {
  const { stub, core } = setup();
  stub.refuse.add("Z1,ffffffff81000000,1");
  await assert.rejects(core.client("a").insert({ ...BP, type: 1 }), { code: "E_TRAP_REFUSED" });
  assert.deepEqual(stub.log, ["rec+1,ffffffff81000000", "rec-1,ffffffff81000000"]);
  assert.deepEqual(core.traps(), []);
});

test("resuming from a breakpoint lifts it for one single-step, then re-inserts it", async () => {
  const { stub, core } = setup();
  await core.client("a").insert(BP);
  stub.log.length = 0;
  stub.script = [stub.at(BP.addr), stub.at(BP.addr)];
  const first = await core.resume();
  assert.deepEqual(first.hits, [BP]);
  assert.equal(first.rip, BP.addr);
  const second = await core.resume();
  assert.deepEqual(second.left, { addr: BP.addr, by: "step" });
  assert.deepEqual(stub.log, [
    "c",
    "p:rip",
    "z0,ffffffff81000000,1",
    "s:p01.02",
    "Z0,ffffffff81000000,1",
    "c",
    "p:rip",
  ]);
});

test("a breakpoint inserted with a skip is left by a rip write, not a step", async () => {
  const { stub, core } = setup();
  let asked = 0;
  const skip = () => {
    asked++;
    return 5;
  };
  await core.client("a").insert(BP, { skip });
  await core.client("b").insert(BP, { skip }); // already inserted: not asked again
  assert.equal(asked, 1);
  stub.script = [stub.at(BP.addr), "wait"];
  await core.resume();
  stub.log.length = 0;
  const running = core.resume();
  core.interrupt();
  const stop = await running;
  assert.deepEqual(stop.left, { addr: BP.addr, by: "skip" });
  assert.equal(stop.interrupted, true);
  assert.deepEqual(stub.log, ["P:rip=ffffffff81000005", "c", "^C"]);
});

test("a client that moved rip itself is not stepped; step() lifts the breakpoint it sits on", async () => {
  const { stub, core } = setup();
  await core.client("a").insert(BP);
  stub.script = [stub.at(BP.addr), "wait"];
  await core.resume();
  await core.cpu.writeRegister("rip", 0xffffffff81234567n);
  stub.log.length = 0;
  const running = core.resume();
  core.interrupt();
  assert.equal((await running).left, undefined);
  assert.deepEqual(stub.log, ["c", "^C"]);

  stub.script = [stub.at(BP.addr)];
  await core.resume();
  stub.log.length = 0;
  await core.step("p01.02");
  await core.step("p01.02"); // off the breakpoint now: a plain step
  assert.deepEqual(stub.log, ["z0,ffffffff81000000,1", "s:p01.02", "Z0,ffffffff81000000,1", "s:p01.02"]);
});

test("a step off a breakpoint that hits a watchpoint is the stop resume() returns", async () => {
  const { stub, core } = setup();
  await core.client("a").insert(BP);
  await core.client("b").insert(W);
  stub.script = [stub.at(BP.addr)];
  await core.resume();
  stub.stepStop = watchHit(W.addr + 4n);
  stub.log.length = 0;
  const stop = await core.resume();
  assert.deepEqual(stop.hits, [W]);
  assert.ok(!stub.log.includes("c"), "no continue: the step's stop is the event");
});

test("a stop is dispatched to the handles holding the traps it is for, with their own", async () => {
  const { stub, core } = setup();
  const seen: string[] = [];
  const listen = (name: string) => {
    const h = core.client(name);
    h.onStop((_s: TrapStop, mine) => void seen.push(`${name}:${mine.map((t) => t.addr.toString(16))}`));
    return h;
  };
  const a = listen("a");
  const b = listen("b");
  const c = listen("c");
  await a.insert(W);
  await b.insert(W);
  await b.insert(V);
  await c.insert(BP);
  // A 4-byte write inside W's 8 bytes; V does not cover that address.
  stub.script = [watchHit(W.addr + 4n), stub.at(BP.addr), signal({ signal: 2 })];
  await core.dispatch(await core.resume());
  assert.deepEqual(seen, ["a:ffffffff82000000", "b:ffffffff82000000"]);
  seen.length = 0;
  await core.dispatch(await core.resume());
  assert.deepEqual(seen, ["c:ffffffff81000000"]);
  seen.length = 0;
  stub.log.length = 0;
  const interrupted = await core.resume();
  await core.dispatch(interrupted);
  assert.equal(interrupted.interrupted, true);
  assert.deepEqual(seen, []);
  assert.ok(!stub.log.includes("p:rip"), "an interrupt is no breakpoint: rip is not read");
  await a.release();
  stub.script = [watchHit(W.addr)];
  await core.dispatch(await core.resume());
  assert.deepEqual(seen, ["b:ffffffff82000000"], "a released handle sees nothing");
});

test("a trap inserted while the guest runs interrupts it and goes in before resume() returns", async () => {
  const { stub, core } = setup();
  const runs: number[] = [];
  core.onRun(() => runs.push(stub.log.length));
  stub.script = ["wait"];
  const running = core.resume();
  await new Promise((r) => setImmediate(r));
  const inserted = core.client("late").insert(W);
  const stop = await running;
  await inserted;
  assert.equal(stop.interrupted, true);
  assert.deepEqual(stub.log, ["c", "^C", "rec+2,ffffffff82000000", "Z2,ffffffff82000000,8"]);
  assert.deepEqual(runs, [2], "caches are dropped after the guest ran, before the queued insert");
  stub.script = ["wait"];
  const again = core.resume();
  await assert.rejects(core.resume(), { code: "E_TRAPS_BUSY" }, "one resume at a time");
  core.interrupt();
  await again;
});

test("a stray trap (not held) is removed at the stub; a held one is refused", async () => {
  const { stub, core } = setup();
  await core.client("a").insert(W);
  await assert.rejects(core.removeStray(W), { code: "E_TRAP_HELD" });
  await core.removeStray(V);
  assert.deepEqual(stub.log.slice(-1), ["z2,ffffffff82000100,4"]);
});

test("queued work waits briefly for a trap stop before it interrupts the guest", async () => {
  const { stub, core } = setup();
  stub.script = ["wait", "wait"];
  const first = core.resume();
  const ran: string[] = [];
  const op = core.whenStopped(async () => void ran.push("op"));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(stub.log, ["c"], "no interrupt at once");
  stub.stopNow(signal({ watch: { kind: "watch", address: 0x1000n } }));
  await first;
  await op;
  assert.deepEqual(ran, ["op"]);
  assert.deepEqual(stub.log, ["c"], "the trap's stop served: no interrupt at all");

  const second = core.resume();
  await core.whenStopped(async () => void ran.push("op2"));
  assert.deepEqual(stub.log, ["c", "c", "^C"], "a guest that does not stop is interrupted");
  assert.equal((await second).interrupted, true);
});
