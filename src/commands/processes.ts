import type { KernelContext } from "../os/linux/context.js";
import { listVmas } from "../os/linux/maps.js";
import { listModules } from "../os/linux/modules.js";
import { pidNamespaceEntries } from "../os/linux/pid-ns.js";
import { type ProcessStrings, readCmdline, readCmdlines } from "../os/linux/process-memory.js";
import { ancestorsLast, buildProcessTree, flattenProcessTree } from "../os/linux/pstree.js";
import { type TaskInfo, listAllThreads, listTasks, readTask } from "../os/linux/tasks.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import { markStep } from "../util/timings.js";

/** `ps` columns: what /proc/<pid>/stat and /proc/<pid>/cmdline show for each process. */
export interface PsRow {
  readonly pid: number;
  readonly tgid: number;
  readonly ppid: number;
  readonly uid: number | null;
  readonly state: string;
  readonly comm: string;
  readonly cmdline: string;
  /** What could not be read for this process; absent when everything could. */
  readonly warnings?: readonly string[];
}

/** `{ warnings }` when there are any, so a sound row has exactly the documented keys. */
export function withWarnings(warnings: readonly string[]): { warnings?: readonly string[] } {
  return warnings.length === 0 ? {} : { warnings };
}

/**
 * The command line, or "" and a warning when the process's mm or page tables cannot be read:
 * one broken process must not take the listing down with it.
 */
function cmdlineOf(k: KernelContext, t: TaskInfo, warnings: string[], known?: ProcessStrings): string {
  try {
    const c = known ?? readCmdline(k, t);
    if (c.partial && c.faultAddress !== undefined)
      warnings.push(`command line cut at ${hex(c.faultAddress)}: page not readable`);
    return c.strings.join(" ");
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    warnings.push(`command line unreadable: ${error.message}`);
    return "";
  }
}

function psRow(k: KernelContext, t: TaskInfo, known?: ProcessStrings): PsRow {
  const warnings = [...t.warnings];
  const cmdline = cmdlineOf(k, t, warnings, known);
  return {
    pid: t.pid,
    tgid: t.tgid,
    ppid: t.ppid,
    uid: t.uid ?? null,
    state: t.state,
    comm: t.name,
    cmdline,
    ...withWarnings(warnings),
  };
}

export function psRows(k: KernelContext): PsRow[] {
  const tasks = listTasks(k);
  markStep("tasks");
  const cmdlines = readCmdlines(k, tasks);
  return tasks.map((t, i) => psRow(k, t, cmdlines[i])).sort((a, b) => a.pid - b.pid);
}

/**
 * The same columns as `ps`, but found through the PID namespace's pid table instead of the task
 * list: on a healthy guest the two agree; a process missing from `ps` but present here has been
 * unlinked from the task list.
 */
export function pidViewRows(k: KernelContext): PsRow[] {
  return pidNamespaceEntries(k)
    .flatMap((e) => (e.task === undefined ? [] : [readTask(k, e.task)]))
    .filter((t) => t.pid === t.tgid)
    .map((t) => psRow(k, t))
    .sort((a, b) => a.pid - b.pid);
}

export interface ThreadRow {
  readonly tid: number;
  readonly tgid: number;
  readonly ppid: number;
  readonly state: string;
  readonly comm: string;
  readonly warnings?: readonly string[];
}

export function threadRows(k: KernelContext): ThreadRow[] {
  return listAllThreads(k)
    .map((t) => ({
      tid: t.pid,
      tgid: t.tgid,
      ppid: t.ppid,
      state: t.state,
      comm: t.name,
      ...withWarnings(t.warnings),
    }))
    .sort((a, b) => a.tgid - b.tgid || a.tid - b.tid);
}

export interface TreeLine {
  readonly pid: number;
  readonly ppid: number;
  readonly depth: number;
  readonly comm: string;
  /** The line as drawn: branches then "comm(pid)". */
  readonly text: string;
}

export function pstreeLines(k: KernelContext): TreeLine[] {
  const rows = flattenProcessTree(buildProcessTree(listTasks(k)));
  return rows.map((r) => {
    const lead = ancestorsLast(r)
      .map((last) => (last ? "   " : "│  "))
      .join("");
    const branch = r.depth === 0 ? "" : r.last ? "└─ " : "├─ ";
    return {
      pid: r.task.pid,
      ppid: r.task.ppid,
      depth: r.depth,
      comm: r.task.name,
      text: `${lead}${branch}${r.task.name}(${r.task.pid})`,
    };
  });
}

export interface ModuleListRow {
  readonly name: string;
  readonly base: bigint;
  readonly size: number;
  readonly state: string;
  readonly warnings?: readonly string[];
}

export function lsmodRows(k: KernelContext): ModuleListRow[] {
  return listModules(k).map((m) => ({
    name: m.name,
    base: m.base,
    size: m.size,
    state: m.state,
    ...withWarnings(m.warnings ?? []),
  }));
}

export interface MapsRow {
  readonly start: bigint;
  readonly end: bigint;
  readonly perms: string;
  readonly offset: bigint;
  readonly dev: string;
  readonly inode: bigint;
  readonly path: string;
  readonly warnings?: readonly string[];
}

/** The process `pid` from the task list, or E_NO_PROCESS. */
export function findProcess(k: KernelContext, pid: number): TaskInfo {
  const task = listTasks(k).find((t) => t.pid === pid);
  if (!task)
    throw new VmsightError("E_NO_PROCESS", `no process with pid ${pid} in the guest`, {
      hint: "`vmsight ps` lists them",
    });
  return task;
}

export function mapsRows(k: KernelContext, pid: number): MapsRow[] {
  const task = findProcess(k, pid);
  if (task.mm === 0n) return [];
  return listVmas(k, { task: task.addr }).map((v) => ({
    start: v.start,
    end: v.end,
    perms: v.perms,
    offset: v.offset,
    dev: v.dev,
    inode: v.inode,
    path: v.path,
    ...withWarnings(v.warnings ?? []),
  }));
}
