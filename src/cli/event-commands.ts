import type { CliCommand } from "./command.js";

export const EVENT_COMMANDS: readonly CliCommand[] = [];
