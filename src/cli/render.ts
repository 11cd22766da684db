/** Terminal and JSON renderers. Commands return typed rows; only this file decides how they look. */

export type Cell = string | number | bigint | boolean | null | undefined;

export { toJson } from "../commands/wire.js";

function cellText(v: Cell): string {
  if (v === null || v === undefined) return "-";
  if (typeof v === "bigint") return `0x${v.toString(16)}`;
  return String(v);
}

/** Left-aligned columns; numeric columns right-aligned. */
export function table<T extends object>(rows: readonly T[], columns: readonly (keyof T & string)[]): string {
  const cell = (r: T, c: keyof T & string) => r[c] as Cell;
  const text = rows.map((r) => columns.map((c) => cellText(cell(r, c))));
  const widths = columns.map((c, i) => Math.max(c.length, ...text.map((t) => t[i]!.length)));
  const numeric = columns.map((c) => rows.length > 0 && rows.every((r) => typeof cell(r, c) === "number"));
  const line = (cells: readonly string[]) =>
    cells
      .map((t, i) => (numeric[i] ? t.padStart(widths[i]!) : t.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...text.map(line)].join("\n");
}

/** Classic 16-bytes-per-line hex dump, addresses from `base`. */
export function hexdump(bytes: Uint8Array, base: bigint): string {
  const lines: string[] = [];
  for (let off = 0; off < bytes.length; off += 16) {
    const chunk = bytes.subarray(off, off + 16);
    const hexPart = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const ascii = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${(base + BigInt(off)).toString(16).padStart(16, "0")}  ${hexPart.padEnd(47)}  |${ascii}|`);
  }
  return lines.join("\n");
}
