import { type OpenKernelOptions, describeKernel, kernelReport, openKernel } from "../commands/linux.js";
import { lsmodRows, mapsRows, pidViewRows, psRows, pstreeLines, threadRows } from "../commands/processes.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { listModules, unlistedModuleWarnings } from "../os/linux/modules.js";
import { taskListWarnings } from "../os/linux/tasks.js";
import { hex } from "../util/address.js";
import { UsageError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { type Options, intArg, stringValue } from "./args.js";
import { type CliCommand, type CommandContext, needMachine } from "./command.js";
import { table, toJson } from "./render.js";

/** How every Linux command may be told where symbols come from. */
const KERNEL_OPTIONS: Options = {
  "system-map": { type: "string" },
  // A `vmsight discover` profile instead of the guest's BTF; --no-btf insists on one.
  offsets: { type: "string" },
  "no-btf": { type: "boolean" },
};

function kernelOptions(ctx: CommandContext): OpenKernelOptions {
  const systemMap = stringValue(ctx.values, "system-map");
  const offsets = stringValue(ctx.values, "offsets");
  return {
    ...(systemMap === undefined ? {} : { systemMap }),
    ...(offsets === undefined ? {} : { offsets }),
    ...(ctx.values["no-btf"] === true ? { noBtf: true } : {}),
  };
}

/** Fails before attaching: --no-btf alone would have nothing to read types from. */
function checkKernelOptions(ctx: CommandContext): void {
  if (ctx.values["no-btf"] === true && stringValue(ctx.values, "offsets") === undefined)
    throw new UsageError(
      "--no-btf needs --offsets FILE",
      "`vmsight discover` writes one while the guest boots",
    );
}

/** A command that discovers the kernel, then prints rows as a table or a JSON array. */
function linuxCommand<R extends object>(
  spec: Pick<CliCommand, "name" | "usage" | "summary"> & { check?: (ctx: CommandContext) => void },
  rows: (k: KernelInfo, ctx: CommandContext) => R[],
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
      const kernel = await openKernel(needMachine(ctx), kernelOptions(ctx));
      const result = rows(kernel, ctx);
      markStep("walk");
      ctx.out(ctx.json ? toJson(result) : text ? text(result) : table(result, columns));
      markStep("output");
      return 0;
    },
  };
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
    const report = kernelReport(await openKernel(needMachine(ctx), kernelOptions(ctx)));
    ctx.out(ctx.json ? toJson([report]) : describeKernel(report));
    return 0;
  },
};

const pidArg = (ctx: CommandContext) => intArg(ctx.positionals[0], "PID", 1, 4_194_304);
const hexCols = <T extends { start: bigint; end: bigint; offset: bigint }>(r: T) => ({
  ...r,
  start: hex(r.start).slice(2).padStart(8, "0"),
  end: hex(r.end).slice(2).padStart(8, "0"),
  offset: hex(r.offset).slice(2).padStart(8, "0"),
});

export const LINUX_COMMANDS: readonly CliCommand[] = [
  kernelCommand,
  linuxCommand(
    { name: "ps", usage: "ps", summary: "processes: pid, tgid, ppid, uid, state, comm, cmdline" },
    (k, ctx) => {
      const rows = psRows(k);
      for (const line of taskListWarnings(k, rows.length)) ctx.log(`warning: ${line}`);
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
    pidViewRows,
    ["pid", "tgid", "ppid", "uid", "state", "comm", "cmdline"],
  ),
  linuxCommand({ name: "threads", usage: "threads", summary: "every thread of every process" }, threadRows, [
    "tid",
    "tgid",
    "ppid",
    "state",
    "comm",
  ]),
  linuxCommand(
    { name: "pstree", usage: "pstree", summary: "the process tree" },
    pstreeLines,
    ["text"],
    (rows) => rows.map((r) => r.text).join("\n"),
  ),
  linuxCommand(
    { name: "lsmod", usage: "lsmod", summary: "loaded kernel modules: name, base, size, state" },
    (k, ctx) => {
      const rows = lsmodRows(k);
      for (const line of unlistedModuleWarnings(k, listModules(k))) ctx.log(`warning: ${line}`);
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
    (k, ctx) => mapsRows(k, pidArg(ctx)),
    ["start", "end", "perms", "offset", "dev", "inode", "path"],
    (rows) => table(rows.map(hexCols), ["start", "end", "perms", "offset", "dev", "inode", "path"]),
  ),
];
