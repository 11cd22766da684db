import type { CliCommand } from "./command.js";

export const CONTROL_COMMANDS: readonly CliCommand[] = [];
