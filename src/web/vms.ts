/** The VM list: run state, kernel, KASLR slide, vCPUs, RAM and its read path; pause and resume. */
import { type App, type View, vmHash } from "./app.js";
import { DataTable, bytesText, el } from "./dom.js";
import { describeFailure } from "./rpc.js";
import type { Kernel, Status, VmEntry } from "./types.js";

interface VmRow {
  readonly name: string;
  readonly present: boolean;
  readonly status?: Status;
  readonly kernel?: Kernel;
  readonly error?: string;
}

export function runStateButton(app: App, vm: string, running: boolean, after: () => void): HTMLButtonElement {
  return el(
    "button",
    {
      type: "button",
      class: "action",
      "data-action": running ? "pause" : "resume",
      onclick: () =>
        app.rpc.call(running ? "vm.pause" : "vm.resume", { vm }).then(
          () => {
            app.notify(`${vm} ${running ? "paused" : "resumed"}`, "ok");
            after();
          },
          (e) => app.notify(describeFailure(e)),
        ),
    },
    running ? "Pause" : "Resume",
  );
}

/** How RAM is read, as vm.get_info says, and through what. */
function readPath(s: Status): string {
  if (typeof s.memoryPath !== "string") return "";
  return s.memoryAccess ? `${s.memoryAccess} (${s.memoryPath})` : s.memoryPath;
}

export function vmListView(app: App): View {
  let rows: VmRow[] = [];
  const refresh = async () => {
    const { vms } = await app.rpc.call<{ vms: VmEntry[] }>("vm.list");
    rows = await Promise.all(vms.map(describe));
    table.update(rows);
    watchAll();
  };
  const refreshStatus = async (vm: string) => {
    const row = rows.find((r) => r.name === vm);
    if (!row?.present) return refresh();
    const status = await app.rpc.call<Status>("vm.get_info", { vm });
    rows = rows.map((r) => (r.name === vm ? { ...r, status } : r));
    table.update(rows);
  };
  const describe = async (v: VmEntry): Promise<VmRow> => {
    if (!v.present) return { name: v.name, present: false };
    try {
      const [status, kernel] = await Promise.all([
        app.rpc.call<Status>("vm.get_info", { vm: v.name }),
        app.rpc.call<Kernel>("linux.kernel", { vm: v.name }).catch(() => undefined),
      ]);
      return { name: v.name, present: true, status, ...(kernel ? { kernel } : {}) };
    } catch (e) {
      return { name: v.name, present: true, error: describeFailure(e) };
    }
  };
  const table = new DataTable<VmRow>(
    "VMs",
    [
      {
        key: "name",
        label: "name",
        value: (r) => r.name,
        cell: (r) =>
          r.present ? el("a", { href: vmHash(r.name, "processes") }, r.name) : el("span", {}, r.name),
      },
      {
        key: "state",
        label: "run state",
        value: (r) => (r.present ? (r.status?.status ?? r.error ?? "…") : "gone"),
      },
      { key: "kernel", label: "kernel", value: (r) => r.kernel?.version ?? "" },
      { key: "slide", label: "KASLR slide", value: (r) => r.kernel?.slide ?? "" },
      { key: "vcpus", label: "vCPUs", numeric: true, value: (r) => r.status?.vcpus ?? 0 },
      { key: "ram", label: "RAM", value: (r) => (r.status ? bytesText(Number(r.status.ramSize)) : "") },
      { key: "path", label: "RAM read path", value: (r) => (r.status ? readPath(r.status) : "") },
      {
        key: "actions",
        label: "actions",
        value: () => "",
        cell: (r) =>
          r.status ? runStateButton(app, r.name, r.status.running, () => void refresh()) : el("span", {}),
      },
    ],
    (r) => r.name,
  );
  const subs = new Map<string, string>();
  let alive = true;
  // Guests that come and go ("*"), and each one's run-state changes (QMP events, no traps).
  const watch = async (vm: string) => {
    if (subs.has(vm)) return;
    subs.set(vm, "");
    const s = await app.rpc.call<{ subscription: string }>("events.subscribe", { vm, types: ["vm.state"] });
    if (!alive) return void app.rpc.call("events.unsubscribe", s).catch(() => {});
    subs.set(vm, s.subscription);
  };
  const watchAll = () => {
    for (const vm of ["*", ...rows.filter((r) => r.present).map((r) => r.name)])
      void watch(vm).catch((e) => app.notify(describeFailure(e)));
  };
  const root = el("div", { class: "page" }, el("h1", {}, "Virtual machines"), table.root);
  return {
    root,
    refresh,
    onEvent(e) {
      if (e.type !== "vm.state") return;
      // A VM that comes or goes changes the list. A run-state change only changes its row's
      // status: reading the kernel again would pause the guest for a snapshot, and that pause's
      // own STOP/RESUME would start another read, for ever.
      const membership = e.event === "APPEARED" || e.event === "VANISHED";
      void (membership ? refresh() : refreshStatus(e.vm)).catch((err) => app.notify(describeFailure(err)));
    },
    unmount() {
      alive = false;
      for (const subscription of subs.values())
        if (subscription) void app.rpc.call("events.unsubscribe", { subscription }).catch(() => {});
    },
  };
}
