/**
 * The injected call against a fake vCPU that follows the x86-64 calling convention on its own:
 * a called function reads its arguments from rdi/rsi/…, clobbers the caller-saved registers,
 * pops its return address and jumps there; a breakpoint stops the CPU when it reaches one.
 * The test checks the machine afterwards (registers, stack, breakpoints), not the plan.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { X86_64_4LEVEL, X86_64_5LEVEL } from "../../src/arch/x86/formats.js";
import {
  type KernelCall,
  SAVED_REGISTERS,
  injectCalls,
  planCall,
  planRestore,
} from "../../src/events/inject.js";
import { addressBounds } from "../../src/os/linux/walk.js";
import { TrapCore, type TrapGdb } from "../../src/qemu/traps.js";
import type { StopReply } from "../../src/transport/gdb/stop-reply.js";
import { VmsightError } from "../../src/util/errors.js";

const HOOK = 0xffffffff81a0c0d0n;
const BOUNDS = addressBounds(X86_64_4LEVEL);
const FN = 0xffffffff81b00000n;
const ELSEWHERE = 0xffffffff81234567n;
/** Where another client of the trap core (an event stream) has a breakpoint. */
const OTHER = 0xffffffff81345670n;
const RSP = 0xffffc90000403f48n;

function hookRegisters(): Map<string, bigint> {
  const m = new Map<string, bigint>();
  SAVED_REGISTERS.forEach((n, i) => m.set(n, 0x1111n * BigInt(i + 1)));
  m.set("rip", HOOK);
  m.set("rsp", RSP);
  m.set("eflags", 0x46n);
  m.set("cr3", 0x1234000n);
  return m;
}

function stopAt(thread: string, signal = 5): StopReply {
  return {
    type: "signal",
    signal,
    thread,
    swbreak: false,
    hwbreak: false,
    registers: new Map(),
    fields: new Map(),
  };
}

interface Script {
  /** What the guest does on each continue() (true: reaches the hook; "other": OTHER; false: runs on). */
  arrivals: (boolean | "other")[];
  /** The called function: returns rax, or "hang" to never come back. */
  fn?: (args: bigint[]) => bigint | "hang";
}

class FakeCpu implements TrapGdb {
  regs = new Map<string, bigint>([
    ["rip", ELSEWHERE],
    ["rsp", RSP + 0x100n],
  ]);
  readonly mem = new Map<bigint, bigint>();
  readonly breakpoints = new Set<bigint>();
  readonly events: string[] = [];
  readonly calls: bigint[][] = [];
  /** Registers the guest had at each arrival at the hook. */
  readonly arrivalRegs: Map<string, bigint>[] = [];
  private pending: ((s: StopReply) => void) | undefined;
  private arrival = 0;

  constructor(private readonly script: Script) {}

  async selectThread(_op: "g" | "c", id: string) {
    this.events.push(`H${id}`);
  }
  async readRegisters() {
    return new Map(this.regs);
  }
  async readRegister(name: string) {
    const v = this.regs.get(name);
    if (v === undefined) throw new Error(`no ${name}`);
    return v;
  }
  async writeRegister(name: string, value: bigint) {
    this.regs.set(name, value);
  }
  async writeMemory(addr: bigint, data: Uint8Array) {
    assert.equal(data.length, 8);
    this.mem.set(addr, Buffer.from(data).readBigUInt64LE(0));
  }
  async insertBreakpoint(_t: number, addr: bigint) {
    this.breakpoints.add(addr);
    this.events.push("Z0");
  }
  async removeBreakpoint(_t: number, addr: bigint) {
    this.breakpoints.delete(addr);
    this.events.push("z0");
  }
  async step(thread?: string) {
    this.events.push(`step ${thread}`);
    this.regs.set("rip", ELSEWHERE);
    return stopAt(thread ?? "p1.1");
  }
  async interrupt() {
    this.events.push("interrupt");
    const p = this.pending;
    this.pending = undefined;
    p?.(stopAt("p1.1", 2));
  }
  continue(): Promise<StopReply> {
    this.events.push("c");
    if (this.regs.get("rip") === FN) {
      const r = this.runFunction();
      if (r) return Promise.resolve(r);
    } else if (this.script.arrivals[this.arrival] === "other") {
      this.arrival++;
      this.regs.set("rip", OTHER);
      if (this.breakpoints.has(OTHER)) return Promise.resolve(stopAt("p1.1"));
    } else if (this.script.arrivals[this.arrival++]) {
      const regs = hookRegisters();
      regs.set("rax", 0x5000n + BigInt(this.arrival)); // each arrival looks different
      this.regs = regs;
      this.arrivalRegs.push(new Map(regs));
      if (this.breakpoints.has(HOOK)) return Promise.resolve(stopAt("p1.1"));
    }
    return new Promise((resolve) => {
      this.pending = resolve;
    });
  }

