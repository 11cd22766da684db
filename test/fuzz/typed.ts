import { ERROR_CODES, VmsightError } from "../../src/util/errors.js";

/**
 * Runs one step of a target and carries on past a typed error, so one bad type or node does not
 * hide the rest of the input from the fuzzer. Anything else propagates and fails the input.
 */
export function typed<T>(step: () => T): T | undefined {
  try {
    return step();
  } catch (e) {
    if (e instanceof VmsightError && ERROR_CODES.includes(e.code)) return undefined;
    throw e;
  }
}
