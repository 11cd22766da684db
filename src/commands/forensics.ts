import type { KernelContext } from "../os/linux/context.js";
import { type OpenFile, formatFlags, openFiles } from "../os/linux/files.js";
import { type MountInfo, namespaceMounts, readMount, taskMountNamespace } from "../os/linux/mounts.js";
import { taskCgroupPath, taskNamespaces } from "../os/linux/namespaces.js";
import { logRecords } from "../os/linux/printk.js";
import { readEnviron } from "../os/linux/process-memory.js";
import { readSocket } from "../os/linux/sockets.js";
import { type TaskInfo, listTasks } from "../os/linux/tasks.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import { decodeGuestBytes } from "../util/guest-text.js";
import { findProcess, withWarnings } from "./processes.js";

/** `lsof` columns: /proc/<pid>/fd/<fd> (path) and /proc/<pid>/fdinfo/<fd> (flags, pos, mnt_id, ino). */
export interface LsofRow {
  readonly pid: number;
  readonly comm: string;
  /** -1 on the row that says a process's file table could not be read. */
  readonly fd: number;
  readonly type: string;
  /** As fdinfo prints them: octal with a leading 0. */
  readonly flags: string;
  readonly pos: bigint;
  readonly mntId: number;
  readonly ino: bigint;
  readonly path: string;
  readonly warnings?: readonly string[];
}

function lsofOf(k: KernelContext, t: TaskInfo): LsofRow[] {
  try {
    return openFiles(k, t.addr).map((f) => ({
      pid: t.pid,
      comm: t.name,
      fd: f.fd,
      type: f.type,
      flags: formatFlags(f.flags),
      pos: f.pos,
      mntId: f.mntId,
      ino: f.ino,
      path: f.path,
      ...withWarnings(f.warnings ?? []),
    }));
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    const warnings = [`file table unreadable: ${error.message}`];
    return [
      {
        pid: t.pid,
        comm: t.name,
        fd: -1,
        type: "unknown",
        flags: "0",
        pos: 0n,
        mntId: 0,
        ino: 0n,
        path: "?",
        warnings,
      },
    ];
  }
}

/** The open files of one process, or of every process (threads share their leader's table). */
export function lsofRows(k: KernelContext, pid?: number): LsofRow[] {
  const tasks = pid === undefined ? listTasks(k).sort((a, b) => a.pid - b.pid) : [findProcess(k, pid)];
  return tasks.flatMap((t) => lsofOf(k, t));
}

/** One variable of /proc/<pid>/environ: NAME=value split at the first "=" (value null without one). */
export interface EnvRow {
  readonly pid: number;
  readonly name: string;
  readonly value: string | null;
  readonly warnings?: readonly string[];
}

export function envRows(k: KernelContext, pid: number): EnvRow[] {
  const t = findProcess(k, pid);
  const env = readEnviron(k, t);
  const rows: EnvRow[] = env.strings.map((s) => {
    const eq = s.indexOf("=");
    return eq < 0 ? { pid, name: s, value: null } : { pid, name: s.slice(0, eq), value: s.slice(eq + 1) };
  });
  const warnings: string[] = [];
  if (env.partial && env.faultAddress !== undefined)
    warnings.push(`environment cut at ${hex(env.faultAddress)}: page not readable`);
  if (env.truncated) warnings.push("environment longer than vmsight reads: cut");
  const last = rows.pop();
  if (last) rows.push({ ...last, ...withWarnings(warnings) });
  else if (warnings.length > 0) rows.push({ pid, name: "", value: null, warnings });
  return rows;
}

/** One line of `dmesg`: a record's text split at its newlines, each line with the record's time. */
export interface DmesgRow {
  readonly seq: number;
  /** Seconds since boot with microseconds, as dmesg prints them ("3.287126"). */
  readonly time: string;
  readonly facility: number;
  readonly level: number;
  readonly text: string;
}

export function dmesgTime(tsNsec: bigint): string {
  return `${tsNsec / 1_000_000_000n}.${((tsNsec % 1_000_000_000n) / 1000n).toString().padStart(6, "0")}`;
}

/** `record_print_text()` as syslog(READ_ALL) runs it: one line per newline-separated piece. */
export function dmesgRows(k: KernelContext): DmesgRow[] {
  return logRecords(k).flatMap((r) => {
    const lines: Buffer[] = [];
    let from = 0;
    for (let nl = r.text.indexOf(10); nl >= 0; nl = r.text.indexOf(10, from)) {
      lines.push(r.text.subarray(from, nl));
      from = nl + 1;
    }
    lines.push(r.text.subarray(from));
    const head = { seq: Number(r.seq), time: dmesgTime(r.tsNsec), facility: r.facility, level: r.level };
    return lines.map((line) => ({ ...head, text: decodeGuestBytes(line) }));
  });
}

/** The line the guest's `dmesg` prints for a row: "[    3.287126] text". */
export function formatDmesgLine(row: Pick<DmesgRow, "time" | "text">): string {
  const [sec = "", usec = ""] = row.time.split(".");
  return `[${sec.padStart(5)}.${usec}] ${row.text}`;
}

/** `mounts` rows: /proc/<pid>/mountinfo, one mount each. */
export type MountRow = Omit<MountInfo, "mount">;

/** The mounts `pid` (default 1) sees, in mountinfo order. */
export function mountRows(k: KernelContext, pid = 1): MountRow[] {
  const t = findProcess(k, pid);
  return namespaceMounts(k, taskMountNamespace(k, t.addr)).map((m) => {
    const { mount: _, ...row } = readMount(k, m);
    return row;
  });
}

