import { type FindingKind, type IntegrityFinding, integrityFindings } from "../os/linux/integrity.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import type { Wire } from "./wire.js";

export type { FindingKind, IntegrityFinding };

/** `vmsight check`: the findings only, syscall hooks first, then hidden modules, then hidden tasks. */
export function checkRows(k: KernelInfo): IntegrityFinding[] {
  return integrityFindings(k);
}

const NOUNS: Record<FindingKind, [string, string]> = {
  "syscall-hook": ["altered syscall-table entry", "altered syscall-table entries"],
  "hidden-module": ["hidden module", "hidden modules"],
  "hidden-task": ["hidden process", "hidden processes"],
};

/** One line per finding, then a summary line. */
export function describeCheck(rows: readonly (IntegrityFinding | Wire<IntegrityFinding>)[]): string {
  if (rows.length === 0)
    return "clean: syscall tables point into kernel text, no hidden modules, no hidden processes";
  const counts = Object.entries(NOUNS).flatMap(([kind, [one, many]]) => {
    const n = rows.filter((r) => r.kind === kind).length;
    return n === 0 ? [] : [`${n} ${n === 1 ? one : many}`];
  });
  return [...rows.map((r) => `${r.kind}  ${r.what}`), `${rows.length} findings: ${counts.join(", ")}`].join(
    "\n",
  );
}
