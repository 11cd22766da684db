/**
 * One VM's page (#/vm/NAME/VIEW…): its run state with pause/resume, tabs for each view, and the
 * subscriptions that keep them live. Process and module events refresh the shown view within
 * REFRESH_MS; the event log survives switching tabs.
 */
import { type App, type View, vmHash } from "./app.js";
import { el } from "./dom.js";
import { EventLog, eventsView, kindOf } from "./events-view.js";
import { memoryView } from "./memory-view.js";
import {
  type Listing,
  hiddenView,
  mapsTable,
  moduleTable,
  processTable,
  threadTable,
  treeView,
} from "./process-views.js";
import { describeFailure } from "./rpc.js";
import type { KillResult, Proc, Status, VmEvent } from "./types.js";
import { runStateButton } from "./vms.js";

const REFRESH_MS = 250;
const TRACED = ["process.create", "process.exec", "process.exit", "module.load", "module.unload"];

export const TABS = [
  ["processes", "Processes"],
  ["tree", "Tree"],
  ["threads", "Threads"],
  ["modules", "Modules"],
  ["hidden", "Hidden processes"],
  ["memory", "Memory"],
  ["events", "Events"],
] as const;

function outcomeText(r: KillResult): string {
  const after = (ms: number | undefined) => (ms === undefined ? "" : ` after ${ms} ms`);
  switch (r.outcome) {
    case "gone":
      return `delivered; exited and reaped${after(r.goneAfterMs)}`;
    case "zombie":
      return `delivered; exited${after(r.exitedAfterMs)}, not reaped yet by its parent`;
    case "not-delivered":
      return "not delivered";
    default:
      return `delivered; now ${r.outcome}`;
  }
}

export interface VmPage extends View {
  readonly vm: string;
  show(view: string, args: readonly string[]): void;
}