  /** The callee: arguments from registers, caller-saved clobbered, `ret` to the pushed address. */
  private runFunction(): StopReply | undefined {
    const args = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"].map((n) => this.regs.get(n)!);
    this.calls.push(args);
    const rax = this.script.fn?.(args) ?? 0n;
    if (rax === "hang") return undefined;
    for (const n of ["rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"]) this.regs.set(n, 0xdeadn);
    this.regs.set("rax", rax);
    this.regs.set("eflags", 0x2n);
    const rsp = this.regs.get("rsp")!;
    const ret = this.mem.get(rsp);
    if (ret === undefined) throw new Error("ret with nothing pushed");
    this.regs.set("rip", ret);
    this.regs.set("rsp", rsp + 8n);
    return this.breakpoints.has(ret) ? stopAt("p1.1") : undefined;
  }
}

const CALL: KernelCall = { name: "group_send_sig_info", fn: FN, args: [9n, 1n, 0xffff888004c8a000n, 1n] };

function assertRegistersEqual(actual: Map<string, bigint>, expected: Map<string, bigint>) {
  for (const n of SAVED_REGISTERS) assert.equal(actual.get(n), expected.get(n), n);
}

describe("injected kernel calls", () => {
  test("calls with the arguments in rdi, rsi, rdx, rcx and comes back with every register restored", async () => {
    const cpu = new FakeCpu({ arrivals: [true], fn: () => 0xfffffffdn });
    const r = await injectCalls(new TrapCore(cpu), {
      hook: HOOK,
      bounds: BOUNDS,
      onTrap: () => ({ calls: [CALL] }),
    });
    assert.equal(cpu.calls.length, 1);
    assert.deepEqual(cpu.calls[0]!.slice(0, 4), [9n, 1n, 0xffff888004c8a000n, 1n]);
    assert.equal(cpu.mem.get(RSP - 8n), HOOK, "return address pushed just below the hook's rsp");
    assert.equal(r.calls[0]!.rax, 0xfffffffdn);
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[0]!);
    assert.equal(cpu.regs.get("cr3"), 0x1234000n);
    assert.equal(cpu.breakpoints.size, 0, "no breakpoint left behind");
  });

  test("chained calls reuse the same stop; each returns into the hook", async () => {
    const seen: bigint[] = [];
    const cpu = new FakeCpu({
      arrivals: [true],
      fn: (a) => {
        seen.push(a[0]!);
        return a[0]! + 1n;
      },
    });
    const r = await injectCalls(new TrapCore(cpu), {
      hook: HOOK,
      bounds: BOUNDS,
      onTrap: () => ({ calls: [CALL, { ...CALL, name: "second", args: [42n] }] }),
    });
    assert.deepEqual(seen, [9n, 42n]);
    assert.deepEqual(
      r.calls.map((c) => c.rax),
      [10n, 43n],
    );
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[0]!);
    assert.equal(cpu.breakpoints.size, 0);
  });

  test("a skipped trap is stepped over and the next one is used, with its own registers", async () => {
    const cpu = new FakeCpu({ arrivals: [true, true] });
    let traps = 0;
    await injectCalls(new TrapCore(cpu), {
      hook: HOOK,
      bounds: BOUNDS,
      onTrap: () => (++traps === 1 ? "skip" : { calls: [CALL] }),
    });
    assert.equal(traps, 2);
    assert.ok(cpu.events.includes("step p1.1"));
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[1]!);
    assert.equal(cpu.breakpoints.size, 0);
  });

  test("no calls: nothing changes but the breakpoint comes out", async () => {
    const cpu = new FakeCpu({ arrivals: [true] });
    const r = await injectCalls(new TrapCore(cpu), {
      hook: HOOK,
      bounds: BOUNDS,
      onTrap: () => ({ calls: [] }),
    });
    assert.deepEqual(r.calls, []);
    assert.deepEqual(cpu.calls, []);
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[0]!);
    assert.equal(cpu.breakpoints.size, 0);
  });

  test("the hook never runs: timeout, breakpoint removed, registers untouched", async () => {
    const cpu = new FakeCpu({ arrivals: [false] });
    const before = new Map(cpu.regs);
    await assert.rejects(
      injectCalls(new TrapCore(cpu), {
        hook: HOOK,
        bounds: BOUNDS,
        trapTimeoutMs: 30,
        onTrap: () => ({ calls: [CALL] }),
      }),
      (e: unknown) => e instanceof VmsightError && e.code === "E_INJECT_TIMEOUT",
    );
    assert.ok(cpu.events.includes("interrupt"));
    assert.deepEqual(cpu.regs, before);
    assert.equal(cpu.breakpoints.size, 0);
  });

  test("an abort (Ctrl-C) while waiting for the hook: interrupted, clean", async () => {
    const cpu = new FakeCpu({ arrivals: [false] });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(
      injectCalls(new TrapCore(cpu), {
        hook: HOOK,
        bounds: BOUNDS,
        signal: ac.signal,
        onTrap: () => ({ calls: [CALL] }),
      }),
      (e: unknown) => e instanceof VmsightError && e.code === "E_INTERRUPTED",
    );
    assert.equal(cpu.breakpoints.size, 0);
    assert.deepEqual(cpu.calls, []);
  });

  test("a call that does not come back is left to return by itself: registers not overwritten", async () => {
    const cpu = new FakeCpu({ arrivals: [true], fn: () => "hang" });
    await assert.rejects(
      injectCalls(new TrapCore(cpu), {
        hook: HOOK,
        bounds: BOUNDS,
        callTimeoutMs: 30,
        onTrap: () => ({ calls: [CALL] }),
      }),
      (e: unknown) => e instanceof VmsightError && e.code === "E_INJECT_TIMEOUT",
    );
    assert.equal(cpu.regs.get("rip"), FN, "still inside the function, as the guest would be");
    assert.equal(cpu.mem.get(RSP - 8n), HOOK, "…and it will return into the hook");
    assert.equal(cpu.breakpoints.size, 0);
  });

  test("meanwhile, stops at another client's traps go to it and its reads do not end the wait", async () => {
    const cpu = new FakeCpu({ arrivals: [false, "other", true] });
    const core = new TrapCore(cpu);
    const stream = core.client("events");
    const hits: (bigint | undefined)[] = [];
    stream.onStop((stop) => {
      hits.push(stop.rip);
    });
    await stream.insert({ type: 0, addr: OTHER, kind: 1 });
    let reads = 0;
    // A read while the guest runs towards the hook: the core interrupts it for the read.
    setTimeout(() => void core.whenStopped(async () => void reads++), 5);
    const r = await injectCalls(core, { hook: HOOK, bounds: BOUNDS, onTrap: () => ({ calls: [CALL] }) });
    assert.equal(reads, 1);
    assert.deepEqual(hits, [OTHER], "the stream saw its breakpoint hit");
    assert.equal(r.calls.length, 1);
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[0]!);
    assert.deepEqual([...cpu.breakpoints], [OTHER], "the stream's breakpoint stays, the hook's is gone");
  });

  test("an error in onTrap still removes the breakpoint and restores registers", async () => {
    const cpu = new FakeCpu({ arrivals: [true] });
    await assert.rejects(
      injectCalls(new TrapCore(cpu), {
        hook: HOOK,
        bounds: BOUNDS,
        onTrap: () => {
          throw new VmsightError("E_GUEST_DATA", "boom");
        },
      }),
      /boom/,
    );
    assert.equal(cpu.breakpoints.size, 0);
    assertRegistersEqual(cpu.regs, cpu.arrivalRegs[0]!);
  });
});

