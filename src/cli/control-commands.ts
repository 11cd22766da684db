import { describeKill } from "../commands/control.js";
import { type SignalName, parseSignal } from "../events/kill-signals.js";
import { KILL_METHODS, type KillMethod, checkMethod } from "../events/kill.js";
import { UsageError } from "../util/errors.js";
import { intArg, stringValue } from "./args.js";
import { type CliCommand, type CommandContext, needVm } from "./command.js";
import { toJson } from "./render.js";

const MAX_PID = 4_194_304; // PID_MAX_LIMIT on 64-bit

interface KillArgs {
  readonly pid: number;
  readonly signal: SignalName;
  readonly method: KillMethod;
  readonly timeoutMs: number;
}

function killArgs(ctx: CommandContext): KillArgs {
  const [text, extra] = ctx.positionals;
  if (text === undefined) throw new UsageError("which process? give its PID", "usage: vmsight kill PID");
  if (extra !== undefined) throw new UsageError(`one PID at a time, got "${extra}" too`);
  if (/^-\d+$/.test(text.trim())) {
    throw new UsageError(`${text} is a process group; vmsight kills one process at a time`);
  }
  if (/^0+$/.test(text.trim())) {
    throw new UsageError(
      "pid 0 is the kernel's idle task, not a process",
      "`vmsight ps` lists the processes",
    );
  }
  // Decimal only: the shared number parser would read "abc" as the hex pid 0xabc.
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`PID must be a decimal number, got "${text}"`);
  const pid = intArg(text.trim(), "PID", 1, MAX_PID);
  const method = (stringValue(ctx.values, "method") ?? "send") as KillMethod;
  if (!KILL_METHODS.includes(method)) {
    throw new UsageError(`unknown method "${method}"`, `use one of ${KILL_METHODS.join(", ")}`);
  }
  const signal = parseSignal(stringValue(ctx.values, "signal"));
  checkMethod(method, signal);
  const timeout = stringValue(ctx.values, "timeout");
  const timeoutMs = timeout === undefined ? 2000 : intArg(timeout, "--timeout (ms)", 0, 600_000);
  return { pid, signal, method, timeoutMs };
}

/**
 * While a kill is under way, Ctrl-C must not close the gdb connection under an injected call:
 * the CLI's own handler (close and exit) is set aside and Ctrl-C/SIGTERM only abort, so the
 * kill code can take its breakpoint out and put registers back before the process exits.
 */
async function withAbortOnSignals<T>(fn: (abort: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  const names = ["SIGINT", "SIGTERM"] as const;
  const saved = names.map((n) => [n, process.listeners(n)] as const);
  const onSignal = () => controller.abort();
  for (const n of names) {
    process.removeAllListeners(n);
    process.on(n, onSignal);
  }
  try {
    return await fn(controller.signal);
  } finally {
    for (const [n, listeners] of saved) {
      process.removeListener(n, onSignal);
      for (const l of listeners) process.on(n, l as () => void);
    }
  }
}

const killCommand: CliCommand = {
  name: "kill",
  usage: "kill PID [--signal KILL|TERM|STOP|CONT] [--method send|wake|memory] [--timeout MS] [--force]",
  summary: "signal a guest process from outside; blocked, stopped and multi-threaded ones too",
  options: {
    signal: { type: "string", short: "s" },
    method: { type: "string" },
    timeout: { type: "string" },
    force: { type: "boolean" },
  },
  needsTarget: true,
  check: (ctx) => void killArgs(ctx),
  async run(ctx) {
    const args = killArgs(ctx);
    const { pid, signal, ...opts } = args;
    const report = await withAbortOnSignals((abort) =>
      needVm(ctx).kill(pid, signal, {
        ...opts,
        force: ctx.values.force === true,
        signal: abort,
        ...(ctx.values.verbose === true ? { log: ctx.log } : {}),
      }),
    );
    if (ctx.json) ctx.out(toJson(report));
    else for (const line of describeKill(report)) ctx.out(line);
    return report.expected ? 0 : 1;
  },
};

export const CONTROL_COMMANDS: readonly CliCommand[] = [killCommand];
