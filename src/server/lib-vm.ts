/**
 * `vmsight serve`'s VMs through the library: one attached `Vm` per guest, held for as long as
 * the server serves it, so clients share its connections and its trap core (streams running at
 * once share traps, each removes its own). A breakpoint asked to hold (holdMs) comes with the
 * library's `respond`: the vCPU waits for the client's answer, the server's deadline, or (one
 * second after that) the library's own.
 */
import { type Space, type Vm, attach } from "../lib/index.js";
import { VmsightError } from "../util/errors.js";
import { EventQueue } from "../util/event-queue.js";
import type { AddressSpace, EventRecord, EventRequest, KillRequest, Row, ServedVm } from "./backend.js";

/** The library's Space for a protocol address space (virtual without cpu or cr3: the kernel's). */
export function spaceOf(s: AddressSpace | undefined): Space {
  if (s?.kind === "phys") return "physical";
  if (s?.pid !== undefined) return { pid: s.pid };
  if (s?.cr3 !== undefined) return { cr3: s.cr3, ...(s.cpu === undefined ? {} : { cpu: s.cpu }) };
  if (s?.cpu !== undefined) return { cpu: s.cpu };
  return "kernel";
}

/** QMP's run-state events, as vm.state records. */
const STATE_EVENTS = new Set(["STOP", "RESUME", "SHUTDOWN", "RESET", "GUEST_PANICKED"]);

/** How long past the server's reply deadline the library itself lets a held vCPU go. */
const HOLD_BACKSTOP_MS = 1000;

/** The library's event options for the traced kinds of a request (undefined: none traced). */
function traceOptions(req: EventRequest) {
  const types = req.types.filter((k) => k !== "state");
  if (types.length === 0) return undefined;
  return {
    types,
    ...(req.pid === undefined ? {} : { pid: req.pid }),
    ...(req.comm === undefined ? {} : { comm: req.comm }),
    ...(req.at === undefined ? {} : { at: req.at }),
    ...(req.address === undefined ? {} : { address: req.address }),
    ...(req.length === undefined ? {} : { length: req.length }),
    ...(req.access === undefined ? {} : { access: req.access }),
    // The server's deadline answers first; the library's is the backstop should it not.
    ...(req.holdMs === undefined ? {} : { hold: { deadlineMs: req.holdMs + HOLD_BACKSTOP_MS } }),
  };
}

/**
 * One library stream (for every traced kind of the request) and, for "state", the Vm's QMP
 * run-state events, merged into one iterator; return() ends the stream, which removes its traps.
 */
function eventIterator(vm: Vm, req: EventRequest): AsyncIterator<EventRecord> {
  const queue = new EventQueue<EventRecord>();
  const unlisten =
    req.types.includes("state") && vm.target
      ? vm.target.qmp.onEvent((e) => {
          if (STATE_EVENTS.has(e.event))
            queue.push({
              type: "state",
              event: e.event,
              ...(e.data ? { data: JSON.parse(JSON.stringify(e.data)) } : {}),
            });
        })
      : () => {};
  const opts = traceOptions(req);
  const stream = opts ? vm.events(opts) : undefined;
  // Read the stream as it comes: its events join the run-state ones in arrival order.
  const pumped = (async () => {
    if (!stream) return;
    try {
      for (;;) {
        const r = await stream.next();
        if (r.done) break;
        queue.push(r.value as EventRecord);
      }
      queue.end();
    } catch (error) {
      queue.fail(error);
    }
  })();
  const finish = async (): Promise<IteratorResult<EventRecord>> => {
    unlisten();
    queue.end();
    queue.clear();
    await stream?.return?.();
    await pumped;
    return { value: undefined, done: true };
  };
  return {
    async next() {
      const r = await queue.take().catch(async (error: unknown) => {
        await finish();
        throw error;
      });
      return r === undefined ? { value: undefined, done: true } : { value: r, done: false };
    },
    return: finish,
  };
}

class LibVm implements ServedVm {
  constructor(private readonly vm: Vm) {}

  kernel(): Promise<Row> {
    return this.vm.kernel();
  }
  ps(): Promise<Row[]> {
    return this.vm.ps();
  }
  threads(): Promise<Row[]> {
    return this.vm.threads();
  }
  pstree(): Promise<Row[]> {
    return this.vm.pstree();
  }
  lsmod(): Promise<Row[]> {
    return this.vm.lsmod();
  }
  maps(pid: number): Promise<Row[]> {
    return this.vm.maps(pid);
  }
  pids(): Promise<Row[]> {
    return this.vm.pids();
  }
  lsof(pid?: number): Promise<Row[]> {
    return this.vm.lsof(pid);
  }
  sockets(): Promise<Row[]> {
    return this.vm.sockets();
  }
  env(pid: number): Promise<Row[]> {
    return this.vm.env(pid);
  }
  mounts(pid?: number): Promise<Row[]> {
    return this.vm.mounts(pid);
  }
  ns(): Promise<Row[]> {
    return this.vm.ns();
  }
  containers(): Promise<Row[]> {
    return this.vm.containers();
  }
  dmesg(): Promise<Row[]> {
    return this.vm.dmesg();
  }
  check(): Promise<Row[]> {
    return this.vm.check();
  }
  read(addr: string, length: number, space?: AddressSpace): Promise<Uint8Array> {
    return this.vm.read(addr, length, spaceOf(space));
  }
  write(addr: string, bytes: Uint8Array, space?: AddressSpace): Promise<void> {
    return this.vm.write(addr, bytes, spaceOf(space));
  }
  async translate(vaddr: string, space?: AddressSpace): Promise<Row> {
    const s = spaceOf(space);
    if (s === "physical")
      throw new VmsightError("E_USAGE", "translate takes a virtual address", { hint: 'use space "virt"' });
    return this.vm.translate(vaddr, s);
  }
  regs(cpu = 0): Promise<Record<string, string>> {
    return this.vm.regs(cpu);
  }
  setRegs(cpu: number, regs: Readonly<Record<string, string>>): Promise<void> {
    return this.vm.setRegs(cpu, regs);
  }
  async pause(): Promise<void> {
    await this.vm.pause();
  }
  async resume(): Promise<void> {
    await this.vm.resume();
  }
  /** The library's status, and how many traps the clients' subscriptions have armed. */
  async status(): Promise<Row> {
    return { ...(await this.vm.status()), traps: this.vm.target?.armedTraps() ?? 0 };
  }
  kill(pid: number, signal: string, opts?: KillRequest): Promise<Row> {
    return this.vm.kill(pid, signal, opts);
  }
  events(req: EventRequest): AsyncIterable<EventRecord> {
    return { [Symbol.asyncIterator]: () => eventIterator(this.vm, req) };
  }
  close(): Promise<void> {
    return this.vm.close();
  }
}

/** A ServedVm over an attached library Vm. */
export function servedVm(vm: Vm): ServedVm {
  return new LibVm(vm);
}

/** Attaches to the guest once; the server holds it until the guest goes or the server stops. */
export async function openLibVm(qmpSocket: string): Promise<ServedVm> {
  return servedVm(await attach(qmpSocket));
}
