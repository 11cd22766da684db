import type { Guest } from "../lib/guest.js";
import { Vm } from "../lib/vm.js";
import type { Machine } from "../qemu/machine.js";
import type { Target } from "../qemu/session.js";
import { UsageError, VmsightError } from "../util/errors.js";
import type { Options, Values } from "./args.js";

export interface CommandContext {
  readonly values: Values;
  readonly positionals: string[];
  readonly json: boolean;
  /** The live guest, for commands that control it (undefined when reading a dump). */
  readonly target: Target | undefined;
  /** The guest to read: the live one, or a dump given with --dump. */
  readonly machine: Machine | undefined;
  /** The same guest as the library's Vm, or through the `vmsight serve` that holds it. */
  readonly vm: Guest | undefined;
  /** Set when the guest is reached through a running `vmsight serve`. */
  readonly server?: { readonly pid: number } | undefined;
  log(line: string): void;
  out(text: string): void;
}

export interface CliCommand {
  readonly name: string;
  readonly usage: string;
  readonly summary: string;
  readonly options: Options;
  readonly needsTarget: boolean;
  /** Needs the guest's memory and kernel in this process: cannot go through `vmsight serve`. */
  readonly local?: boolean;
  /** Reads guest state only, so an offline dump (--dump FILE) serves as well as a live guest. */
  readonly dumpOk?: boolean;
  /** Validates arguments before anything is attached, so bad input fails fast (exit 2). */
  check?(ctx: CommandContext): void;
  run(ctx: CommandContext): Promise<number | undefined>;
}

export function need(ctx: CommandContext): Target {
  if (!ctx.target) throw new VmsightError("E_INTERNAL", "command needs a target but none was attached");
  return ctx.target;
}

export function needVm(ctx: CommandContext): Guest {
  if (!ctx.vm) throw new UsageError("this command needs a guest: --qmp SOCKET or --dump FILE");
  return ctx.vm;
}

export function needMachine(ctx: CommandContext): Machine {
  if (!ctx.machine) throw new UsageError("this command needs a guest: --qmp SOCKET or --dump FILE");
  return ctx.machine;
}

/** The library's own Vm, for a command marked `local` (never reached through a server). */
export function needLocalVm(ctx: CommandContext): Vm {
  if (!(ctx.vm instanceof Vm))
    throw new VmsightError("E_INTERNAL", "a local command was given a remote guest");
  return ctx.vm;
}
