/**
 * `vmsight trace …`: semantic event streams and raw traps, as records for the CLI to print.
 * The trace ends after `durationS` seconds, `count` events, when `signal` aborts (Ctrl-C), or
 * when the guest goes away; every trap is removed and the guest left running in all cases.
 */
import type { EventEngine, TrapHit, WatchKind } from "../events/engine.js";
import { type Respond, holdAtBreakpoint } from "../events/hold.js";
import type { LinuxGuest } from "../events/linux-guest.js";
import { type ModuleEvent, traceModules } from "../events/module-stream.js";
import { type ProcEvent, traceProc } from "../events/proc-stream.js";
import { openEventSession } from "../events/session.js";
import { type SwitchEvent, traceSwitches } from "../events/switch-stream.js";
import { type SyscallEvent, traceSyscalls } from "../events/syscall-stream.js";
import type { Target } from "../qemu/session.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import { type Wire, hexText } from "./wire.js";

export const TRACE_KINDS = ["proc", "modules", "syscalls", "switch", "break", "watch"] as const;
export type TraceKind = (typeof TRACE_KINDS)[number];

export interface TraceRequest {
  readonly kind: TraceKind;
  readonly pid?: number;
  readonly comm?: string;
  readonly durationS?: number;
  readonly count?: number;
  /** proc: which of create/exec/exit. */
  readonly events?: { create: boolean; exec: boolean; exit: boolean };
  /** break: symbol or address. */
  readonly at?: string;
  /** watch: address, size and access kind. */
  readonly address?: bigint;
  readonly length?: number;
  readonly access?: WatchKind;
  /** break: hold the stopped vCPU until the event's respond() is called, or this many ms. */
  readonly hold?: { readonly deadlineMs: number };
  readonly signal?: AbortSignal;
  readonly log?: (line: string) => void;
  /** Called once every trap is armed, just before the guest runs. */
  readonly onReady?: (traps: number) => void;
}

export interface BreakEvent {
  readonly type: "break";
  readonly at: string;
  readonly cpu: number;
  readonly pid: number;
  readonly tid: number;
  readonly comm: string;
  readonly rip: bigint;
  /** rdi, rsi, rdx, rcx, r8, r9: the first six arguments at a function entry. */
  readonly args: readonly bigint[];
}

export interface WatchEvent {
  readonly type: "watch";
  readonly access: string;
  readonly address: bigint;
  readonly cpu: number;
  readonly pid: number;
  readonly tid: number;
  readonly comm: string;
  /** The instruction after the access, symbolized when in the kernel. */
  readonly rip: bigint;
  readonly where: string;
  /** The watched bytes after the access, as a little-endian number (undefined if unreadable). */
  readonly value: bigint | undefined;
}

export type EventBody = ProcEvent | ModuleEvent | SyscallEvent | SwitchEvent | BreakEvent | WatchEvent;

export type TraceEvent = EventBody & {
  /** Seconds since the trace started (host clock). */
  readonly time: number;
};

export interface TraceSummary {
  readonly events: number;
  readonly stops: number;
  readonly seconds: number;
  readonly reason: "count" | "duration" | "signal" | "stopped";
}

const CALL_ARGS = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];

export async function runTrace(
  target: Target,
  req: TraceRequest,
  emit: (e: TraceEvent) => void,
): Promise<TraceSummary> {
  const session = await openEventSession(target, req.log ? { log: req.log } : {});
  const started = performance.now();
  let events = 0;
  let reason: TraceSummary["reason"] = "stopped";
  const out = (e: EventBody) => {
    if (req.count !== undefined && events >= req.count) return;
    events++;
    emit({ ...e, time: Math.round(performance.now() - started) / 1000 } as TraceEvent);
    if (req.count !== undefined && events >= req.count) {
      reason = "count";
      session.engine.stop();
    }
  };
  let timer: NodeJS.Timeout | undefined;
  // After a reset the old kernel's traps sit at addresses that mean nothing (or something else)
  // to the kernel that boots next: stop, take them out, and say so.
  let rebooted = false;
  const offReset = target.onReset(() => {
    rebooted = true;
    session.engine.stop();
  });
  try {
    await armTrace(session.engine, session.guest, req, out);
    req.onReady?.(session.engine.traps().length);
    if (req.durationS !== undefined) {
      timer = setTimeout(() => {
        reason = "duration";
        session.engine.stop();
      }, req.durationS * 1000);
    }
    const onAbort = () => {
      reason = "signal";
    };
    req.signal?.addEventListener("abort", onAbort);
    if (req.signal?.aborted) reason = "signal";
    await session.engine.run(req.signal);
    req.signal?.removeEventListener("abort", onAbort);
  } catch (error) {
    // A handler that read the rebooting guest's memory may have failed first.
    throw rebooted ? rebootError(events, error) : error;
  } finally {
    offReset();
    clearTimeout(timer);
    await session.close();
  }
  if (rebooted) throw rebootError(events);
  return {
    events,
    stops: session.engine.stats.stops,
    seconds: (performance.now() - started) / 1000,
    reason,
  };
}

