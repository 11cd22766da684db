/** The per-VM listings: processes, tree, threads, modules, a memory map, and the hidden-process cross-view. */
import { type App, vmHash } from "./app.js";
import { type Column, DataTable, bytesText, el, keepingFocus } from "./dom.js";
import type { MapRow, Module, Proc, Thread, TreeLine, VmEvent } from "./types.js";

export interface Listing {
  readonly root: HTMLElement;
  refresh(): Promise<void>;
  /** Pushed events that change this listing (it refreshes itself soon after). */
  readonly watches: (e: VmEvent) => boolean;
  /** Applies an event at once, before the refresh brings the guest's own answer. */
  applyEvent?(e: VmEvent): void;
}

const isProcEvent = (e: VmEvent) => e.type.startsWith("process.");
const isModuleEvent = (e: VmEvent) => e.type.startsWith("module.");

const rowsOf = <T>(app: App, method: string, vm: string) =>
  app.rpc.call<{ rows: T[] }>(method, { vm }).then((r) => r.rows);

export function processTable(app: App, vm: string, kill: (p: Proc) => void): Listing {
  let procs: Proc[] = [];
  let threads = new Map<number, number>();
  const columns: Column<Proc>[] = [
    { key: "pid", label: "pid", numeric: true, value: (p) => p.pid },
    { key: "ppid", label: "ppid", numeric: true, value: (p) => p.ppid },
    { key: "uid", label: "user (uid)", numeric: true, value: (p) => p.uid ?? "" },
    { key: "state", label: "state", value: (p) => p.state },
    { key: "threads", label: "threads", numeric: true, value: (p) => threads.get(p.pid) ?? 1 },
    { key: "comm", label: "comm", value: (p) => p.comm },
    { key: "cmdline", label: "command line", value: (p) => p.cmdline },
    {
      key: "actions",
      label: "actions",
      value: () => "",
      // Kernel threads (no command line) have no memory map of their own and ignore signals.
      cell: (p) =>
        p.cmdline === ""
          ? el("span", {})
          : el(
              "span",
              { class: "actions" },
              el("a", { href: vmHash(vm, "maps", p.pid), "aria-label": `memory map of ${p.pid}` }, "maps"),
              el(
                "a",
                { href: vmHash(vm, "memory", "virt", p.pid), "aria-label": `memory of ${p.pid}` },
                "memory",
              ),
              el(
                "button",
                { type: "button", class: "danger", "data-action": "kill", onclick: () => kill(p) },
                "Kill…",
              ),
            ),
    },
  ];
  const table = new DataTable<Proc>(
    "processes",
    columns,
    (p) => String(p.pid),
    (p) => (p.warnings?.length ? "warn" : ""),
  );
  return {
    root: table.root,
    async refresh() {
      const [ps, ts] = await Promise.all([
        rowsOf<Proc>(app, "linux.ps", vm),
        rowsOf<Thread>(app, "linux.threads", vm),
      ]);
      threads = new Map();
      for (const t of ts) threads.set(t.tgid, (threads.get(t.tgid) ?? 0) + 1);
      procs = ps;
      table.update(procs);
    },
    watches: isProcEvent,
    applyEvent(e) {
      if (e.thread === true || e.pid === undefined) return;
      if (e.type === "process.create" && !procs.some((p) => p.pid === e.pid)) {
        const born: Proc = {
          pid: e.pid,
          tgid: e.pid,
          ppid: e.ppid ?? 0,
          uid: null,
          state: "R",
          comm: e.comm ?? "",
          cmdline: "",
        };
        procs = [...procs, born];
        table.update(procs);
      }
    },
  };
}

export function treeView(app: App, vm: string): Listing {
  const list = el("ul", { class: "tree", "aria-label": "process tree" });
  return {
    root: el("section", { class: "listing" }, list),
    async refresh() {
      const rows = await rowsOf<TreeLine>(app, "linux.pstree", vm);
      const lines = rows.map((r) =>
        el("li", { "data-key": r.pid }, el("a", { href: vmHash(vm, "maps", r.pid) }, r.text)),
      );
      keepingFocus(list, () => list.replaceChildren(...lines));
    },
    watches: isProcEvent,
  };
}

