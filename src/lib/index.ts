/**
 * vmsight as a library: `attach()` a running QEMU (or `openDump()` an ELF dump) and get one Vm
 * object that lists, reads, writes, controls and traces the guest. Every method returns what
 * the matching CLI command prints with --json: same keys, 64-bit values as "0x…" strings.
 *
 *   import { attach } from "vmsight";
 *   await using vm = await attach("/run/qmp.sock");
 *   for (const p of await vm.ps()) console.log(p.pid, p.comm);
 */
export { attach, openDump, Vm } from "./vm.js";
export type { AttachOptions, KernelOptions, KillOptions, RegisterValues, VmDumpOptions } from "./vm.js";
export type { EventOptions, EventStream, StreamEvent } from "./events.js";
export type { Guest } from "./guest.js";
export type { BreakAction, Respond } from "../events/hold.js";
export type {
  Address,
  CheckFindingRow,
  DumpResult,
  Hex,
  KernelInfoRow,
  KillMethod,
  KillResult,
  MapRow,
  ModuleRow,
  ProcessRow,
  Registers,
  RunStateRow,
  SignalName,
  Space,
  StatusRow,
  ThreadInfoRow,
  TraceKind,
  TranslationRow,
  TreeRow,
  VmEvent,
  WatchKind,
  OpenFileRow,
  EnvVarRow,
  LogLineRow,
  MountInfoRow,
  SocketInfoRow,
  NamespaceRow,
  ContainerGroupRow,
} from "./types.js";
export { ERROR_CODES, type ErrorCode, FaultError, VmsightError, isVmsightError } from "../util/errors.js";