function rebootError(events: number, cause?: unknown): VmsightError {
  return new VmsightError(
    "E_GUEST_REBOOTED",
    `the guest rebooted during the trace (after ${events} event(s)); its traps are removed and the new kernel is not traced`,
    { hint: "run trace again once the guest has booted", ...(cause === undefined ? {} : { cause }) },
  );
}

/** The fields of a TraceRequest that say which events to trap and which to keep. */
export type TraceSelection = Pick<
  TraceRequest,
  "kind" | "pid" | "comm" | "events" | "at" | "address" | "length" | "access" | "hold" | "log"
>;

/** Takes each event; a held breakpoint's comes with the `respond` that lets its vCPU go. */
export type EventSink = (e: EventBody, respond?: Respond) => void;

/**
 * Sets the traps of one trace kind on `engine`, sending what they see through `out`. `vmsight
 * trace` and the library's vm.events() both arm through here, so they see the same events.
 */
export async function armTrace(
  engine: EventEngine,
  guest: LinuxGuest,
  req: TraceSelection,
  out: EventSink,
): Promise<void> {
  switch (req.kind) {
    case "proc": {
      const when = (e: ProcEvent) =>
        (req.pid === undefined || e.pid === req.pid || e.ppid === req.pid) &&
        (req.comm === undefined || e.comm === req.comm);
      await traceProc(engine, guest, (e) => when(e) && out(e), { ...req.events, warn: req.log });
      return;
    }
    case "modules":
      await traceModules(engine, guest, out);
      return;
    case "syscalls":
      await traceSyscalls(engine, guest, out, {
        ...(req.pid === undefined ? {} : { pid: req.pid }),
        ...(req.comm === undefined ? {} : { comm: req.comm }),
      });
      return;
    case "switch":
      await traceSwitches(engine, guest, (e) => {
        const match = (t: SwitchEvent["next"]) =>
          (req.pid === undefined || t.tgid === req.pid) && (req.comm === undefined || t.comm === req.comm);
        if ((req.pid === undefined && req.comm === undefined) || match(e.prev) || match(e.next)) out(e);
      });
      return;
    case "break": {
      const at = req.at ?? "";
      await engine.breakpoint(
        at,
        async (hit) => {
          const regs = await hit.registers();
          const t = hit.task();
          const event: BreakEvent = {
            type: "break",
            at,
            cpu: hit.cpu,
            pid: t.tgid,
            tid: t.pid,
            comm: t.comm,
            rip: regs.get("rip") ?? 0n,
            args: CALL_ARGS.map((r) => regs.get(r) ?? 0n),
          };
          if (req.hold) await holdAtBreakpoint(hit, req.hold.deadlineMs, (respond) => out(event, respond));
          else out(event);
          return undefined;
        },
        { when: filterOf(req) },
      );
      return;
    }
    case "watch": {
      const address = req.address ?? 0n;
      const length = req.length ?? 8;
      const onHit = async (hit: TrapHit) => {
        out(await watchEvent(guest, hit, address, length));
        return undefined;
      };
      await engine.watch(address, onHit, {
        kind: req.access ?? "write",
        length,
        ...(req.pid === undefined ? {} : { pid: req.pid }),
        ...(req.comm === undefined ? {} : { when: { comm: req.comm } }),
      });
      return;
    }
  }
}

