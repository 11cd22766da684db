#!/usr/bin/env node
import { type Vm, attach, openDump } from "../lib/vm.js";
import { type ServedBy, servedBusy, serversOf } from "../server/announce.js";
import { UsageError, VmsightError } from "../util/errors.js";
import { markStep } from "../util/timings.js";
import { type Options, type Values, parse } from "./args.js";
import type { CliCommand, CommandContext } from "./command.js";
import { COMMANDS } from "./commands.js";
import { reportError } from "./errors.js";
import { commandHelp, helpText } from "./help.js";
import { kernelOptions } from "./linux-commands.js";

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
  if (local.values.help) {
    // Before anything runs: `demo --help` must not boot a guest.
    process.stdout.write(`${commandHelp(command)}\n`);
    return 0;
  }
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
    } catch (error) {
      throw inDump(dump, error);
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
  const served = serversOf(qmp)[0];
  if (served) return runServed(command, ctx, served);
  const vm: Vm = await attach({ qmp, ...kernelOptions(values), log: values.verbose ? log : () => {} });
  markStep("attach");
  const target = vm.target;
  const explain = (error: unknown) => (target ? target.explain(error) : error);
  const onSignal = () => void vm.close().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  let code: number | undefined;
  try {
    code = await command.run({ ...ctx, target, machine: vm.machine, vm });
  } catch (error) {
    const shown = explain(error);
    await vm.close().catch(() => {}); // the command's failure is the one to report
    throw shown;
  }
  try {
    await vm.close();
    markStep("close");
  } catch (error) {
    throw explain(error);
  }
  return code ?? 0;
}

type BaseContext = Omit<CommandContext, "target" | "machine" | "vm">;

/**
 * QEMU takes one QMP client, so a guest that `vmsight serve` holds is reached through it: the
 * command runs against the server's view of the guest, as any other client of the protocol.
 */
async function runServed(command: CliCommand, ctx: BaseContext, served: ServedBy): Promise<number> {
  const holds = `vmsight serve (pid ${served.pid}) holds this guest's QMP socket`;
  if (command.local) throw servedBusy(served, command.name);
  const own = ["system-map", "offsets", "no-btf"].find((k) => ctx.values[k] !== undefined);
  if (own !== undefined)
    throw new UsageError(
      `${holds}; it reads the guest with its own symbols, so --${own} cannot apply`,
      "leave the option out, or stop the server",
    );
  if (ctx.values.verbose) ctx.log(`through vmsight serve (pid ${served.pid}), as its VM "${served.vm}"`);
  const { RpcClient } = await import("../server/client.js");
  const { RemoteGuest } = await import("../server/remote-guest.js");
  const vm = new RemoteGuest(await RpcClient.connect(served.url), served.vm);
  const onSignal = () => void vm.close().finally(() => process.exit(130));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    return (await command.run({ ...ctx, target: undefined, machine: undefined, vm, server: served })) ?? 0;
  } finally {
    await vm.close().catch(() => {});
  }
}

/**
 * A dump that opens but whose contents do not add up (damaged RAM, not a Linux guest) fails deep
 * in a reader that does not know about the file: say which file, and that it may be at fault.
 */
function inDump(path: string, error: unknown): unknown {
  if (!(error instanceof VmsightError) || error instanceof UsageError || error.message.startsWith(path))
    return error;
  return new VmsightError(error.code, `${path}: ${error.message}`, {
    hint:
      error.hint ??
      "the dump may be damaged, or not of a 64-bit Linux guest; take a new one with QMP dump-guest-memory",
    cause: error,
  });
}

/** Exits once what was written has left: process.exit() would cut a piped stdout short. */
function exitAfterOutput(code: number): void {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

main(process.argv.slice(2)).then(exitAfterOutput, (error) => exitAfterOutput(reportError(error)));