describe("call and restore plans", () => {
  test("call frame: arguments, rsp one slot lower, rip last", () => {
    const f = planCall(hookRegisters(), CALL, HOOK, BOUNDS);
    assert.deepEqual(f.registers, [
      ["rdi", 9n],
      ["rsi", 1n],
      ["rdx", 0xffff888004c8a000n],
      ["rcx", 1n],
      ["rsp", RSP - 8n],
      ["rip", FN],
    ]);
    assert.equal(f.returnSlot, RSP - 8n);
    assert.equal(f.rspAfterReturn, RSP);
  });
  test("the kernel half follows the paging mode: a 5-level stack is refused under 4-level bounds", () => {
    const la57 = hookRegisters();
    la57.set("rsp", 0xff2ffac281214ab0n);
    assert.equal(planCall(la57, CALL, HOOK, addressBounds(X86_64_5LEVEL)).returnSlot, 0xff2ffac281214aa8n);
    assert.throws(() => planCall(la57, CALL, HOOK, BOUNDS), /kernel stack/);
  });
  test("refuses a stop elsewhere than the hook entry, a user or misaligned stack, too many arguments", () => {
    const off = hookRegisters();
    off.set("rip", HOOK + 1n);
    assert.throws(() => planCall(off, CALL, HOOK, BOUNDS), /not at the hook entry/);
    const user = hookRegisters();
    user.set("rsp", 0x7ffd12345678n);
    assert.throws(() => planCall(user, CALL, HOOK, BOUNDS), /kernel stack/);
    const odd = hookRegisters();
    odd.set("rsp", RSP + 4n);
    assert.throws(() => planCall(odd, CALL, HOOK, BOUNDS), /kernel stack/);
    assert.throws(
      () => planCall(hookRegisters(), { ...CALL, args: [1n, 2n, 3n, 4n, 5n, 6n, 7n] }, HOOK, BOUNDS),
      /at most 6/,
    );
    assert.throws(
      () => planCall(hookRegisters(), { ...CALL, fn: 0x401000n }, HOOK, BOUNDS),
      /not kernel text/,
    );
  });
  test("restore covers every general register, rip and eflags", () => {
    const r = planRestore(hookRegisters());
    assert.equal(r.length, 18);
    assert.deepEqual(new Set(r.map(([n]) => n)), new Set(SAVED_REGISTERS));
  });
});
