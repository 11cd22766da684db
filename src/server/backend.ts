/**
 * What `vmsight serve` needs from one VM. The library (src/lib) exposes one object per VM with
 * these methods; the server is written against this interface only, and receives a factory
 * that opens one, so it is tested with a fake and wired to the library without changes.
 * Rows and records are the CLI's --json shapes: plain JSON objects, addresses as "0x…" strings.
 */

/** A JSON object (no bigints: addresses are "0x…" strings). */
export type Row = Record<string, unknown>;

/** How an address is to be translated: physical, or virtual through a vCPU's (or a given) CR3. */
export interface AddressSpace {
  readonly kind: "phys" | "virt";
  readonly cpu?: number;
  readonly cr3?: string;
  /** Virtual through this process's page tables (the dashboard's memory viewer). */
  readonly pid?: number;
}

/** The trace kinds the library arms (the CLI's `trace` words), plus the QMP run-state stream. */
export type EventKind = "proc" | "modules" | "syscalls" | "switch" | "break" | "watch" | "state";

export interface EventRequest {
  readonly types: readonly EventKind[];
  readonly pid?: number;
  readonly comm?: string;
  /** break: a symbol or "0x…" address. */
  readonly at?: string;
  /** watch: the watched range and the access that reports. */
  readonly address?: string;
  readonly length?: number;
  readonly access?: "read" | "write" | "access";
  readonly space?: "phys" | "virt";
  /** break: hold the vCPU until the record's respond() or this many ms (then it continues). */
  readonly holdMs?: number;
}

/** How linux.kill goes about it (as `vmsight kill`'s options). */
export interface KillRequest {
  readonly method?: "send" | "wake" | "memory";
  readonly force?: boolean;
  readonly timeoutMs?: number;
}

/** What a breakpoint subscriber may tell a stopped vCPU to do. */
export type BreakAction =
  | { readonly action: "continue" }
  | { readonly action: "skip" }
  | { readonly action: "set_registers"; readonly registers: Readonly<Record<string, string>> };

/**
 * One trace --json record (`type` is create|exec|exit|load|unload|syscall|switch|break|watch, or
 * `state` with `event` naming the QMP event). A breakpoint record whose vCPU is held until the
 * introspector answers carries `respond`; without it the vCPU has already continued.
 */
export interface EventRecord {
  readonly type: string;
  readonly respond?: (action: BreakAction) => Promise<void>;
  readonly [field: string]: unknown;
}

export interface ServedVm {
  kernel(): Promise<Row>;
  ps(): Promise<Row[]>;
  threads(): Promise<Row[]>;
  pstree(): Promise<Row[]>;
  lsmod(): Promise<Row[]>;
  maps(pid: number): Promise<Row[]>;
  pids(): Promise<Row[]>;
  lsof(pid?: number): Promise<Row[]>;
  sockets(): Promise<Row[]>;
  env(pid: number): Promise<Row[]>;
  mounts(pid?: number): Promise<Row[]>;
  ns(): Promise<Row[]>;
  containers(): Promise<Row[]>;
  dmesg(): Promise<Row[]>;
  check(): Promise<Row[]>;
  read(addr: string, length: number, space?: AddressSpace): Promise<Uint8Array>;
  write(addr: string, bytes: Uint8Array, space?: AddressSpace): Promise<void>;
  translate(vaddr: string, space?: AddressSpace): Promise<Row>;
  regs(cpu?: number): Promise<Record<string, string>>;
  setRegs(cpu: number, regs: Readonly<Record<string, string>>): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  status(): Promise<Row>;
  kill(pid: number, signal: string, opts?: KillRequest): Promise<Row>;
  /**
   * Ending the loop (return()) removes its traps; concurrent iterators share traps. The server
   * calls return() while a next() may be pending: return() must end that next() (done).
   */
  events(req: EventRequest): AsyncIterable<EventRecord>;
  close(): Promise<void>;
}

export type OpenVm = (qmpSocket: string) => Promise<ServedVm>;
