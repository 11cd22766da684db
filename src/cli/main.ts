#!/usr/bin/env node
import { type Vm, attach, openDump } from "../lib/vm.js";
import { UsageError } from "../util/errors.js";
import { type Options, type Values, parse } from "./args.js";
import type { CliCommand } from "./command.js";
import { COMMANDS } from "./commands.js";
import { reportError } from "./errors.js";
import { kernelOptions } from "./linux-commands.js";

const GLOBAL: Options = {
  qmp: { type: "string" },
  dump: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
};

function helpText(): string {
  const width = Math.max(...COMMANDS.map((c) => c.usage.length));
  return [
    "vmsight — see and steer a running Linux VM from outside",
    "",
    "usage: vmsight [--qmp SOCKET | --dump FILE] [--json] COMMAND [ARGS]",
    "",
    ...COMMANDS.map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`),
    "",
    "--qmp SOCKET attaches to any running QEMU through its QMP unix socket (nothing else needed).",
    "--dump FILE reads a QEMU ELF memory dump instead (dump-guest-memory), for the reading commands.",
    "kernel, ps, threads, pstree, lsmod and maps take --system-map FILE to use a System.map or",
    "/proc/kallsyms instead of the symbols vmsight finds in guest memory.",
    '--json prints machine-readable output; addresses are "0x…" strings.',
  ].join("\n");
}

/** Splits argv at the command word: options before it are global, the rest belong to the command. */
function splitArgv(argv: string[]): { global: string[]; name: string | undefined; rest: string[] } {
  const takesValue = new Set(["--qmp", "--dump"]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("-")) return { global: argv.slice(0, i), name: a, rest: argv.slice(i + 1) };
    if (takesValue.has(a)) i++;
  }
  return { global: argv, name: undefined, rest: [] };
}

async function main(argv: string[]): Promise<number> {
  const { global, name, rest } = splitArgv(argv);
  const g = parse(global, GLOBAL, "vmsight [--qmp SOCKET] [--json] COMMAND");
  if (g.values.help || name === undefined || name === "help") {
    process.stdout.write(`${helpText()}\n`);
    return name === undefined && !g.values.help ? 2 : 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`unknown command "${name}"`, "run `vmsight help` to list the commands");
  const local = parse(rest, { ...GLOBAL, ...command.options }, `vmsight ${command.usage}`);
  const values: Values = {
    ...g.values,
    ...Object.fromEntries(Object.entries(local.values).filter(([, v]) => v !== undefined)),
  };
  return runCommand(command, values, local.positionals);
}

async function runCommand(command: CliCommand, values: Values, positionals: string[]): Promise<number> {
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const ctx = {
    values,
    positionals,
    json: values.json === true,
    log,
    out: (s: string) => process.stdout.write(`${s}\n`),
  };
  const none = { ...ctx, target: undefined, machine: undefined, vm: undefined };
  command.check?.(none);
  if (!command.needsTarget) return (await command.run(none)) ?? 0;
  const dump = typeof values.dump === "string" ? values.dump : undefined;
  if (dump !== undefined) {
    if (!command.dumpOk)
      throw new UsageError(`"${command.name}" needs a live guest, not a dump`, "give --qmp SOCKET");
    const vm = await openDump(dump, kernelOptions(values));
    try {
      return (await command.run({ ...ctx, target: undefined, machine: vm.machine, vm })) ?? 0;
    } finally {
      await vm.close();
    }
  }
  const qmp = typeof values.qmp === "string" ? values.qmp : process.env.VMSIGHT_QMP;
  if (!qmp) {
    throw new UsageError(
      `"${command.name}" needs a guest`,
      "give --qmp SOCKET (or set VMSIGHT_QMP); `vmsight run` starts one",
    );
  }
  const vm: Vm = await attach({ qmp, ...kernelOptions(values), log: values.verbose ? log : () => {} });
  const onSignal = () => void vm.close().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    return (await command.run({ ...ctx, target: vm.target, machine: vm.machine, vm })) ?? 0;
  } finally {
    await vm.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => process.exit(reportError(error)),
);
