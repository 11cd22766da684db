#!/usr/bin/env node
import { DumpMachine } from "../qemu/dump.js";
import { Target } from "../qemu/session.js";
import { UsageError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { type Options, type Values, parse } from "./args.js";
import type { CliCommand } from "./command.js";
import { COMMANDS } from "./commands.js";
import { reportError } from "./errors.js";
import { helpText } from "./help.js";

const GLOBAL: Options = {
  qmp: { type: "string" },
  dump: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  verbose: { type: "boolean", short: "v" },
};

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
  markStep("startup");
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
  const none = { ...ctx, target: undefined, machine: undefined };
  command.check?.(none);
  if (!command.needsTarget) return (await command.run(none)) ?? 0;
  const dump = typeof values.dump === "string" ? values.dump : undefined;
  if (dump !== undefined) {
    if (!command.dumpOk)
      throw new UsageError(`"${command.name}" needs a live guest, not a dump`, "give --qmp SOCKET");
    const machine = DumpMachine.open(dump);
    try {
      return (await command.run({ ...ctx, target: undefined, machine })) ?? 0;
    } finally {
      await machine.close();
    }
  }
  const qmp = typeof values.qmp === "string" ? values.qmp : process.env.VMSIGHT_QMP;
  if (!qmp) {
    throw new UsageError(
      `"${command.name}" needs a guest`,
      "give --qmp SOCKET (or set VMSIGHT_QMP); `vmsight run` starts one",
    );
  }
  const target = await Target.attach(qmp, { log: values.verbose ? log : () => {} });
  markStep("attach");
  const onSignal = () => void target.close().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let code: number | undefined;
  try {
    code = await command.run({ ...ctx, target, machine: target });
  } catch (error) {
    const shown = target.explain(error);
    await target.close().catch(() => {}); // the command's failure is the one to report
    throw shown;
  }
  try {
    await target.close();
    markStep("close");
  } catch (error) {
    throw target.explain(error);
  }
  return code ?? 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => process.exit(reportError(error)),
);
