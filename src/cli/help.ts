/**
 * The command list of `vmsight --help`, laid out for a terminal of `width` columns: a short
 * usage shares its line with the summary; a long one gets its own lines (wrapped at spaces)
 * and the summary follows underneath, in the same column as the others.
 */
import { COMMANDS } from "./commands.js";

export const HELP_WIDTH = 100;
const INDENT = "  ";
const SUMMARY_COLUMN = 26;

/** `vmsight --help`: no line wider than HELP_WIDTH columns. */
export function helpText(): string {
  return [
    "vmsight — see and steer a running Linux VM from outside",
    "",
    "usage: vmsight [--qmp SOCKET | --dump FILE] [--json] COMMAND [ARGS]",
    "",
    ...commandList(COMMANDS),
    "",
    "--qmp SOCKET attaches to any running QEMU through its QMP unix socket (nothing else needed).",
    "--dump FILE reads a memory image instead (QEMU ELF, LiME or raw; `vmsight dump` writes them).",
    "kernel, ps, threads, pstree, lsmod and maps take --system-map FILE to use a System.map or",
    "/proc/kallsyms instead of the symbols vmsight finds in guest memory.",
    '--json prints machine-readable output; addresses are "0x…" strings.',
  ].join("\n");
}

export interface HelpEntry {
  readonly usage: string;
  readonly summary: string;
}

export function commandList(entries: readonly HelpEntry[], width = HELP_WIDTH): string[] {
  const pad = " ".repeat(SUMMARY_COLUMN);
  const summaryWidth = width - SUMMARY_COLUMN;
  return entries.flatMap(({ usage, summary }) => {
    const summaryLines = wrap(summary.split(" "), summaryWidth);
    const head = `${INDENT}${usage}`;
    if (head.length + 2 <= SUMMARY_COLUMN) {
      const [first = "", ...more] = summaryLines;
      return [`${head.padEnd(SUMMARY_COLUMN)}${first}`, ...more.map((l) => pad + l)];
    }
    // An option group ("[--accel auto|kvm|tcg]") is never split across lines.
    const groups = usage.match(/\[[^\]]*\]|\([^)]*\)|\S+/g) ?? [];
    const usageLines = wrap(groups, width - INDENT.length - 4).map(
      (l, i) => `${INDENT}${i > 0 ? "    " : ""}${l}`,
    );
    return [...usageLines, ...summaryLines.map((l) => pad + l)];
  });
}

/** Greedy wrap of words joined by spaces; a single word longer than `width` stays whole. */
export function wrap(words: readonly string[], width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of words) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  if (line !== "" || lines.length === 0) lines.push(line);
  return lines;
}

/** `vmsight COMMAND --help`: that command's usage and summary, and its options. */
export function commandHelp(
  entry: HelpEntry & { readonly options: Readonly<Record<string, unknown>> },
): string {
  const options = Object.keys(entry.options).map((o) => `--${o}`);
  return [
    `usage: vmsight ${entry.usage}`,
    "",
    ...wrap(entry.summary.split(" "), HELP_WIDTH - INDENT.length).map((l) => INDENT + l),
    ...(options.length > 0 ? ["", `options: ${options.join(" ")}`] : []),
    "",
    "`vmsight --help` lists every command and the global options (--qmp, --dump, --json).",
  ].join("\n");
}