function filterOf(req: TraceSelection) {
  return {
    ...(req.pid === undefined ? {} : { pid: req.pid }),
    ...(req.comm === undefined ? {} : { comm: req.comm }),
  };
}

async function watchEvent(guest: LinuxGuest, hit: TrapHit, address: bigint, length: number) {
  const t = hit.task();
  const rip = await hit.register("rip");
  let value: bigint | undefined;
  try {
    const b = hit.read(address, length);
    value = 0n;
    for (let i = length - 1; i >= 0; i--) value = (value << 8n) | BigInt(b[i]!);
  } catch {
    value = undefined;
  }
  return {
    type: "watch" as const,
    access: hit.access?.kind ?? "watch",
    address,
    cpu: hit.cpu,
    pid: t.tgid,
    tid: t.pid,
    comm: t.comm,
    rip,
    where: guest.symbolize(rip) ?? hex(rip),
    value,
  };
}

/** One line of text per event, for people: from the event, or its record as vm.events() yields it. */
export function describeEvent(e: TraceEvent | Wire<EventRecord>): string {
  const at = e.time.toFixed(3).padStart(9);
  switch (e.type) {
    case "create":
      return `${at} ${e.thread ? "thread" : "fork  "} ${e.ppid} -> ${e.pid}${e.thread ? `/${e.tid}` : ""} (${e.comm})`;
    case "exec":
      return `${at} exec   ${e.pid} ${e.filename} [${e.argv.map((a) => JSON.stringify(a)).join(", ")}]`;
    case "exit":
      return `${at} exit   ${e.pid}${e.thread ? `/${e.tid}` : ""} (${e.comm}) ${
        e.signal === null ? `code ${e.exitCode}` : `signal ${e.signal}`
      }`;
    case "load":
      return `${at} load   ${e.name} at ${hexText(e.base)} size ${e.size}`;
    case "unload":
      return `${at} unload ${e.name} at ${hexText(e.base)}`;
    case "syscall":
      return `${at} ${e.pid}/${e.tid} ${e.comm}: ${e.name}(${e.args.map(hexText).join(", ")}) = ${retText(e.ret)}`;
    case "switch":
      return `${at} cpu${e.cpu} ${e.prev.pid} (${e.prev.comm}) -> ${e.next.pid} (${e.next.comm}) cr3 ${hexText(e.cr3)}`;
    case "break":
      return `${at} ${e.at} by ${e.pid}/${e.tid} (${e.comm}) args ${e.args.map(hexText).join(" ")}`;
    case "watch":
      return `${at} ${e.access} ${hexText(e.address)} by ${e.pid}/${e.tid} (${e.comm}) at ${e.where} = ${e.value === undefined ? "?" : hexText(e.value)}`;
  }
}

/** A return value: small ones (errors included) in decimal, others as 64-bit hex. */
function retText(value: bigint | number | string | null): string {
  if (value === null) return "?";
  // A record carries it as a number, or as a "0x…" string ("-0x…" when negative) beyond 2^53.
  const ret =
    typeof value === "string"
      ? value.startsWith("-")
        ? -BigInt(value.slice(1))
        : BigInt(value)
      : BigInt(value);
  return ret > -4096n && ret < 1n << 20n ? ret.toString() : hex(BigInt.asUintN(64, ret));
}

/** A syscall event as it is recorded: its return value a number where one holds it. */
export type SyscallRecord = Omit<SyscallEvent, "ret"> & {
  readonly time: number;
  readonly ret: number | bigint | null;
};

/** One event as `trace --json` prints it and vm.events() yields it (after toWire). */
export type EventRecord = Exclude<TraceEvent, { type: "syscall" }> | SyscallRecord;

/** JSON-ready form: a syscall's return value as a number (errors negative), not a hex string. */
export function eventRecord(e: TraceEvent): EventRecord {
  if (e.type === "syscall") {
    const ret = e.ret === null ? null : Number.isSafeInteger(Number(e.ret)) ? Number(e.ret) : e.ret;
    return { ...e, ret };
  }
  return { ...e };
}
