/**
 * The live event stream of one VM: the events kept (the last MAX_KEPT), filters by kind and
 * text, a pause that freezes the list (events keep arriving and are shown on resume), and
 * events per second over the last minute as a small SVG bar chart.
 */
import { el } from "./dom.js";
import type { Listing } from "./process-views.js";
import type { VmEvent } from "./types.js";

const MAX_KEPT = 2000;
const SHOWN = 300;
const CHART_SECONDS = 60;

export interface Stamped {
  readonly at: number;
  readonly e: VmEvent;
}

/** The events of one VM since its page opened, and how many arrived in each second. */
export class EventLog {
  readonly kept: Stamped[] = [];
  private readonly perSecond = new Map<number, number>();
  private readonly listeners = new Set<() => void>();

  push(e: VmEvent): void {
    const at = Date.now();
    this.kept.push({ at, e });
    if (this.kept.length > MAX_KEPT) this.kept.splice(0, this.kept.length - MAX_KEPT);
    const s = Math.floor(at / 1000);
    this.perSecond.set(s, (this.perSecond.get(s) ?? 0) + 1);
    for (const old of this.perSecond.keys()) if (old < s - CHART_SECONDS) this.perSecond.delete(old);
    for (const l of this.listeners) l();
  }

  /** Counts for the last CHART_SECONDS whole seconds, oldest first. */
  rates(now = Date.now()): number[] {
    const s = Math.floor(now / 1000);
    return Array.from(
      { length: CHART_SECONDS },
      (_, i) => this.perSecond.get(s - CHART_SECONDS + 1 + i) ?? 0,
    );
  }

  listen(l: () => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}

export type EventKind = "process" | "module" | "syscall";

export function kindOf(e: VmEvent): EventKind | undefined {
  if (e.type.startsWith("process.")) return "process";
  if (e.type.startsWith("module.")) return "module";
  if (e.type === "syscall") return "syscall";
  return undefined;
}

function detail(e: VmEvent): string {
  switch (e.type) {
    case "process.create":
      return `${e.thread ? "thread" : "process"} created by ${e.ppid}`;
    case "process.exec":
      return `exec ${String(e.filename ?? "")} ${Array.isArray(e.argv) ? e.argv.join(" ") : ""}`;
    case "process.exit":
      return e.signal !== null && e.signal !== undefined
        ? `killed by signal ${e.signal}`
        : `exit ${String(e.exitCode)}`;
    case "module.load":
      return `${String(e.name)} at ${String(e.base)} (${String(e.size)} bytes)`;
    case "module.unload":
      return `${String(e.name)} at ${String(e.base)}`;
    case "syscall":
      return `${String(e.name)}(${Array.isArray(e.args) ? e.args.join(", ") : ""}) = ${String(e.ret)}`;
    default:
      return "";
  }
}

function chart(rates: readonly number[]): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const w = 240;
  const h = 40;
  const max = Math.max(1, ...rates);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "rate-chart");
  svg.setAttribute("role", "img");
  const last = rates[rates.length - 1] ?? 0;
  svg.setAttribute("aria-label", `events per second over the last minute; max ${max}, last ${last}`);
  const bw = w / rates.length;
  rates.forEach((r, i) => {
    const bh = (r / max) * (h - 2);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(i * bw));
    rect.setAttribute("y", String(h - bh));
    rect.setAttribute("width", String(Math.max(1, bw - 1)));
    rect.setAttribute("height", String(bh));
    svg.append(rect);
  });
  return svg;
}

export function eventsView(
  log: EventLog,
  syscalls: { readonly on: boolean; set(on: boolean): Promise<void> },
): Listing & { dispose(): void } {
  const kinds: Record<EventKind, HTMLInputElement> = {
    process: el("input", { type: "checkbox", checked: true, name: "process" }),
    module: el("input", { type: "checkbox", checked: true, name: "module" }),
    syscall: el("input", { type: "checkbox", checked: syscalls.on, name: "syscall" }),
  };
  const text = el("input", {
    type: "search",
    placeholder: "filter pid or comm",
    "aria-label": "filter events",
  });
  let paused = false;
  const pause = el(
    "button",
    {
      type: "button",
      "aria-pressed": "false",
      "data-action": "pause-stream",
      onclick: () => {
        paused = !paused;
        pause.textContent = paused ? "Resume stream" : "Pause stream";
        pause.setAttribute("aria-pressed", String(paused));
        render();
      },
    },
    "Pause stream",
  );
  const rate = el("div", { class: "rate" });
  const list = el("ol", { class: "events", "aria-label": "events, newest first" });
  const status = el("span", { class: "count", "aria-live": "polite" });
  const render = () => {
    const needle = text.value.trim().toLowerCase();
    const shown = log.kept.filter(({ e }) => {
      const k = kindOf(e);
      if (k === undefined || !kinds[k].checked) return false;
      return needle === "" || `${e.pid ?? ""} ${e.comm ?? ""}`.toLowerCase().includes(needle);
    });
    status.textContent = `${shown.length} events${paused ? " (paused)" : ""}`;
    if (paused) return;
    list.replaceChildren(
      ...shown
        .slice(-SHOWN)
        .reverse()
        .map(({ at, e }) =>
          el(
            "li",
            { "data-type": e.type, "data-pid": e.pid ?? "" },
            el("time", {}, new Date(at).toLocaleTimeString()),
            el("span", { class: "etype" }, e.type),
            el("span", { class: "epid" }, e.pid ?? ""),
            el("span", { class: "ecomm" }, e.comm ?? ""),
            el("span", { class: "edetail" }, detail(e)),
          ),
        ),
    );
  };
  const drawRate = () => {
    const r = log.rates();
    rate.replaceChildren(chart(r), el("span", {}, `${r[r.length - 2] ?? 0} events/s`));
  };
  for (const k of ["process", "module"] as const) kinds[k].addEventListener("change", render);
  kinds.syscall.addEventListener("change", () => {
    void syscalls.set(kinds.syscall.checked).finally(render);
  });
  text.addEventListener("input", render);
  let pending = false;
  const unlisten = log.listen(() => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  });
  const timer = setInterval(drawRate, 1000);
  const label = (k: EventKind, note = "") => el("label", {}, kinds[k], ` ${k}${note}`);
  const root = el(
    "section",
    { class: "event-stream" },
    el(
      "div",
      { class: "toolbar" },
      label("process"),
      label("module"),
      label("syscall", " (heavy: every call stops a vCPU)"),
      text,
      pause,
      status,
    ),
    rate,
    list,
  );
  render();
  drawRate();
  return {
    root,
    async refresh() {
      render();
    },
    watches: () => false,
    dispose() {
      unlisten();
      clearInterval(timer);
    },
  };
}
