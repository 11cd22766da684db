/**
 * The event engine against a scripted gdbstub and guest: how it leaves breakpoints (RIP write
 * over a NOP, remove/step/re-insert otherwise), conditions, shared Z packets, traps added while
 * the guest runs, and the order of cleanup. The expected packet sequences are written out by
 * hand from the GDB remote protocol and QEMU's behaviour (a `c` on a breakpoint stops at once).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { EventEngine, type TrapHit } from "../../src/events/engine.js";
import type { GuestOs, ProcessSpace, TaskBrief } from "../../src/events/types.js";
import { type RawTrap, TrapCore, type TrapGdb, type TrapRecorder } from "../../src/qemu/traps.js";
import type { BreakpointType } from "../../src/transport/gdb/client.js";
import type { SignalStop, StopReply } from "../../src/transport/gdb/stop-reply.js";
import { VmsightError } from "../../src/util/errors.js";
import { Recorder } from "../support/trap-recorder.js";

const NOP5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];
const PUSH_RBP = [0x55, 0x48, 0x89, 0xe5];
const F_NOP = 0xffffffff81000000n; // starts with a 5-byte NOP
const F_PUSH = 0xffffffff81001000n; // starts with push %rbp
const DATA = 0xffffffff82000000n;

function stop(fields: Partial<SignalStop> = {}): SignalStop {
  return {
    type: "signal",
    signal: 5,
    thread: "p01.01",
    swbreak: false,
    hwbreak: false,
    registers: new Map(),
    fields: new Map(),
    ...fields,
  };
}

/** A gdbstub whose stops come from a script; every call is logged as a packet-like string. */
class FakeGdb implements TrapGdb {
  readonly log: string[] = [];
  regs = new Map<string, bigint>([
    ["rip", 0n],
    ["rsp", 0xffffc90000001000n],
    ["rax", 0n],
  ]);
  /** Each continue() takes the next entry: a stop, or "wait" (block until interrupt()). */
  script: (StopReply | "wait" | (() => StopReply))[] = [];
  private waiting: ((s: StopReply) => void) | undefined;

  async insertBreakpoint(type: BreakpointType, addr: bigint, kind: number) {
    this.log.push(`Z${type},${addr.toString(16)},${kind}`);
  }
  async removeBreakpoint(type: BreakpointType, addr: bigint, kind: number) {
    this.log.push(`z${type},${addr.toString(16)},${kind}`);
  }
  continue(): Promise<StopReply> {
    this.log.push("c");
    const next = this.script.shift();
    if (next === undefined) throw new Error("script ran out");
    if (next === "wait") {
      return new Promise((resolve) => {
        this.waiting = resolve;
      });
    }
    const s = typeof next === "function" ? next() : next;
    return Promise.resolve(s);
  }
  async step(thread?: string): Promise<StopReply> {
    this.log.push(`s:${thread}`);
    this.regs.set("rip", (this.regs.get("rip") ?? 0n) + 1n);
    return stop();
  }
  async interrupt() {
    this.log.push("^C");
    const w = this.waiting;
    this.waiting = undefined;
    w?.(stop({ signal: 2 }));
  }
  async readRegisters() {
    this.log.push("g");
    return new Map(this.regs);
  }
  async readRegister(name: string) {
    this.log.push(`p:${name}`);
    return this.regs.get(name) ?? 0n;
  }
  async writeRegister(name: string, value: bigint) {
    this.log.push(`P:${name}=${value.toString(16)}`);
    this.regs.set(name, value);
  }
  async selectThread(op: "g" | "c", id: string) {
    this.log.push(`H${op}${id}`);
  }
  async writeMemory(addr: bigint) {
    this.log.push(`M:${addr.toString(16)}`);
  }
  /** A breakpoint stop: RIP at addr. */
  at(addr: bigint): () => StopReply {
    return () => {
      this.regs.set("rip", addr);
      return stop();
    };
  }
}

class FakeOs implements GuestOs {
  current: TaskBrief = { addr: 0xffff888000100000n, pid: 10, tgid: 10, comm: "sh", mm: 0xffff888000200000n };
  memory = new Map<bigint, number[]>([
    [F_NOP, [...NOP5, 0x55]],
    [F_PUSH, PUSH_RBP],
    [DATA, [1, 2, 3, 4, 5, 6, 7, 8]],
  ]);
  invalidations = 0;
  resolveSymbol(spec: string): bigint {
    if (spec === "f_nop") return F_NOP;
    if (spec === "f_push") return F_PUSH;
    throw new VmsightError("E_SYMBOL_UNKNOWN", `no kernel symbol named "${spec}"`);
  }
  symbolize(): string | undefined {
    return undefined;
  }
  readKernel(addr: bigint, length: number): Buffer {
    for (const [base, bytes] of this.memory) {
      if (addr >= base && addr < base + BigInt(bytes.length)) {
        const out = Buffer.alloc(length);
        Buffer.from(bytes).copy(out, 0, Number(addr - base));
        return out;
      }
    }
    throw new VmsightError("E_FAULT", `unmapped ${addr.toString(16)}`);
  }
  currentTask(): TaskBrief {
    return this.current;
  }
  processSpace(pid: number, addr: bigint): ProcessSpace {
    if (pid !== 42) throw new VmsightError("E_NO_PROCESS", `no process ${pid}`);
    if (addr !== 0x1000n) throw new VmsightError("E_WATCH_UNMAPPED", `${addr} is not mapped`);
    return { pid, mm: 0xffff888000420000n };
  }
  read(_t: TaskBrief, addr: bigint, length: number): Buffer {
    return this.readKernel(addr, length);
  }
  write(): void {}
  invalidate(): void {
    this.invalidations++;
  }
}

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