/**
 * `sockets` rows: every socket a process holds open, as
 * /proc/net/{tcp,tcp6,udp,udp6,unix,netlink,packet}.
 */
export interface SocketRow {
  readonly proto: string;
  readonly local: string;
  readonly remote: string;
  readonly state: string;
  readonly inode: bigint;
  /** The processes that hold it open, ascending. */
  readonly pids: readonly number[];
  readonly warnings?: readonly string[];
}

/**
 * The sockets found through the processes' file tables (as Volatility's sockstat): a socket no
 * process holds (TIME_WAIT, a connection not yet accepted, the kernel's own) is not listed.
 */
export function socketRows(k: KernelContext): SocketRow[] {
  const bySock = new Map<bigint, { row: SocketRow; pids: Set<number> }>();
  const broken: SocketRow[] = [];
  for (const t of listTasks(k).sort((a, b) => a.pid - b.pid)) {
    let files: OpenFile[];
    try {
      files = openFiles(k, t.addr);
    } catch (error) {
      if (!(error instanceof VmsightError)) throw error;
      continue; // lsof names the process whose table is unreadable
    }
    for (const f of files.filter((x) => x.type === "socket")) {
      try {
        const s = readSocket(k, f.file);
        const seen = bySock.get(s.sock);
        if (seen) seen.pids.add(t.pid);
        else {
          const row = {
            proto: s.proto,
            local: s.local,
            remote: s.remote,
            state: s.state,
            inode: f.ino,
            pids: [],
          };
          bySock.set(s.sock, { row, pids: new Set([t.pid]) });
        }
      } catch (error) {
        if (!(error instanceof VmsightError)) throw error;
        const warnings = [`socket of pid ${t.pid} fd ${f.fd} unreadable: ${error.message}`];
        broken.push({
          proto: "?",
          local: "?",
          remote: "?",
          state: "?",
          inode: f.ino,
          pids: [t.pid],
          warnings,
        });
      }
    }
  }
  const rows = [...bySock.values()].map(({ row, pids }) => ({
    ...row,
    pids: [...pids].sort((a, b) => a - b),
  }));
  return [...rows, ...broken].sort((a, b) => a.proto.localeCompare(b.proto) || Number(a.inode - b.inode));
}

/** `ns` rows: the namespace ids of /proc/<pid>/ns/* (inode numbers), one process each. */
export interface NsRow {
  readonly pid: number;
  readonly comm: string;
  readonly cgroup: number | null;
  readonly ipc: number | null;
  readonly mnt: number | null;
  readonly net: number | null;
  readonly pidNs: number | null;
  readonly pidForChildren: number | null;
  readonly time: number | null;
  readonly timeForChildren: number | null;
  readonly user: number | null;
  readonly uts: number | null;
  /** The cgroup v2 path, as /proc/<pid>/cgroup's "0::" line. */
  readonly cgroupPath: string | null;
  readonly warnings?: readonly string[];
}

const NO_NS = {
  cgroup: null,
  ipc: null,
  mnt: null,
  net: null,
  pidNs: null,
  pidForChildren: null,
  time: null,
  timeForChildren: null,
  user: null,
  uts: null,
};

function nsRow(k: KernelContext, t: TaskInfo): NsRow {
  const warnings: string[] = [];
  let ns: Omit<NsRow, "pid" | "comm" | "cgroupPath" | "warnings"> = NO_NS;
  let cgroupPath: string | null = null;
  try {
    const n = taskNamespaces(k, t.addr);
    const { pid: pidNs, time, timeForChildren, ...rest } = n;
    ns = { ...rest, pidNs, time: time ?? null, timeForChildren: timeForChildren ?? null };
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`namespaces unreadable: ${error.message}`);
  }
  try {
    cgroupPath = taskCgroupPath(k, t.addr);
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`cgroup unreadable: ${error.message}`);
  }
  return { pid: t.pid, comm: t.name, ...ns, cgroupPath, ...withWarnings(warnings) };
}

/** Every process's namespaces (an exiting process, whose nsproxy is gone, carries a warning). */
export function nsRows(k: KernelContext): NsRow[] {
  return listTasks(k)
    .sort((a, b) => a.pid - b.pid)
    .map((t) => nsRow(k, t));
}

/** `containers` rows: processes grouped by their namespaces and cgroup; the host's group first. */
export interface ContainerRow {
  readonly cgroupPath: string | null;
  readonly cgroup: number | null;
  readonly ipc: number | null;
  readonly mnt: number | null;
  readonly net: number | null;
  readonly pidNs: number | null;
  readonly time: number | null;
  readonly user: number | null;
  readonly uts: number | null;
  readonly pids: readonly number[];
  readonly comms: readonly string[];
}

export function containerRows(k: KernelContext): ContainerRow[] {
  const groups = new Map<string, { key: Omit<ContainerRow, "pids" | "comms">; rows: NsRow[] }>();
  for (const r of nsRows(k)) {
    const key = {
      cgroupPath: r.cgroupPath,
      cgroup: r.cgroup,
      ipc: r.ipc,
      mnt: r.mnt,
      net: r.net,
      pidNs: r.pidNs,
      time: r.time,
      user: r.user,
      uts: r.uts,
    };
    const id = JSON.stringify(key);
    const g = groups.get(id) ?? { key, rows: [] };
    g.rows.push(r);
    groups.set(id, g);
  }
  return [...groups.values()].map((g) => ({
    ...g.key,
    pids: g.rows.map((r) => r.pid),
    comms: g.rows.map((r) => r.comm),
  }));
}
