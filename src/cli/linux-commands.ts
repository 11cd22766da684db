import { describeCheck } from "../commands/integrity.js";
import { type OpenKernelOptions, describeKernel } from "../commands/linux.js";
import type { Guest } from "../lib/guest.js";
import { Vm } from "../lib/vm.js";
import { formatMapsLine } from "../os/linux/maps.js";
import { listModules, unlistedModuleWarnings } from "../os/linux/modules.js";
import { taskListWarnings } from "../os/linux/tasks.js";
import { hex } from "../util/address.js";
import { UsageError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { type Options, type Values, intArg, stringValue } from "./args.js";
import { type CliCommand, type CommandContext, needVm } from "./command.js";
import { table, toJson } from "./render.js";

/** How every Linux command may be told where symbols come from. */
export const KERNEL_OPTIONS: Options = {
  "system-map": { type: "string" },
  // A `vmsight discover` profile instead of the guest's BTF; --no-btf insists on one.
  offsets: { type: "string" },
  "no-btf": { type: "boolean" },
};

/** Where the guest's Vm takes symbols and types from, as the command line says. */
export function kernelOptions(values: Values): OpenKernelOptions {
  const systemMap = stringValue(values, "system-map");
  const offsets = stringValue(values, "offsets");
  return {
    ...(systemMap === undefined ? {} : { systemMap }),
    ...(offsets === undefined ? {} : { offsets }),
    ...(values["no-btf"] === true ? { noBtf: true } : {}),
  };
}

/** Fails before attaching: --no-btf alone would have nothing to read types from. */
export function checkKernelOptions(ctx: CommandContext): void {
  if (ctx.values["no-btf"] === true && stringValue(ctx.values, "offsets") === undefined)
    throw new UsageError(
      "--no-btf needs --offsets FILE",
      "`vmsight discover` writes one while the guest boots",
    );
}

/** A command that lists the guest's rows through the Vm, then prints them as a table or a JSON array. */
export function linuxCommand<R extends object>(
  spec: Pick<CliCommand, "name" | "usage" | "summary"> & { check?: (ctx: CommandContext) => void },
  rows: (vm: Guest, ctx: CommandContext) => Promise<R[]>,
  columns: readonly (keyof R & string)[],
  text?: (rows: R[]) => string,
): CliCommand {
  return {
    ...spec,
    options: KERNEL_OPTIONS,
    needsTarget: true,
    dumpOk: true,
    check(ctx) {
      checkKernelOptions(ctx);
      spec.check?.(ctx);
    },
    async run(ctx) {
      const result = await rows(needVm(ctx), ctx);
      markStep("walk");
      ctx.out(ctx.json ? toJson(result) : text ? text(result) : table(result, columns));
      markStep("output");
      // In JSON each row carries its own warnings; a table says them on stderr, one a line.
      if (!ctx.json) for (const line of warningLines(result)) ctx.log(line);
      return 0;
    },
  };
}

/** An address as rows carry it: a bigint from the readers, or already "0x…" on the wire. */
const addr = (v: unknown) => (typeof v === "bigint" ? hex(v) : String(v));

/** "vmsight: warning: pid 42 (comm): what failed", for every row that could not be read in full. */
export function warningLines(rows: readonly object[]): string[] {
  const out: string[] = [];
  for (const row of rows) {
    const r = row as Record<string, unknown>;
    if (!Array.isArray(r.warnings)) continue;
    let who = "";
    if (typeof r.tid === "number") who = `tid ${r.tid} (${r.comm})`;
    else if (typeof r.pid === "number") who = `pid ${r.pid} (${r.comm})`;
    else if (r.start !== undefined && r.end !== undefined) who = `${addr(r.start)}-${addr(r.end)}`;
    else if (typeof r.name === "string") who = `module ${r.name}`;
    for (const w of r.warnings) out.push(`vmsight: warning: ${who}: ${w}`);
  }
  return out;
}

export const kernelCommand: CliCommand = {
  name: "kernel",
  usage: "kernel",
  summary: "kernel version, KASLR slide, randomised bases, paging mode, symbol and type counts",
  options: KERNEL_OPTIONS,
  needsTarget: true,
  dumpOk: true,
  check: checkKernelOptions,
  async run(ctx) {
    const report = await needVm(ctx).kernel();
    ctx.out(ctx.json ? toJson([report]) : describeKernel(report));
    return 0;
  },
};

export const pidArg = (ctx: CommandContext) => intArg(ctx.positionals[0], "PID", 1, 4_194_304);

export const LINUX_COMMANDS: readonly CliCommand[] = [
  kernelCommand,
  linuxCommand(
    { name: "ps", usage: "ps", summary: "processes: pid, tgid, ppid, uid, state, comm, cmdline" },
    async (vm, ctx) => {
      const rows = await vm.ps();
      // Through a server the rows carry their own warnings; the cross-checks need the kernel here.
      if (vm instanceof Vm)
        for (const line of taskListWarnings(await vm.linux(), rows.length)) ctx.log(`warning: ${line}`);
      return rows;
    },
    ["pid", "tgid", "ppid", "uid", "state", "comm", "cmdline"],
  ),
  linuxCommand(
    {
      name: "pids",
      usage: "pids",
      summary: "ps as the PID namespace sees it (independent of the task list: finds unlinked processes)",
    },
    (vm) => vm.pids(),
    ["pid", "tgid", "ppid", "uid", "state", "comm", "cmdline"],
  ),
  linuxCommand(
    { name: "threads", usage: "threads", summary: "every thread of every process" },
    (vm) => vm.threads(),
    ["tid", "tgid", "ppid", "state", "comm"],
  ),
  linuxCommand(
    { name: "pstree", usage: "pstree", summary: "the process tree" },
    (vm) => vm.pstree(),
    ["text"],
    (rows) => rows.map((r) => r.text).join("\n"),
  ),
  linuxCommand(
    { name: "lsmod", usage: "lsmod", summary: "loaded kernel modules: name, base, size, state" },
    async (vm, ctx) => {
      const rows = await vm.lsmod();
      if (vm instanceof Vm) {
        const k = await vm.linux();
        for (const line of unlistedModuleWarnings(k, listModules(k))) ctx.log(`warning: ${line}`);
      }
      return rows;
    },
    ["name", "base", "size", "state"],
  ),
  linuxCommand(
    {
      name: "maps",
      usage: "maps PID",
      summary: "a process's memory maps, as /proc/<pid>/maps",
      check: (ctx) => void pidArg(ctx),
    },
    (vm, ctx) => vm.maps(pidArg(ctx)),
    ["start", "end", "perms", "offset", "dev", "inode", "path"],
    // Column for column what the guest's own `cat /proc/PID/maps` prints (inode in decimal).
    (rows) =>
      rows
        .map((r) =>
          formatMapsLine({
            ...r,
            start: BigInt(r.start),
            end: BigInt(r.end),
            offset: BigInt(r.offset),
            inode: BigInt(r.inode),
          }),
        )
        .join("\n"),
  ),
  linuxCommand(
    {
      name: "check",
      usage: "check",
      summary:
        "kernel integrity: syscall-table hooks, modules and processes hidden from their lists (findings only)",
    },
    (vm) => vm.check(),
    ["kind", "what"],
    describeCheck,
  ),
];
