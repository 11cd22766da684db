import type { Target } from "../target/session.js";
import type { Options, Values } from "./args.js";

export interface CommandContext {
  readonly values: Values;
  readonly positionals: string[];
  readonly json: boolean;
  readonly target: Target | undefined;
  log(line: string): void;
  out(text: string): void;
}

export interface CliCommand {
  readonly name: string;
  readonly usage: string;
  readonly summary: string;
  readonly options: Options;
  readonly needsTarget: boolean;
  /** Validates arguments before anything is attached, so bad input fails fast (exit 2). */
  check?(ctx: CommandContext): void;
  run(ctx: CommandContext): Promise<number | undefined>;
}

export function need(ctx: CommandContext): Target {
  if (!ctx.target) throw new Error("command needs a target but none was attached");
  return ctx.target;
}
