/**
 * The event engine against a scripted gdbstub and guest: how it leaves breakpoints (RIP write
 * over a NOP, remove/step/re-insert otherwise), conditions, shared Z packets, traps added while
 * the guest runs, and the order of cleanup. The expected packet sequences are written out by
 * hand from the GDB remote protocol and QEMU's behaviour (a `c` on a breakpoint stops at once).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventEngine, type TrapHit } from "../../src/events/engine.js";
import { type RawTrap, TrapCore, type TrapRecorder } from "../../src/qemu/traps.js";
import { VmsightError } from "../../src/util/errors.js";
import { DATA, F_NOP, F_PUSH, FakeGdb, FakeOs, stop } from "../support/fake-gdb.js";
import { Recorder } from "../support/trap-recorder.js";

function setup() {
  const gdb = new FakeGdb();
  const os = new FakeOs();
  const engine = new EventEngine({
    traps: new TrapCore(gdb, { recorder: new Recorder(gdb.log) }),
    os,
    resumeGuest: async () => {
      gdb.log.push("resume");
    },
  });
  return { gdb, os, engine };
}

test("a breakpoint on a NOP is left by moving RIP past it: no step, no z/Z", async () => {
  const { gdb, engine } = setup();
  const hits: bigint[] = [];
  await engine.breakpoint("f_nop", async (hit) => {
    hits.push(await hit.register("rip"));
    return hits.length === 2 ? "stop" : undefined;
  });
  gdb.script = [gdb.at(F_NOP), gdb.at(F_NOP)];
  await engine.run();
  assert.deepEqual(hits, [F_NOP, F_NOP]);
  assert.deepEqual(gdb.log, [
    "rec+0,ffffffff81000000",
    "Z0,ffffffff81000000,1",
    "c",
    "p:rip",
    "p:rip", // the handler's own read
    `P:rip=${(F_NOP + 5n).toString(16)}`,
    "c",
    "p:rip",
    "p:rip",
  ]);
  assert.equal(engine.stats.skips, 1);
  assert.equal(engine.stats.steps, 0);
});

test("any other instruction is single-stepped with the breakpoint lifted, then re-inserted", async () => {
  const { gdb, engine } = setup();
  let n = 0;
  await engine.breakpoint("f_push", () => (++n === 2 ? "stop" : undefined));
  gdb.script = [gdb.at(F_PUSH), gdb.at(F_PUSH)];
  await engine.run();
  const a = F_PUSH.toString(16);
  assert.deepEqual(gdb.log.slice(2), ["c", "p:rip", `z0,${a},1`, "s:p01.01", `Z0,${a},1`, "c", "p:rip"]);
  assert.equal(engine.stats.steps, 1);
});

test("a handler that moved RIP (return from the function) needs no step-over", async () => {
  const { gdb, os, engine } = setup();
  os.memory.set(0xffffc90000001000n, [0x78, 0x56, 0x34, 0x12, 0xff, 0xff, 0xff, 0xff]); // return address
  let n = 0;
  await engine.breakpoint("f_push", async (hit: TrapHit) => {
    if (++n === 2) return "stop";
    await hit.returnFromFunction(-22n);
    return undefined;
  });
  gdb.script = [gdb.at(F_PUSH), gdb.at(F_PUSH)];
  await engine.run();
  assert.equal(gdb.regs.get("rip"), F_PUSH); // second stop put it back
  assert.ok(!gdb.log.some((l) => l.startsWith("s:") || l.startsWith("z")));
  assert.ok(gdb.log.includes(`P:rax=${BigInt.asUintN(64, -22n).toString(16)}`));
  assert.ok(gdb.log.includes("P:rsp=ffffc90000001008"));
  assert.ok(gdb.log.includes("P:rip=ffffffff12345678"));
});

test("conditions filter by pid and comm on the stopped guest; filtered stops are counted", async () => {
  const { gdb, os, engine } = setup();
  const seen: number[] = [];
  await engine.watch(DATA, (hit) => void seen.push(hit.task().pid), {
    when: { pid: 7, comm: "wl-memwrite" },
  });
  const as = (pid: number, comm: string) => () => {
    os.current = { ...os.current, pid, tgid: pid, comm };
    return stop({ watch: { kind: "watch", address: DATA } });
  };
  gdb.script = [as(10, "sh"), as(7, "other"), as(7, "wl-memwrite"), "wait"];
  const run = engine.run();
  while (gdb.script.length > 0) await new Promise((r) => setImmediate(r));
  engine.stop();
  await run;
  assert.deepEqual(seen, [7]);
  assert.equal(engine.stats.stops, 3);
  assert.equal(engine.stats.filtered, 2);
  assert.ok(os.invalidations >= 4, "memory caches are dropped after every run of the guest");
});

test("a user-address watch only fires in its process's address space", async () => {
  const { gdb, os, engine } = setup();
  let hits = 0;
  const trap = await engine.watch(0x1000n, () => void hits++, { pid: 42, length: 8 });
  assert.equal(trap.space?.mm, 0xffff888000420000n);
  const inMm = (mm: bigint) => () => {
    os.current = { ...os.current, mm };
    return stop({ watch: { kind: "watch", address: 0x1000n } });
  };
  gdb.script = [inMm(0xffff888000999000n), inMm(0xffff888000420000n), "wait"];
  const run = engine.run();
  while (gdb.script.length > 0) await new Promise((r) => setImmediate(r));
  engine.stop();
  await run;
  assert.equal(hits, 1);
});

test("bad symbols, unmapped and misaligned addresses fail before any packet is sent", async () => {
  const { gdb, engine } = setup();
  await assert.rejects(
    engine.breakpoint("nope", () => undefined),
    { code: "E_SYMBOL_UNKNOWN" },
  );
  await assert.rejects(
    engine.watch(0x5000n, () => undefined, { pid: 42 }),
    { code: "E_WATCH_UNMAPPED" },
  );
  await assert.rejects(
    engine.watch(0xdead0000n, () => undefined),
    { code: "E_FAULT" },
  );
  await assert.rejects(
    engine.watch(DATA + 1n, () => undefined, { length: 4 }),
    { code: "E_WATCH_LENGTH" },
  );
  assert.deepEqual(gdb.log, []);
});

test("traps on the same address share one Z packet; the last removal sends the z", async () => {
  const { gdb, engine } = setup();
  const a = await engine.watch(DATA, () => undefined, { length: 4 });
  const b = await engine.watch(DATA, () => undefined, { length: 4 });
  assert.deepEqual(gdb.log, ["rec+2,ffffffff82000000", "Z2,ffffffff82000000,4"]);
  await a.remove();
  assert.equal(gdb.log.length, 2);
  await b.remove();
  assert.deepEqual(gdb.log.slice(2), ["z2,ffffffff82000000,4", "rec-2,ffffffff82000000"]);
});

test("both handlers of a shared trap run; 'remove' drops only its own trap", async () => {
  const { gdb, engine } = setup();
  const calls: string[] = [];
  await engine.watch(DATA, () => {
    calls.push("a");
    return "remove";
  });
  await engine.watch(DATA, () => {
    calls.push("b");
    return calls.length >= 3 ? "stop" : undefined;
  });
  const hitData = stop({ watch: { kind: "watch", address: DATA } });
  gdb.script = [hitData, hitData];
  await engine.run();
  assert.deepEqual(calls, ["a", "b", "b"]);
  assert.equal(engine.traps().length, 1);
  assert.ok(!gdb.log.includes("z2,ffffffff82000000,8"), "the Z packet stays for the other trap");
});

test("a trap added while the guest runs interrupts it, is inserted, and the guest goes on", async () => {
  const { gdb, engine } = setup();
  gdb.script = ["wait", "wait"];
  const run = engine.run();
  await new Promise((r) => setImmediate(r));
  await engine.watch(DATA, () => undefined, { length: 8 });
  await new Promise((r) => setImmediate(r));
  engine.stop();
  await run;
  assert.deepEqual(gdb.log, ["c", "^C", "rec+2,ffffffff82000000", "Z2,ffffffff82000000,8", "c", "^C"]);
});

test("close removes every trap, then lets the guest run, then says goodbye to the watchdog", async () => {
  const { gdb, engine } = setup();
  await engine.breakpoint("f_nop", () => undefined);
  await engine.watch(DATA, () => undefined, { kind: "access", length: 2 });
  gdb.log.length = 0;
  gdb.script = ["wait"];
  const run = engine.run();
  await new Promise((r) => setImmediate(r));
  await engine.close();
  await run;
  assert.deepEqual(gdb.log, [
    "c",
    "^C",
    "z0,ffffffff81000000,1",
    "rec-0,ffffffff81000000",
    "z4,ffffffff82000000,2",
    "rec-4,ffffffff82000000",
    "resume",
    "bye",
  ]);
  await engine.close(); // idempotent
  await assert.rejects(
    engine.watch(DATA, () => undefined),
    { code: "E_ENGINE_CLOSED" },
  );
});

test("a failed removal keeps the watchdog armed (no goodbye) and is reported", async () => {
  const { gdb, engine } = setup();
  await engine.watch(DATA, () => undefined);
  gdb.removeBreakpoint = async () => {
    throw new VmsightError("E_GDB_CLOSED", "gdbstub connection closed");
  };
  await assert.rejects(engine.close(), { code: "E_GDB_CLOSED" });
  assert.ok(!gdb.log.includes("bye"));
  assert.ok(!gdb.log.includes("resume"));
});

test("a handler's exception ends run() and close() still cleans up", async () => {
  const { gdb, engine } = setup();
  await engine.watch(DATA, () => {
    throw new Error("handler bug");
  });
  gdb.script = [stop({ watch: { kind: "watch", address: DATA } })];
  await assert.rejects(engine.run(), /handler bug/);
  await engine.close();
  assert.deepEqual(gdb.log.slice(-4), ["z2,ffffffff82000000,8", "rec-2,ffffffff82000000", "resume", "bye"]);
});
