/**
 * `vmsight demo`: boots the demo guest and gathers what vmsight sees in it through nothing but
 * its QMP socket (machine, kernel, processes, modules, a memory map), then traces process events
 * while the guest forks and execs, and kills a workload process from outside with the guest's
 * own `ps` before and after as the witness. The CLI renders the report.
 */
import { type AccelChoice, detectAccel } from "../qemu/accel.js";
import type { LaunchedGuest } from "../qemu/launch.js";
import { SerialConsole } from "../qemu/serial-console.js";
import { Target } from "../qemu/session.js";
import { VmsightError } from "../util/errors.js";
import { type KillReport, killProcess } from "./control.js";
import { type Log, bootDemoGuest, waitForGuestReady } from "./guests.js";
import { type KernelReport, kernelReport, openKernel } from "./linux.js";
import {
  type RegisterRow,
  type StatusReport,
  type TranslationReport,
  registerRows,
  statusReport,
  translateAddress,
} from "./machine.js";
import { type MapsRow, type ModuleListRow, type PsRow, lsmodRows, mapsRows, psRows } from "./processes.js";
import { type TraceEvent, runTrace } from "./trace.js";

export interface DemoOptions {
  /** A kernel of guests/kernels.json; its default when undefined. */
  readonly kernelId?: string;
  /** Leave the guest running afterwards. */
  readonly keep?: boolean;
}

export interface DemoMachine {
  readonly status: StatusReport;
  /** vCPU 0's instruction pointer, stack pointer, control registers and segment bases. */
  readonly registers: readonly RegisterRow[];
  readonly kernel: KernelReport;
  /** How long finding the kernel, its symbols and types in guest RAM took. */
  readonly kernelMs: number;
  /** linux_banner through the kernel's page tables. */
  readonly banner: TranslationReport;
  readonly processes: readonly PsRow[];
  readonly modules: readonly ModuleListRow[];
  /** The memory map of the memwrite workload, when it runs. */
  readonly worker:
    | { readonly pid: number; readonly comm: string; readonly maps: readonly MapsRow[] }
    | undefined;
}

export interface DemoKill {
  /** The guest's own `ps` (over its serial console), the header and the sleep processes. */
  readonly guestPsBefore: string;
  readonly victim: number;
  readonly report: KillReport;
  readonly guestPsAfter: string;
}

export interface DemoReport {
  readonly accel: AccelChoice;
  readonly qmpSocket: string;
  readonly machine: DemoMachine;
  /** Process events for `traceSeconds` while the guest ran `traceCommand`. */
  readonly events: readonly TraceEvent[];
  readonly traceSeconds: number;
  readonly traceCommand: string;
  /** undefined when the guest has no serial console to witness it. */
  readonly kill: DemoKill | undefined;
  /** The guest was left running (`keep`). */
  readonly kept: boolean;
}

const SHOWN_REGISTERS = new Set(["rip", "rsp", "cr0", "cr3", "cr4", "efer", "gs_base", "k_gs_base"]);
const TRACE_SECONDS = 4;
const TRACE_COMMAND = "workload forkloop 3; ls /";

export async function runDemo(opts: DemoOptions, log: Log): Promise<DemoReport> {
  const accel = detectAccel();
  const { guest } = await bootDemoGuest(opts.kernelId, log, opts.keep === true);
  try {
    await waitForGuestReady(guest, 180_000, log);
    log(`guest up; attaching through nothing but its QMP socket ${guest.qmpSocket}`);
    const machine = await withTarget(guest.qmpSocket, inspectMachine);
    const witnessed = guest.serialSocket ? await eventsAndKill(guest, guest.serialSocket) : undefined;
    return {
      accel,
      qmpSocket: guest.qmpSocket,
      machine,
      events: witnessed?.events ?? [],
      traceSeconds: TRACE_SECONDS,
      traceCommand: TRACE_COMMAND,
      kill: witnessed?.kill,
      kept: opts.keep === true,
    };
  } finally {
    if (!opts.keep) await guest.stop();
  }
}

async function withTarget<T>(qmpSocket: string, fn: (t: Target) => Promise<T>): Promise<T> {
  const target = await Target.attach(qmpSocket);
  try {
    return await fn(target);
  } finally {
    await target.close();
  }
}

async function inspectMachine(target: Target): Promise<DemoMachine> {
  const status = await statusReport(target);
  const registers = (await registerRows(target, 0)).filter((r) => SHOWN_REGISTERS.has(r.name));
  const started = performance.now();
  const k = await openKernel(target);
  const kernelMs = Math.round(performance.now() - started);
  const banner = await translateAddress(target, k.symbols.getAddress("linux_banner"), {});
  const processes = psRows(k);
  const worker = processes.find((p) => p.comm === "wl-memwrite");
  return {
    status,
    registers,
    kernel: kernelReport(k),
    kernelMs,
    banner,
    processes,
    modules: lsmodRows(k),
    worker: worker && { pid: worker.pid, comm: worker.comm, maps: mapsRows(k, worker.pid) },
  };
}

async function eventsAndKill(
  guest: LaunchedGuest,
  serialSocket: string,
): Promise<{ events: TraceEvent[]; kill: DemoKill }> {
  const serial = await SerialConsole.connect(serialSocket);
  try {
    const events: TraceEvent[] = [];
    await withTarget(guest.qmpSocket, (tracer) =>
      runTrace(
        tracer,
        {
          kind: "proc",
          durationS: TRACE_SECONDS,
          // A brace group, not a subshell: no extra sh process among the traced events.
          onReady: () => serial.send(`{ ${TRACE_COMMAND}; } >/dev/null`),
        },
        (e) => events.push(e),
      ),
    );
    const guestPs = async () => (await serial.command("ps -o pid,stat,comm | grep -E 'PID|sleep'")).trimEnd();
    const guestPsBefore = await guestPs();
    const roles = await serial.command("cat /run/vmsight/roles");
    const victim = Number(/\bsleep=(\d+)/.exec(roles)?.[1]);
    if (!Number.isInteger(victim)) {
      throw new VmsightError("E_GUEST_COMMAND", `the demo guest lists no sleep process: ${roles.trim()}`);
    }
    const report = await withTarget(guest.qmpSocket, (killer) =>
      killProcess(killer, { pid: victim, signal: "KILL", method: "send" }),
    );
    return { events, kill: { guestPsBefore, victim, report, guestPsAfter: await guestPs() } };
  } finally {
    serial.close();
  }
}
