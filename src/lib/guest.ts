/**
 * What a guest answers, wherever it is reached: the library's own `Vm` (attached to QEMU or
 * over a dump), or a guest that `vmsight serve` holds, reached over its protocol. The CLI is
 * written against this, so its commands work the same either way.
 */
import type { EventOptions, EventStream } from "./events.js";
import type {
  Address,
  CheckFindingRow,
  ContainerGroupRow,
  EnvVarRow,
  KernelInfoRow,
  KillResult,
  LogLineRow,
  MapRow,
  ModuleRow,
  MountInfoRow,
  NamespaceRow,
  OpenFileRow,
  ProcessRow,
  Registers,
  RunStateRow,
  SocketInfoRow,
  Space,
  StatusRow,
  ThreadInfoRow,
  TranslationRow,
  TreeRow,
} from "./types.js";
import type { KillOptions, RegisterValues } from "./vm.js";

export interface Guest {
  kernel(): Promise<KernelInfoRow>;
  ps(): Promise<ProcessRow[]>;
  pids(): Promise<ProcessRow[]>;
  threads(): Promise<ThreadInfoRow[]>;
  pstree(): Promise<TreeRow[]>;
  lsmod(): Promise<ModuleRow[]>;
  maps(pid: number): Promise<MapRow[]>;
  lsof(pid?: number): Promise<OpenFileRow[]>;
  env(pid: number): Promise<EnvVarRow[]>;
  mounts(pid?: number): Promise<MountInfoRow[]>;
  sockets(): Promise<SocketInfoRow[]>;
  ns(): Promise<NamespaceRow[]>;
  containers(): Promise<ContainerGroupRow[]>;
  dmesg(): Promise<LogLineRow[]>;
  check(): Promise<CheckFindingRow[]>;
  read(addr: Address, length: number, space?: Space): Promise<Buffer>;
  write(addr: Address, bytes: Uint8Array, space?: Space): Promise<void>;
  translate(vaddr: Address, space?: Exclude<Space, "physical">): Promise<TranslationRow>;
  regs(cpu?: number): Promise<Registers>;
  setRegs(cpu: number, values: RegisterValues): Promise<void>;
  pause(): Promise<RunStateRow>;
  resume(): Promise<RunStateRow>;
  status(): Promise<StatusRow>;
  kill(pid: number, signal?: string, opts?: KillOptions): Promise<KillResult>;
  events(opts: EventOptions): EventStream;
  close(): Promise<void>;
}
