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

/**
 * QEMU's gdbstub takes one client, and while it is connected only gdb may run the guest (a QMP
 * `cont` leaves it deaf). The CLI's way fits: attach, work, close (which restores the run
 * state), one call at a time; a trace holds the gdbstub for its whole life, so other calls
 * that need it are refused meanwhile. The library shares one connection through the trap core.
 */
class TargetVm implements ServedVm {
  private queue: Promise<unknown> = Promise.resolve();
  private tracing = 0;
  constructor(private readonly qmp: string) {}

  private with<T>(fn: (t: Target) => Promise<T>): Promise<T> {
    if (this.tracing > 0) {
      return Promise.reject(
        new VmsightError("E_BUSY", "a trace holds this guest's gdbstub", {
          hint: "this server runs no other guest call during a trace: unsubscribe first",
        }),
      );
    }
    const run = this.queue.then(async () => {
      const t = await Target.attach(this.qmp);
      try {
        return await fn(t);
      } finally {
        await t.close();
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  private rows<R>(f: (k: KernelInfo) => R): Promise<Row[]> {
    return this.with(async (t) => plain(f(await openKernel(t))) as unknown as Row[]);
  }

  kernel(): Promise<Row> {
    return this.with(async (t) => plain(kernelReport(await openKernel(t))) as unknown as Row);
  }
  ps(): Promise<Row[]> {
    return this.rows(psRows);
  }
  threads(): Promise<Row[]> {
    return this.rows(threadRows);
  }
  pstree(): Promise<Row[]> {
    return this.rows(pstreeLines);
  }
  lsmod(): Promise<Row[]> {
    return this.rows(lsmodRows);
  }
  maps(pid: number): Promise<Row[]> {
    return this.rows((k) => mapsRows(k, pid));
  }
  pids(): Promise<Row[]> {
    return this.rows(pidViewRows);
  }
  read(addr: string, length: number, space?: AddressSpace): Promise<Uint8Array> {
    return this.with((t) =>
      readGuest(t, { space: space?.kind ?? "virt", addr: BigInt(addr), length, ...spaceOf(space) }),
    );
  }
  async write(): Promise<void> {
    throw new VmsightError("E_REFUSED", "memory.write is not served until the library backs vmsight serve");
  }
  translate(vaddr: string, space?: AddressSpace): Promise<Row> {
    return this.with(
      async (t) => plain(await translateAddress(t, BigInt(vaddr), spaceOf(space))) as unknown as Row,
    );
  }
  async regs(cpu = 0): Promise<Record<string, string>> {
    const rows = await this.with((t) => registerRows(t, cpu));
    return Object.fromEntries(rows.map((r) => [r.name, `0x${r.value.toString(16)}`]));
  }
  async setRegs(): Promise<void> {
    throw new VmsightError(
      "E_REFUSED",
      "vcpu.set_registers is not served until the library backs vmsight serve",
    );
  }
  // pause/resume choose the run state, so closing the Target keeps it.
  pause(): Promise<void> {
    return this.with((t) => t.pause());
  }
  resume(): Promise<void> {
    return this.with((t) => t.resume());
  }
  status(): Promise<Row> {
    return this.with(async (t) => plain(await statusReport(t)) as unknown as Row);
  }
  kill(pid: number, signal: string): Promise<Row> {
    return this.with(
      async (t) =>
        plain(await killProcess(t, { pid, signal: parseSignal(signal), method: "send" })) as unknown as Row,
    );
  }
  events(req: EventRequest): AsyncIterable<EventRecord> {
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
    const traces = kinds.length > 0;
    if (traces && this.tracing > 0) {
      throw new VmsightError("E_BUSY", "this server runs one trace per guest at a time", {
        hint: "unsubscribe the other trace first",
      });
    }
    if (traces) this.tracing++;
    // QEMU's QMP socket takes one client too: QMP run-state events come only alongside a
    // trace (which holds both); alone, vm.state has only the registry's APPEARED/VANISHED.
    const opened = traces ? this.queue.then(() => Target.attach(this.qmp)) : Promise.resolve(undefined);
    this.queue = opened.catch(() => {});
    const release = () => {
      if (traces) this.tracing--;
    };
    return { [Symbol.asyncIterator]: () => traceIterator(opened, req, release) };
  }
  async close(): Promise<void> {
    await this.queue;
  }
}

const STATE_EVENTS = new Set(["STOP", "RESUME", "SHUTDOWN", "RESET", "GUEST_PANICKED"]);

/**
 * runTrace's callback (and QMP's run-state events, for "state") turned into an iterator;
 * return() aborts the trace, which removes its traps.
 */
function traceIterator(
  opened: Promise<Target | undefined>,
  req: EventRequest,
  release: () => void,
): AsyncIterator<EventRecord> {
  const kinds = req.types.filter((k) => k !== "state");
  const abort = new AbortController();
  const queue: EventRecord[] = [];
  let wake: (() => void) | undefined;
  let ended: unknown = null;
  const push = (r: EventRecord) => {
    if (queue.length < 10_000) queue.push(r);
    wake?.();
  };
  let unlisten = () => {};
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
  const run = async (t: Target | undefined) => {
    if (!t) {
      await new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve()));
      return;
    }
    if (req.types.includes("state")) {
      unlisten = t.qmp.onEvent((e) => {
        if (STATE_EVENTS.has(e.event))
          push({ type: "state", event: e.event, ...(e.data ? { data: plain(e.data) } : {}) });
      });
    }
    try {
      if (trace) await runTrace(t, trace, (e) => push(plain(eventRecord(e)) as EventRecord));
      else await new Promise<void>((resolve) => abort.signal.addEventListener("abort", () => resolve()));
    } finally {
      unlisten();
      await t.close();
    }
  };
  const done = opened
    .then(run)
    .finally(release)
    .then(
      () => {
        ended = true;
      },
      (e) => {
        ended = e ?? new Error("trace failed");
      },
    );
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
      abort.abort();
      wake?.();
      await done;
      return { value: undefined, done: true };
    },
  };
}

/** Checks the socket answers QMP once, then serves through fresh attachments. */
export async function openTargetVm(qmpSocket: string): Promise<ServedVm> {
  await (await Target.attach(qmpSocket)).close();
  return new TargetVm(qmpSocket);
}
