/** The rows the server sends (the CLI's --json shapes), as far as the page reads them. */
export interface RpcFailure {
  readonly method?: string;
  readonly message: string;
  readonly code?: string;
  readonly hint?: string;
}

export interface VmEntry {
  readonly name: string;
  readonly qmp: string;
  readonly present: boolean;
}

export interface Status {
  readonly status: string;
  readonly running: boolean;
  readonly qemuPid: number;
  readonly vcpus: number;
  readonly ramSize: string;
  readonly memoryPath: string;
  /** "mapped", "process memory", "file" or "snapshot" (servers before it sent none). */
  readonly memoryAccess?: string;
}

export interface Kernel {
  readonly version: string;
  readonly slide: string;
}

export interface Proc {
  readonly pid: number;
  readonly tgid: number;
  readonly ppid: number;
  readonly uid: number | null;
  readonly state: string;
  readonly comm: string;
  readonly cmdline: string;
  readonly warnings?: readonly string[];
}

export interface Thread {
  readonly tid: number;
  readonly tgid: number;
  readonly ppid: number;
  readonly state: string;
  readonly comm: string;
}

export interface TreeLine {
  readonly pid: number;
  readonly ppid: number;
  readonly depth: number;
  readonly comm: string;
  readonly text: string;
}

export interface Module {
  readonly name: string;
  readonly base: string;
  readonly size: number;
  readonly state: string;
}

export interface MapRow {
  readonly start: string;
  readonly end: string;
  readonly perms: string;
  readonly offset: string;
  readonly dev: string;
  readonly inode: string;
  readonly path: string;
}

export interface KillResult {
  readonly pid: number;
  readonly name: string;
  readonly delivery?: unknown;
  readonly outcome: string;
  readonly expected: boolean;
  readonly exitedAfterMs?: number;
  readonly goneAfterMs?: number;
}

export interface VmEvent {
  readonly vm: string;
  readonly type: string;
  readonly subscription?: string;
  readonly pid?: number;
  readonly tid?: number;
  readonly ppid?: number;
  readonly comm?: string;
  readonly thread?: boolean;
  readonly [field: string]: unknown;
}