export function vmPage(app: App, vm: string): VmPage {
  const log = new EventLog();
  const stateLine = el("span", { class: "vmstate", "aria-live": "polite" }, "…");
  const stateAction = el("span", {});
  const tabs = el("nav", { class: "tabs", "aria-label": "views" });
  const content = el("div", { class: "content" });
  const dialog = killDialog();
  const root = el(
    "div",
    { class: "page" },
    el(
      "header",
      { class: "vmhead" },
      el("a", { href: "#/", class: "up" }, "← VMs"),
      el("h1", {}, vm),
      stateLine,
      stateAction,
      el(
        "button",
        {
          type: "button",
          "data-action": "refresh",
          onclick: () => {
            void status();
            void refreshNow();
          },
        },
        "Refresh",
      ),
    ),
    tabs,
    content,
    dialog.root,
  );
  let listing: (Listing & { dispose?(): void }) | undefined;
  let current = "";
  let traceSub: string | undefined;
  let stateSub: string | undefined;
  let syscallSub: string | undefined;
  let alive = true;

  const subscribe = async (types: string[]) =>
    (await app.rpc.call<{ subscription: string }>("events.subscribe", { vm, types })).subscription;
  const unsubscribe = async (s: string | undefined) => {
    if (s) await app.rpc.call("events.unsubscribe", { subscription: s }).catch(() => {});
  };
  const syscalls = {
    get on() {
      return syscallSub !== undefined;
    },
    async set(on: boolean) {
      if (on && !syscallSub)
        syscallSub = await subscribe(["syscall"]).catch((e) => void app.notify(describeFailure(e)));
      if (!on && syscallSub) {
        const s = syscallSub;
        syscallSub = undefined;
        await unsubscribe(s);
      }
    },
  };

  const status = async () => {
    try {
      const s = await app.rpc.call<Status>("vm.get_info", { vm });
      stateLine.textContent = [s.status, s.vcpus && `${s.vcpus} vCPU`, s.qemuPid && `QEMU pid ${s.qemuPid}`]
        .filter(Boolean)
        .join(" · ");
      stateAction.replaceChildren(runStateButton(app, vm, s.running, () => void status()));
    } catch (e) {
      stateLine.textContent = describeFailure(e);
      stateAction.replaceChildren();
    }
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  const refreshSoon = () => {
    if (timer !== undefined) return;
    timer = setTimeout(() => {
      timer = undefined;
      void refreshNow();
    }, REFRESH_MS);
  };
  // Refreshes run one after the other, so the last one shown is the last one asked for; one
  // waiting to start is enough (it reads the guest when it starts).
  let chain: Promise<void> = Promise.resolve();
  let queued = false;
  const refreshNow = (): Promise<void> => {
    if (queued) return chain;
    queued = true;
    chain = chain.then(async () => {
      queued = false;
      const l = listing;
      if (!l) return;
      const startedAt = Date.now();
      try {
        await l.refresh();
        // When the data shown was read (tests wait for a refresh that began after an action).
        if (l === listing) content.dataset.updated = String(startedAt);
      } catch (e) {
        if (l === listing) app.notify(describeFailure(e));
      }
    });
    return chain;
  };

  const kill = (p: Proc) => {
    dialog.ask(p, async (signal) => {
      try {
        const r = await app.rpc.call<KillResult>("linux.kill", { vm, pid: p.pid, signal });
        const text = `SIG${signal} → pid ${p.pid} (${p.comm}): ${outcomeText(r)}`;
        app.notify(text, r.expected ? "ok" : "error");
        return text;
      } catch (e) {
        const text = `kill of pid ${p.pid} (${p.comm}) failed: ${describeFailure(e)}`;
        app.notify(text);
        return text;
      } finally {
        refreshSoon();
      }
    });
  };

  const make = (view: string, args: readonly string[]): Listing & { dispose?(): void } => {
    switch (view) {
      case "tree":
        return treeView(app, vm);
      case "threads":
        return threadTable(app, vm);
      case "modules":
        return moduleTable(app, vm);
      case "hidden":
        return hiddenView(app, vm);
      case "maps":
        return mapsTable(app, vm, Number(args[0]));
      case "memory": {
        const [space, a, b] = args;
        if (space === "virt")
          return memoryView(app, vm, {
            space: "virt",
            ...(a ? { pid: Number(a) } : {}),
            ...(b ? { address: b } : {}),
          });
        return memoryView(app, vm, { space: "phys", ...(a ? { address: a } : {}) });
      }
      case "events":
        return eventsView(log, syscalls);
      default:
        return processTable(app, vm, kill);
    }
  };

  const show = (view: string, args: readonly string[]) => {
    listing?.dispose?.();
    current = view;
    tabs.replaceChildren(
      ...TABS.map(([id, label]) =>
        el(
          "a",
          { href: vmHash(vm, id), "aria-current": id === view ? "page" : undefined, "data-tab": id },
          label,
        ),
      ),
    );
    listing = make(view, args);
    content.dataset.view = view;
    delete content.dataset.updated;
    content.replaceChildren(listing.root);
    void refreshNow();
  };

  // Run-state events first: a state read before them could miss the RESUME that follows it.
  const start = async () => {
    stateSub = await subscribe(["vm.state"]);
    await status();
    traceSub = await subscribe(TRACED);
  };
  void start().catch((e) => app.notify(describeFailure(e)));

  return {
    vm,
    root,
    show,
    async refresh() {
      await status();
      await refreshNow();
    },
    onEvent(e: VmEvent) {
      if (e.vm !== vm) return;
      if (e.type === "vm.state") return void status();
      if (kindOf(e) !== undefined) log.push(e);
      if (listing?.watches(e)) {
        listing.applyEvent?.(e);
        refreshSoon();
      }
    },
    onEnded(subscription: string) {
      if (subscription !== traceSub) return;
      // The live views depend on it: ask again (the server retries attaching to the guest).
      traceSub = undefined;
      setTimeout(() => {
        if (alive && traceSub === undefined)
          void subscribe(TRACED).then(
            (s) => {
              traceSub = s;
            },
            (e) => app.notify(describeFailure(e)),
          );
      }, 2000);
    },
    unmount() {
      alive = false;
      listing?.dispose?.();
      if (timer !== undefined) clearTimeout(timer);
      for (const s of [traceSub, stateSub, syscallSub]) void unsubscribe(s);
      void current;
    },
  };
}

/** The confirmation that names the process, then shows what came of the kill. */
function killDialog() {
  const title = el("h2", { id: "kill-title" });
  const signal = el(
    "select",
    { "aria-label": "signal", name: "signal" },
    ...["KILL", "TERM", "STOP", "CONT"].map((s) => el("option", { value: s }, `SIG${s}`)),
  );
  const result = el("p", { class: "kill-result", role: "status" });
  const confirm = el("button", { type: "button", class: "danger", "data-action": "confirm-kill" }, "Kill");
  const cancel = el("button", { type: "button", "data-action": "cancel-kill" }, "Cancel");
  const root = el(
    "dialog",
    { "aria-labelledby": "kill-title", class: "kill" },
    title,
    el("label", {}, "Signal ", signal),
    result,
    el("div", { class: "buttons" }, confirm, cancel),
  );
  cancel.addEventListener("click", () => root.close());
  let go: ((signal: string) => Promise<string>) | undefined;
  confirm.addEventListener("click", async () => {
    if (!go) return;
    const run = go;
    go = undefined;
    confirm.disabled = true;
    result.textContent = "sending…";
    result.textContent = await run(signal.value);
    cancel.textContent = "Close";
    cancel.focus();
  });
  return {
    root,
    ask(p: Proc, action: (signal: string) => Promise<string>) {
      title.textContent = `Kill pid ${p.pid} (${p.comm})?`;
      signal.value = "KILL";
      result.textContent = "";
      confirm.disabled = false;
      cancel.textContent = "Cancel";
      go = action;
      root.showModal();
      cancel.focus();
    },
  };
}
