import { UsageError, isVmsightError } from "../util/errors.js";

/**
 * The one place errors reach the user. Our own errors print as one line (plus a hint): they
 * describe the user's situation, not a bug. Anything else is a bug and says how to see the stack.
 */
export function reportError(error: unknown): number {
  if (isVmsightError(error)) {
    process.stderr.write(`vmsight: ${error.message}\n`);
    if (error.hint) process.stderr.write(`  hint: ${error.hint}\n`);
    if (process.env.VMSIGHT_DEBUG && error.stack) process.stderr.write(`${error.stack}\n`);
    return error instanceof UsageError ? 2 : 1;
  }
  const e = error instanceof Error ? error : new Error(String(error));
  process.stderr.write(`vmsight: internal error: ${e.message}\n`);
  if (process.env.VMSIGHT_DEBUG) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write("  hint: set VMSIGHT_DEBUG=1 to see where it happened, and please report it\n");
  return 70;
}
