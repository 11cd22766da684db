/**
 * JSON text in which bigints are written as exact integers. Kernel addresses exceed 2^53, so a
 * file for readers with 64-bit integers (Python's json, Volatility) must never pass them through
 * a Number; JSON.stringify refuses bigints outright.
 */
export function exactJson(value: unknown, indent = ""): string {
  const out: string[] = [];
  write(value, indent, "", out);
  return out.join("");
}

function write(value: unknown, indent: string, pad: string, out: string[]): void {
  if (typeof value === "bigint") {
    out.push(value.toString());
    return;
  }
  if (value === null || typeof value !== "object") {
    out.push(JSON.stringify(value) ?? "null");
    return;
  }
  const inner = pad + indent;
  const nl = indent === "" ? "" : `\n${inner}`;
  const close = indent === "" ? "" : `\n${pad}`;
  const sep = indent === "" ? ":" : ": ";
  if (Array.isArray(value)) {
    if (value.length === 0) return void out.push("[]");
    out.push("[");
    value.forEach((v, i) => {
      out.push(i === 0 ? nl : `,${nl}`);
      write(v, indent, inner, out);
    });
    out.push(`${close}]`);
    return;
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined);
  if (entries.length === 0) return void out.push("{}");
  out.push("{");
  entries.forEach(([k, v], i) => {
    out.push(`${i === 0 ? nl : `,${nl}`}${JSON.stringify(k)}${sep}`);
    write(v, indent, inner, out);
  });
  out.push(`${close}}`);
}