export function threadTable(app: App, vm: string): Listing {
  const table = new DataTable<Thread>(
    "threads",
    [
      { key: "tid", label: "tid", numeric: true, value: (t) => t.tid },
      { key: "tgid", label: "tgid", numeric: true, value: (t) => t.tgid },
      { key: "ppid", label: "ppid", numeric: true, value: (t) => t.ppid },
      { key: "state", label: "state", value: (t) => t.state },
      { key: "comm", label: "comm", value: (t) => t.comm },
    ],
    (t) => String(t.tid),
  );
  return {
    root: table.root,
    async refresh() {
      table.update(await rowsOf<Thread>(app, "linux.threads", vm));
    },
    watches: isProcEvent,
  };
}

export function moduleTable(app: App, vm: string): Listing {
  const table = new DataTable<Module>(
    "modules",
    [
      { key: "name", label: "name", value: (m) => m.name },
      { key: "base", label: "base", value: (m) => m.base },
      {
        key: "size",
        label: "size",
        numeric: true,
        value: (m) => m.size,
        cell: (m) => el("span", { title: bytesText(m.size) }, m.size),
      },
      { key: "state", label: "state", value: (m) => m.state },
    ],
    (m) => m.name,
  );
  return {
    root: table.root,
    async refresh() {
      table.update(await rowsOf<Module>(app, "linux.lsmod", vm));
    },
    watches: isModuleEvent,
  };
}

export function mapsTable(app: App, vm: string, pid: number): Listing {
  const title = el("h2", {}, `Memory map of pid ${pid}`);
  const table = new DataTable<MapRow>(
    "mappings",
    [
      {
        key: "start",
        label: "start",
        value: (m) => m.start,
        cell: (m) =>
          el("a", { href: vmHash(vm, "memory", "virt", pid, m.start), title: "show these bytes" }, m.start),
      },
      { key: "end", label: "end", value: (m) => m.end },
      { key: "perms", label: "perms", value: (m) => m.perms },
      { key: "offset", label: "offset", value: (m) => m.offset },
      { key: "dev", label: "dev", value: (m) => m.dev },
      { key: "inode", label: "inode", value: (m) => m.inode },
      { key: "path", label: "path", value: (m) => m.path },
    ],
    (m) => m.start,
  );
  return {
    root: el("section", {}, title, table.root),
    async refresh() {
      const ps = await rowsOf<Proc>(app, "linux.ps", vm);
      const p = ps.find((x) => x.pid === pid);
      title.textContent = p ? `Memory map of pid ${pid} (${p.comm})` : `Memory map of pid ${pid}`;
      table.update((await app.rpc.call<{ rows: MapRow[] }>("linux.maps", { vm, pid })).rows);
    },
    watches: (e) => e.type === "process.exec" && e.pid === pid,
  };
}

interface CrossRow extends Proc {
  readonly listed: boolean;
}

/** linux.pids (the PID namespace) against linux.ps (the task list): what only the first has is hidden. */
export function hiddenView(app: App, vm: string): Listing {
  const summary = el("p", { class: "summary", role: "status" });
  const table = new DataTable<CrossRow>(
    "tasks by PID namespace",
    [
      { key: "pid", label: "pid", numeric: true, value: (p) => p.pid },
      { key: "ppid", label: "ppid", numeric: true, value: (p) => p.ppid },
      { key: "comm", label: "comm", value: (p) => p.comm },
      { key: "listed", label: "in task list", value: (p) => (p.listed ? "yes" : "NO: hidden") },
      { key: "cmdline", label: "command line", value: (p) => p.cmdline },
    ],
    (p) => String(p.pid),
    (p) => (p.listed ? "" : "hidden-proc"),
  );
  return {
    root: el("section", {}, summary, table.root),
    async refresh() {
      const [ns, ps] = await Promise.all([
        rowsOf<Proc>(app, "linux.pids", vm),
        rowsOf<Proc>(app, "linux.ps", vm),
      ]);
      const listed = new Set(ps.map((p) => p.pid));
      const rows = ns.map((p) => ({ ...p, listed: listed.has(p.pid) }));
      const hidden = rows.filter((r) => !r.listed);
      summary.textContent =
        hidden.length === 0
          ? `No hidden process: all ${rows.length} tasks of the PID namespace are in the task list.`
          : `${hidden.length} hidden: in the PID namespace but not in the task list (${hidden.map((h) => `${h.pid} ${h.comm}`).join(", ")}).`;
      summary.className = hidden.length === 0 ? "summary" : "summary alert";
      table.update(rows);
    },
    watches: isProcEvent,
  };
}
