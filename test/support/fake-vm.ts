/**
 * A ServedVm with no QEMU behind it, for the server's unit tests and bench: memory is a buffer,
 * listings are fixed rows, and events are whatever the test emits. It counts its live event
 * iterators so tests can see that a departed client's traps are gone.
 */
import type { BreakAction, EventRecord, EventRequest, Row, ServedVm } from "../../src/server/backend.js";
import { VmsightError } from "../../src/util/errors.js";

class Stream implements AsyncIterator<EventRecord> {
  private readonly queue: EventRecord[] = [];
  private waiting: ((r: IteratorResult<EventRecord>) => void) | undefined;
  done = false;
  constructor(
    readonly req: EventRequest,
    private readonly onEnd: (s: Stream) => void,
  ) {}
  push(r: EventRecord): void {
    if (this.done) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: r, done: false });
    } else this.queue.push(r);
  }
  next(): Promise<IteratorResult<EventRecord>> {
    const r = this.queue.shift();
    if (r) return Promise.resolve({ value: r, done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiting = resolve;
    });
  }
  return(): Promise<IteratorResult<EventRecord>> {
    if (!this.done) {
      this.done = true;
      this.onEnd(this);
      this.waiting?.({ value: undefined, done: true });
      this.waiting = undefined;
    }
    return Promise.resolve({ value: undefined, done: true });
  }
}

const KIND_OF_RECORD: Record<string, string> = {
  create: "proc",
  exec: "proc",
  exit: "proc",
  load: "modules",
  unload: "modules",
  syscall: "syscalls",
  switch: "switch",
  break: "break",
  watch: "watch",
  state: "state",
};

export class FakeVm implements ServedVm {
  readonly ram = Buffer.alloc(1 << 20);
  readonly streams = new Set<Stream>();
  readonly actions: BreakAction[] = [];
  readonly registers: Record<string, string> = { rip: "0xffffffff81000000", rsp: "0xffffc90000003f00" };
  running = true;
  closed = false;
  readonly processes: Row[];

  constructor(processes = 40) {
    this.processes = Array.from({ length: processes }, (_, i) => ({
      pid: i + 1,
      ppid: i === 0 ? 0 : 1,
      comm: `task${i + 1}`,
      state: "S",
      task: `0xffff8880${(0x1000 * i).toString(16).padStart(8, "0")}`,
    }));
  }

  /** Sends `record` to every live iterator whose request arms its kind. */
  emit(record: EventRecord, hold = false): void {
    for (const s of this.streams) {
      if (!s.req.types.includes(KIND_OF_RECORD[record.type] as never)) continue;
      const respond = hold
        ? async (a: BreakAction) => {
            this.actions.push(a);
          }
        : undefined;
      s.push(respond ? { ...record, respond } : record);
    }
  }

  private phys(addr: string, length: number): number {
    const a = Number(BigInt(addr) & 0xfffffn);
    if (a + length > this.ram.length) throw new VmsightError("E_FAULT", `physical: no RAM at ${addr}`);
    return a;
  }

  async kernel(): Promise<Row> {
    return { release: "6.1.0-fake", slide: "0x1000000" };
  }
  async ps(): Promise<Row[]> {
    return this.processes;
  }
  async threads(): Promise<Row[]> {
    return this.processes;
  }
  async pstree(): Promise<Row[]> {
    return this.processes.map((p) => ({ depth: p.pid === 1 ? 0 : 1, pid: p.pid, comm: p.comm }));
  }
  async lsmod(): Promise<Row[]> {
    return [{ name: "fake", base: "0xffffffffc0000000", size: 4096 }];
  }
  async maps(pid: number): Promise<Row[]> {
    if (!this.processes.some((p) => p.pid === pid))
      throw new VmsightError("E_NO_PROCESS", `no process ${pid}`);
    return [{ start: "0x400000", end: "0x401000", perms: "r-xp", path: "/bin/fake" }];
  }
  async pids(): Promise<Row[]> {
    return this.processes;
  }
  private process(pid: number): void {
    if (!this.processes.some((p) => p.pid === pid))
      throw new VmsightError("E_NO_PROCESS", `no process ${pid}`);
  }
  async lsof(pid?: number): Promise<Row[]> {
    if (pid !== undefined) this.process(pid);
    return [{ pid: pid ?? 1, fd: 0, type: "char", path: "/dev/console" }];
  }
  async sockets(): Promise<Row[]> {
    return [{ proto: "tcp", local: "127.0.0.1:22", remote: "0.0.0.0:0", state: "LISTEN", pids: [1] }];
  }
  async env(pid: number): Promise<Row[]> {
    this.process(pid);
    return [{ pid, name: "HOME", value: "/" }];
  }
  async mounts(pid?: number): Promise<Row[]> {
    if (pid !== undefined) this.process(pid);
    return [{ mountId: 1, parentId: 1, mountPoint: "/", fsType: "rootfs" }];
  }
  async ns(): Promise<Row[]> {
    return this.processes.map((p) => ({ pid: p.pid, mnt: 4026531841 }));
  }
  async containers(): Promise<Row[]> {
    return [{ cgroupPath: "/", pids: this.processes.map((p) => p.pid) }];
  }
  async dmesg(): Promise<Row[]> {
    return [{ seq: 0, time: "0.000000", level: 5, text: "Linux version 6.1.0-fake" }];
  }
  async check(): Promise<Row[]> {
    return [];
  }
  async read(addr: string, length: number): Promise<Uint8Array> {
    const a = this.phys(addr, length);
    return this.ram.subarray(a, a + length);
  }
  async write(addr: string, bytes: Uint8Array): Promise<void> {
    this.ram.set(bytes, this.phys(addr, bytes.length));
  }
  async translate(vaddr: string): Promise<Row> {
    return { virtual: vaddr, physical: `0x${(BigInt(vaddr) & 0xfffffn).toString(16)}`, pageSize: 4096 };
  }
  async regs(): Promise<Record<string, string>> {
    return { ...this.registers };
  }
  async setRegs(_cpu: number, regs: Readonly<Record<string, string>>): Promise<void> {
    Object.assign(this.registers, regs);
  }
  async pause(): Promise<void> {
    this.running = false;
  }
  async resume(): Promise<void> {
    this.running = true;
  }
  async status(): Promise<Row> {
    return { status: this.running ? "running" : "paused", running: this.running, vcpus: 1 };
  }
  async kill(pid: number, signal: string): Promise<Row> {
    return { pid, signal, outcome: "gone" };
  }
  events(req: EventRequest): AsyncIterable<EventRecord> {
    return {
      [Symbol.asyncIterator]: () => {
        const s = new Stream(req, (x) => this.streams.delete(x));
        this.streams.add(s);
        return s;
      },
    };
  }
  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.streams) await s.return();
  }
}

/** A directory of fakes by name, for ProtocolCore. */
export function fakeDirectory(vms: Record<string, ServedVm>) {
  const listeners = new Set<(name: string, present: boolean) => void>();
  const present = new Set(Object.keys(vms));
  return {
    list: () =>
      Object.keys(vms).map((name) => ({ name, qmp: `/fake/${name}.sock`, present: present.has(name) })),
    async get(name: string) {
      const vm = vms[name];
      if (!vm || !present.has(name)) {
        const { RpcError } = await import("../../src/server/core.js");
        throw new RpcError(-32001, `no VM "${name}"`);
      }
      return vm;
    },
    onChange(l: (name: string, present: boolean) => void) {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    set(name: string, on: boolean) {
      if (on) present.add(name);
      else present.delete(name);
      for (const l of listeners) l(name, on);
    },
  };
}
