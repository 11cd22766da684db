import type { CliCommand } from "./command.js";

export const DISCOVERY_COMMANDS: readonly CliCommand[] = [];
