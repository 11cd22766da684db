/**
 * An interim ServedVm over src/commands and the qemu Target, so `vmsight serve` works before
 * the library (src/lib) is wired in its place. Its limits, which the library lifts: one trace
 * kind per event iterator, breakpoints are never held (no `respond`), memory.write and
 * vcpu.set_registers are refused, and the kernel is discovered once per VM and kept.
 */
import { killProcess } from "../commands/control.js";
import { kernelReport, openKernel } from "../commands/linux.js";
import { readGuest, registerRows, statusReport, translateAddress } from "../commands/machine.js";
import { lsmodRows, mapsRows, pidViewRows, psRows, pstreeLines, threadRows } from "../commands/processes.js";
import { type TraceKind, type TraceRequest, eventRecord, runTrace } from "../commands/trace.js";
import { parseSignal } from "../events/kill-signals.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { Target } from "../qemu/session.js";
import { VmsightError } from "../util/errors.js";
import type { AddressSpace, EventRecord, EventRequest, Row, ServedVm } from "./backend.js";

/** JSON-ready, as the CLI's --json: bigints become "0x…" strings. */
export function plain<T>(value: T): T {
  return JSON.parse(JSON.stringify(value, (_k, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)));
}

const spaceOf = (s?: AddressSpace) => ({
  cpu: s?.cpu ?? 0,
  ...(s?.cr3 === undefined ? {} : { cr3: BigInt(s.cr3) }),
});

class TargetVm implements ServedVm {
  private kernelInfo: Promise<KernelInfo> | undefined;
  constructor(private readonly t: Target) {}

  private k(): Promise<KernelInfo> {
    this.kernelInfo ??= openKernel(this.t);
    this.kernelInfo.catch(() => {
      this.kernelInfo = undefined;
    });
    return this.kernelInfo;
  }

  async kernel(): Promise<Row> {
    return plain(kernelReport(await this.k())) as unknown as Row;
  }
  async ps(): Promise<Row[]> {
    return plain(psRows(await this.k())) as unknown as Row[];
  }
  async threads(): Promise<Row[]> {
    return plain(threadRows(await this.k())) as unknown as Row[];
  }
  async pstree(): Promise<Row[]> {
    return plain(pstreeLines(await this.k())) as unknown as Row[];
  }
  async lsmod(): Promise<Row[]> {
    return plain(lsmodRows(await this.k())) as unknown as Row[];
  }
  async maps(pid: number): Promise<Row[]> {
    return plain(mapsRows(await this.k(), pid)) as unknown as Row[];
  }
  async pids(): Promise<Row[]> {
    return plain(pidViewRows(await this.k())) as unknown as Row[];
  }
  async read(addr: string, length: number, space?: AddressSpace): Promise<Uint8Array> {
    return readGuest(this.t, { space: space?.kind ?? "virt", addr: BigInt(addr), length, ...spaceOf(space) });
  }
  async write(): Promise<void> {
    throw new VmsightError("E_REFUSED", "memory.write is not served until the library backs vmsight serve");
  }
  async translate(vaddr: string, space?: AddressSpace): Promise<Row> {
    return plain(await translateAddress(this.t, BigInt(vaddr), spaceOf(space))) as unknown as Row;
  }
  async regs(cpu = 0): Promise<Record<string, string>> {
    const rows = await registerRows(this.t, cpu);
    return Object.fromEntries(rows.map((r) => [r.name, `0x${r.value.toString(16)}`]));
  }
  async setRegs(): Promise<void> {
    throw new VmsightError(
      "E_REFUSED",
      "vcpu.set_registers is not served until the library backs vmsight serve",
    );
  }
  async pause(): Promise<void> {
    await this.t.pause();
  }
  async resume(): Promise<void> {
    await this.t.resume();
  }
  async status(): Promise<Row> {
    return plain(await statusReport(this.t)) as unknown as Row;
  }
  async kill(pid: number, signal: string): Promise<Row> {
    return plain(
      await killProcess(this.t, { pid, signal: parseSignal(signal), method: "send" }),
    ) as unknown as Row;
  }
  events(req: EventRequest): AsyncIterable<EventRecord> {
    return { [Symbol.asyncIterator]: () => traceIterator(this.t, req) };
  }
  async close(): Promise<void> {
    await this.t.close();
  }
}

const STATE_EVENTS = new Set(["STOP", "RESUME", "SHUTDOWN", "RESET", "GUEST_PANICKED"]);

/**
 * runTrace's callback (and QMP's run-state events, for "state") turned into an iterator;
 * return() aborts the trace, which removes its traps.
 */
function traceIterator(t: Target, req: EventRequest): AsyncIterator<EventRecord> {
  const kinds = req.types.filter((k) => k !== "state");
  if (kinds.length > 1) {
    throw new VmsightError(
      "E_REFUSED",
      `this server traces one kind per subscription, not ${kinds.join("+")}`,
      {
        hint: "subscribe once per kind (process.*, module.*, syscall, switch)",
      },
    );
  }
  const abort = new AbortController();
  const queue: EventRecord[] = [];
  let wake: (() => void) | undefined;
  let ended: unknown = null;
  const push = (r: EventRecord) => {
    if (queue.length < 10_000) queue.push(r);
    wake?.();
  };
  const unlisten = req.types.includes("state")
    ? t.qmp.onEvent((e) => {
        if (STATE_EVENTS.has(e.event))
          push({ type: "state", event: e.event, ...(e.data ? { data: plain(e.data) } : {}) });
      })
    : () => {};
  const kind = kinds[0] as TraceKind | undefined;
  const trace: TraceRequest | undefined = kind && {
    kind,
    signal: abort.signal,
    ...(req.pid === undefined ? {} : { pid: req.pid }),
    ...(req.comm === undefined ? {} : { comm: req.comm }),
    ...(req.at === undefined ? {} : { at: req.at }),
    ...(req.address === undefined
      ? {}
      : { address: BigInt(req.address), length: req.length ?? 8, access: req.access ?? "write" }),
  };
  const done = trace
    ? runTrace(t, trace, (e) => push(plain(eventRecord(e)) as EventRecord)).then(
        () => {
          ended = true;
        },
        (e) => {
          ended = e ?? new Error("trace failed");
        },
      )
    : new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve()));
  void done.then(() => wake?.());
  return {
    async next() {
      for (;;) {
        const r = queue.shift();
        if (r) return { value: r, done: false };
        if (ended === true || abort.signal.aborted) return { value: undefined, done: true };
        if (ended) throw ended;
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    },
    async return() {
      unlisten();
      abort.abort();
      wake?.();
      await done;
      return { value: undefined, done: true };
    },
  };
}

export async function openTargetVm(qmpSocket: string): Promise<ServedVm> {
  return new TargetVm(await Target.attach(qmpSocket));
}
