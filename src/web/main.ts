/**
 * The dashboard's entry: the connection, the disconnected banner, notices, and hash routing
 * (#/ the VM list, #/vm/NAME/VIEW/… a VM's page, so each can be bookmarked and shared).
 */
import type { App, View } from "./app.js";
import { el } from "./dom.js";
import { type Connection, RpcClient, describeFailure } from "./rpc.js";
import type { VmEvent } from "./types.js";
import { type VmPage, vmPage } from "./vm-page.js";
import { vmListView } from "./vms.js";

const banner = document.getElementById("banner") as HTMLElement;
const notices = document.getElementById("notices") as HTMLElement;
const main = document.getElementById("main") as HTMLElement;

function notify(message: string, kind: "error" | "ok" = "error"): void {
  const close = el("button", { type: "button", "aria-label": "dismiss", onclick: () => item.remove() }, "×");
  const item = el(
    "li",
    { class: kind, role: kind === "error" ? "alert" : "status" },
    el("span", {}, message),
    close,
  );
  notices.prepend(item);
  while (notices.children.length > 5) notices.lastElementChild?.remove();
  if (kind === "ok") setTimeout(() => item.remove(), 8000);
}

let view: View | undefined;

function route(): { vm?: string; view: string; args: string[] } {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "vm" && parts[1] !== undefined)
    return { vm: parts[1], view: parts[2] ?? "processes", args: parts.slice(3) };
  return { view: "vms", args: [] };
}

function mount(fresh = false): void {
  if (rpc.state !== "open") return;
  const r = route();
  if (!fresh && r.vm !== undefined && (view as VmPage | undefined)?.vm === r.vm) {
    (view as VmPage).show(r.view, r.args);
    return;
  }
  view?.unmount();
  if (r.vm !== undefined) {
    const page = vmPage(app, r.vm);
    page.show(r.view, r.args);
    view = page;
    document.title = `${r.vm} · vmsight`;
  } else {
    view = vmListView(app);
    void view.refresh().catch((e) => notify(describeFailure(e)));
    document.title = "vmsight";
  }
  main.replaceChildren(view.root);
}

let failures = 0;
function onState(state: Connection): void {
  document.body.dataset.connection = state;
  if (state === "open") {
    failures = 0;
    banner.hidden = true;
    return;
  }
  failures++;
  banner.hidden = false;
  banner.textContent = "Disconnected from the server: reconnecting…";
  // A server that came back with a new token refuses this page's cookie: say so.
  if (failures === 3)
    void fetch("/session").then(
      (r) => {
        if (r.status === 401)
          banner.textContent =
            "The server no longer accepts this session: open the dashboard URL it printed.";
      },
      () => {},
    );
}

const rpc = new RpcClient(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`, {
  onOpen: () => mount(true),
  onState,
  onEvent: (e: VmEvent) => view?.onEvent?.(e),
  onEnded: (sub, error) => {
    if (error) notify(`an event subscription ended: ${describeFailure(error)}`);
    view?.onEnded?.(sub);
  },
});
const app: App = { rpc, notify };

window.addEventListener("hashchange", () => mount());
// "/" focuses the first filter box, as in many listings.
window.addEventListener("keydown", (e) => {
  if (e.key !== "/" || (e.target as HTMLElement | null)?.closest("input, select, textarea")) return;
  const box = main.querySelector<HTMLInputElement>("input[type=search]");
  if (box) {
    e.preventDefault();
    box.focus();
  }
});
