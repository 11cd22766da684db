/**
 * A scripted gdbstub and guest for the event engine's and trap core's unit tests: every gdbstub
 * call is logged as a packet-like string, stops come from a script, and the guest is two kernel
 * functions (one starting with a NOP, one with push %rbp) and a data word.
 */
import type { GuestOs, ProcessSpace, TaskBrief } from "../../src/events/types.js";
import type { TrapGdb } from "../../src/qemu/traps.js";
import type { BreakpointType } from "../../src/transport/gdb/client.js";
import type { SignalStop, StopReply } from "../../src/transport/gdb/stop-reply.js";
import { VmsightError } from "../../src/util/errors.js";

export const NOP5 = [0x0f, 0x1f, 0x44, 0x00, 0x00];
export const PUSH_RBP = [0x55, 0x48, 0x89, 0xe5];
export const F_NOP = 0xffffffff81000000n; // starts with a 5-byte NOP
export const F_PUSH = 0xffffffff81001000n; // starts with push %rbp
export const DATA = 0xffffffff82000000n;

export function stop(fields: Partial<SignalStop> = {}): SignalStop {
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
export class FakeGdb implements TrapGdb {
  readonly log: string[] = [];
  /** Z/z packets (as logged) the stub answers with an error. */
  readonly refuse = new Set<string>();
  /** What step() reports instead of a plain stop. */
  stepStop: StopReply | undefined;
  regs = new Map<string, bigint>([
    ["rip", 0n],
    ["rsp", 0xffffc90000001000n],
    ["rax", 0n],
  ]);
  /** Each continue() takes the next entry: a stop, or "wait" (block until interrupt()). */
  script: (StopReply | "wait" | (() => StopReply))[] = [];
  private waiting: ((s: StopReply) => void) | undefined;

  /** Stops name this thread (the vCPU the guest stops on). */
  constructor(readonly thread = "p01.01") {}

  get rip(): bigint {
    return this.regs.get("rip") ?? 0n;
  }
  set rip(v: bigint) {
    this.regs.set("rip", v);
  }

  /** A stop on this stub's thread. */
  stop(fields: Partial<SignalStop> = {}): SignalStop {
    return stop({ thread: this.thread, ...fields });
  }

  private packet(p: string): void {
    if (this.refuse.has(p)) throw new VmsightError("E_GDB_ERROR", `${p}: E22`);
    this.log.push(p);
  }
  async insertBreakpoint(type: BreakpointType, addr: bigint, kind: number) {
    this.packet(`Z${type},${addr.toString(16)},${kind}`);
  }
  async removeBreakpoint(type: BreakpointType, addr: bigint, kind: number) {
    this.packet(`z${type},${addr.toString(16)},${kind}`);
  }
  /** A stop of the guest's own (a trap) ends a "wait". */
  stopNow(s: StopReply) {
    const w = this.waiting;
    this.waiting = undefined;
    w?.(s);
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
    this.rip += 1n;
    return this.stepStop ?? this.stop();
  }
  async interrupt() {
    this.log.push("^C");
    const w = this.waiting;
    this.waiting = undefined;
    w?.(this.stop({ signal: 2 }));
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
      this.rip = addr;
      return this.stop();
    };
  }
}

export class FakeOs implements GuestOs {
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
