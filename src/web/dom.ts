/** A few DOM helpers and the sortable, filterable table every listing uses. */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

/** An element with attributes (`on…` as listeners, booleans as presence) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  append(e, children);
  return e;
}

function append(e: Element, children: readonly Child[]): void {
  for (const c of children) {
    if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  }
}

export function clear(e: Element, ...children: Child[]): void {
  e.replaceChildren();
  append(e, children);
}

/** A cell's text: a field the server did not send shows empty, never "undefined". */
const text = (v: string | number | null | undefined) => (v === null || v === undefined ? "" : String(v));

export interface Column<T> {
  readonly key: string;
  readonly label: string;
  readonly value: (row: T) => string | number | null | undefined;
  readonly numeric?: boolean;
  /** A cell richer than its text (a link, a button). */
  readonly cell?: (row: T) => Node;
}

/**
 * A table whose header buttons sort (click again to reverse) and whose filter box keeps rows
 * with a cell containing the text. update() replaces the rows and keeps sort and filter.
 */
export class DataTable<T> {
  readonly root: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly count: HTMLElement;
  private readonly filter: HTMLInputElement;
  private rows: readonly T[] = [];
  private sortKey: string;
  private descending = false;

  constructor(
    private readonly name: string,
    private readonly columns: readonly Column<T>[],
    private readonly rowKey: (row: T) => string,
    private readonly rowClass: (row: T) => string = () => "",
  ) {
    this.sortKey = columns[0]?.key ?? "";
    this.filter = el("input", {
      type: "search",
      placeholder: `filter ${name}`,
      "aria-label": `filter ${name}`,
      class: "filter",
      oninput: () => this.render(),
    });
    this.count = el("span", { class: "count", "aria-live": "polite" });
    this.body = el("tbody");
    const head = el(
      "tr",
      {},
      ...columns.map((c) =>
        el(
          "th",
          { scope: "col", "data-col": c.key, class: c.numeric ? "num" : undefined },
          el("button", { type: "button", class: "sort", onclick: () => this.sortBy(c.key) }, c.label),
        ),
      ),
    );
    this.root = el(
      "section",
      { class: "listing", "data-table": name },
      el("div", { class: "toolbar" }, this.filter, this.count),
      el("div", { class: "scroll" }, el("table", {}, el("thead", {}, head), this.body)),
    );
  }

  private sortBy(key: string): void {
    this.descending = this.sortKey === key ? !this.descending : false;
    this.sortKey = key;
    this.render();
  }

  update(rows: readonly T[]): void {
    this.rows = rows;
    this.render();
  }

  private render(): void {
    const col = this.columns.find((c) => c.key === this.sortKey) ?? this.columns[0];
    const needle = this.filter.value.trim().toLowerCase();
    const shown = this.rows.filter(
      (r) => needle === "" || this.columns.some((c) => text(c.value(r)).toLowerCase().includes(needle)),
    );
    if (col) {
      const dir = this.descending ? -1 : 1;
      shown.sort((a, b) => {
        const x = col.value(a);
        const y = col.value(b);
        return (
          dir * (typeof x === "number" && typeof y === "number" ? x - y : text(x).localeCompare(text(y)))
        );
      });
    }
    for (const th of this.root.querySelectorAll("th")) {
      const on = th.dataset.col === this.sortKey;
      th.setAttribute("aria-sort", on ? (this.descending ? "descending" : "ascending") : "none");
    }
    const rows = shown.map((r) =>
      el(
        "tr",
        { "data-key": this.rowKey(r), class: this.rowClass(r) || undefined },
        ...this.columns.map((c) =>
          el(
            "td",
            { "data-col": c.key, class: c.numeric ? "num" : undefined },
            c.cell ? c.cell(r) : text(c.value(r)),
          ),
        ),
      ),
    );
    keepingFocus(this.body, () => this.body.replaceChildren(...rows));
    this.count.textContent =
      shown.length === this.rows.length
        ? `${this.rows.length} ${this.name}`
        : `${shown.length} of ${this.rows.length} ${this.name}`;
  }
}

const FOCUSABLE = "a[href], button, input, select, textarea";

/**
 * Runs `rebuild`, which replaces the keyed rows ([data-key]) of `container`, and gives the focus
 * back to the same control of the same row. Pushed events re-render a listing several times a
 * second: without this, a keyboard user's focused button would vanish under them and Tab would
 * start again from the top of the page.
 */
export function keepingFocus(container: Element, rebuild: () => void): void {
  const active = document.activeElement;
  const row = active && container.contains(active) ? active.closest<HTMLElement>("[data-key]") : null;
  const index = row ? Array.from(row.querySelectorAll(FOCUSABLE)).indexOf(active as Element) : -1;
  rebuild();
  if (!row || index < 0 || document.activeElement !== document.body) return;
  const again = Array.from(container.querySelectorAll<HTMLElement>("[data-key]")).find(
    (r) => r.dataset.key === row.dataset.key,
  );
  again?.querySelectorAll<HTMLElement>(FOCUSABLE)[index]?.focus();
}

/** "0x…" to a readable size. */
export function bytesText(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(0)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} B`;
}
