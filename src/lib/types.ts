/** The shapes the library hands out: each is a CLI --json row, 64-bit values as "0x…" strings. */
import type { KillReport } from "../commands/control.js";
import type { DumpReport } from "../commands/dump-image.js";
import type {
  ContainerRow,
  DmesgRow,
  EnvRow,
  LsofRow,
  MountRow,
  NsRow,
  SocketRow,
} from "../commands/forensics.js";
import type { IntegrityFinding } from "../commands/integrity.js";
import type { KernelReport } from "../commands/linux.js";
import type { StatusReport, TranslationReport } from "../commands/machine.js";
import type { MapsRow, ModuleListRow, PsRow, ThreadRow, TreeLine } from "../commands/processes.js";
import type { EventRecord, TraceKind } from "../commands/trace.js";
import type { Hex, Wire } from "../commands/wire.js";
import type { WatchKind } from "../events/engine.js";
import type { SignalName } from "../events/kill-signals.js";
import type { KillMethod } from "../events/kill.js";

export type { Hex, SignalName, KillMethod, TraceKind, WatchKind };

/** `vmsight kernel --json`, one report. */
export type KernelInfoRow = Wire<KernelReport>;
/** `vmsight ps --json` (and `pids --json`) rows. */
export type ProcessRow = Wire<PsRow>;
/** `vmsight threads --json` rows. */
export type ThreadInfoRow = Wire<ThreadRow>;
/** `vmsight pstree --json` rows: one line of the tree each. */
export type TreeRow = Wire<TreeLine>;
/** `vmsight lsmod --json` rows. */
export type ModuleRow = Wire<ModuleListRow>;
/** `vmsight maps PID --json` rows. */
export type MapRow = Wire<MapsRow>;
/** `vmsight check --json` rows: one finding each. */
export type CheckFindingRow = Wire<IntegrityFinding>;
/** `vmsight dump --json`: what was written. */
export type DumpResult = Wire<DumpReport>;
/** `vmsight translate --json`. */
export type TranslationRow = Wire<TranslationReport>;
/** `vmsight status --json`. */
export type StatusRow = Wire<StatusReport>;
/** `vmsight pause --json` / `resume --json`. */
export interface RunStateRow {
  status: string;
  running: boolean;
}
/** `vmsight regs --json`: register name → value. */
export type Registers = Record<string, Hex>;
/** `vmsight kill --json`. */
export type KillResult = Wire<KillReport>;
/** One event as `vmsight trace --json` prints it. */
export type VmEvent = Wire<EventRecord>;

/** A guest address: a bigint, a safe integer, or a "0x…" string as the rows carry them. */
export type Address = bigint | number | string;

/**
 * Which address space an access goes through: guest-physical; kernel virtual (vCPU 0's page
 * tables, through the kernel half of a KPTI pair for kernel addresses); the one a vCPU runs in
 * now; a process's (by pid); or the page tables at an explicit CR3 (in a vCPU's paging mode).
 */
export type Space =
  | "physical"
  | "kernel"
  | { readonly cpu: number }
  | { readonly pid: number }
  | { readonly cr3: Address; readonly cpu?: number };

// ---- forensics (lsof, env, dmesg, mounts, sockets, ns, containers) ---------------------------
/** `vmsight lsof [PID] --json` rows: one open fd each. */
export type OpenFileRow = Wire<LsofRow>;
/** `vmsight env PID --json` rows: one environment variable each. */
export type EnvVarRow = Wire<EnvRow>;
/** `vmsight dmesg --json` rows: one line of the kernel log each. */
export type LogLineRow = Wire<DmesgRow>;
/** `vmsight mounts [PID] --json` rows: one mount each, as /proc/PID/mountinfo. */
export type MountInfoRow = Wire<MountRow>;
/** `vmsight sockets --json` rows: one socket each, with the pids that hold it. */
export type SocketInfoRow = Wire<SocketRow>;
/** `vmsight ns --json` rows: one process each. */
export type NamespaceRow = Wire<NsRow>;
/** `vmsight containers --json` rows: one group of processes each. */
export type ContainerGroupRow = Wire<ContainerRow>;
