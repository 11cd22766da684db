/**
 * The memory viewer: physical memory, or virtual memory through a process's page tables, as hex
 * and ASCII. Each aligned 8-byte word is a button that follows it as a pointer; Back returns.
 */
import type { App } from "./app.js";
import { el } from "./dom.js";
import type { Listing } from "./process-views.js";
import { describeFailure } from "./rpc.js";
import type { Proc } from "./types.js";

const LINE = 16;

export interface MemoryTarget {
  readonly space: "phys" | "virt";
  readonly pid?: number;
  readonly address?: string;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** The little-endian 64-bit word at `at` as "0x…". */
function wordAt(bytes: Uint8Array, at: number): string {
  let v = 0n;
  for (let i = 7; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i] ?? 0);
  return `0x${v.toString(16)}`;
}

export function memoryView(app: App, vm: string, start: MemoryTarget): Listing {
  const space = el(
    "select",
    { "aria-label": "address space", name: "space" },
    el("option", { value: "phys" }, "physical"),
    el("option", { value: "virt" }, "virtual, in process"),
  );
  space.value = start.space;
  const pid = el("select", { "aria-label": "process", name: "pid" });
  const address = el("input", {
    name: "address",
    "aria-label": "address",
    value: start.address ?? (start.space === "phys" ? "0x100000" : ""),
    placeholder: "0x…",
    spellcheck: "false",
  });
  const length = el(
    "select",
    { "aria-label": "length", name: "length" },
    ...[128, 256, 512, 1024, 4096].map((n) => el("option", { value: n }, `${n} bytes`)),
  );
  length.value = "256";
  const history: string[] = [];
  const back = el("button", { type: "button", disabled: true, onclick: () => goBack() }, "Back");
  const out = el("div", { class: "hexdump", "aria-live": "polite" });
  const form = el(
    "form",
    {
      class: "memform",
      onsubmit: (ev: Event) => {
        ev.preventDefault();
        void read();
      },
    },
    space,
    pid,
    address,
    length,
    el("button", { type: "submit", "data-action": "read" }, "Read"),
    back,
  );
  const syncPid = () => {
    pid.hidden = space.value !== "virt";
  };
  space.addEventListener("change", syncPid);
  const follow = (to: string) => {
    history.push(address.value);
    back.disabled = false;
    address.value = to;
    void read();
  };
  const goBack = () => {
    const prev = history.pop();
    back.disabled = history.length === 0;
    if (prev !== undefined) {
      address.value = prev;
      void read();
    }
  };
  const render = (base: bigint, bytes: Uint8Array) => {
    const lines: HTMLElement[] = [];
    for (let off = 0; off < bytes.length; off += LINE) {
      const words: HTMLElement[] = [];
      for (let w = off; w < Math.min(off + LINE, bytes.length); w += 8) {
        const text = Array.from(bytes.subarray(w, Math.min(w + 8, bytes.length)), hex2).join(" ");
        const target = wordAt(bytes, w);
        words.push(
          w + 8 <= bytes.length
            ? el(
                "button",
                { type: "button", class: "word", title: `follow ${target}`, onclick: () => follow(target) },
                text,
              )
            : el("span", { class: "word" }, text),
        );
      }
      const ascii = Array.from(bytes.subarray(off, off + LINE), (b) =>
        b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".",
      ).join("");
      lines.push(
        el(
          "div",
          { class: "hexline" },
          el("span", { class: "addr" }, `0x${(base + BigInt(off)).toString(16).padStart(16, "0")}`),
          ...words,
          el("span", { class: "ascii" }, ascii),
        ),
      );
    }
    out.replaceChildren(...lines);
  };
  const read = async () => {
    const at = address.value.trim();
    if (!/^0x[0-9a-f]{1,16}$/i.test(at)) {
      out.replaceChildren(el("p", { class: "error" }, `"${at}" is not an address: write it as 0x… (hex)`));
      return;
    }
    const params: Record<string, unknown> = {
      vm,
      address: at,
      length: Number(length.value),
      space: space.value,
    };
    if (space.value === "virt") {
      if (pid.value === "") {
        out.replaceChildren(el("p", { class: "error" }, "choose a process"));
        return;
      }
      params.pid = Number(pid.value);
    }
    try {
      const r = await app.rpc.call<{ address: string; bytes: string }>("memory.read", params);
      const bytes = new Uint8Array(r.bytes.length / 2);
      for (let i = 0; i < bytes.length; i++) bytes[i] = Number.parseInt(r.bytes.slice(2 * i, 2 * i + 2), 16);
      render(BigInt(r.address), bytes);
    } catch (e) {
      out.replaceChildren(el("p", { class: "error" }, describeFailure(e)));
    }
  };
  syncPid();
  let first = true;
  return {
    root: el("section", { class: "memory" }, el("h2", {}, "Memory"), form, out),
    async refresh() {
      if (!first) return;
      first = false;
      const ps = (await app.rpc.call<{ rows: Proc[] }>("linux.ps", { vm })).rows.filter(
        (p) => p.cmdline !== "",
      );
      pid.replaceChildren(...ps.map((p) => el("option", { value: p.pid }, `${p.pid} ${p.comm}`)));
      if (start.pid !== undefined) pid.value = String(start.pid);
      if (address.value === "" && space.value === "virt") {
        const p = Number(pid.value);
        if (Number.isInteger(p)) {
          const maps = await app.rpc.call<{ rows: { start: string }[] }>("linux.maps", { vm, pid: p });
          address.value = maps.rows[0]?.start ?? "";
        }
      }
      if (address.value !== "") await read();
    },
    watches: () => false,
  };
}
