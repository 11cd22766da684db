import { type ParseArgsConfig, parseArgs } from "node:util";
import { parseAddress } from "../util/address.js";
import { UsageError } from "../util/errors.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;
export type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** parseArgs with its exceptions turned into one-line usage errors. */
export function parse(
  args: string[],
  options: Options,
  usage: string,
): { values: Values; positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true });
    return { values: r.values as Values, positionals: r.positionals };
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify.*$/s, "");
    throw new UsageError(message, `usage: ${usage}`);
  }
}

export function addressArg(text: string | undefined, what: string): bigint {
  const v = text === undefined ? undefined : parseAddress(text);
  if (v === undefined)
    throw new UsageError(`${what} must be an address like 0xffffffff81000000, got "${text ?? ""}"`);
  if (v >= 1n << 64n) throw new UsageError(`${what} ${text} does not fit in 64 bits`);
  return v;
}

/** A count, length, pid or CPU: decimal, or hex only with an explicit 0x (so "abc" is refused). */
export function intArg(text: string | undefined, what: string, min: number, max: number): number {
  const t = text?.trim() ?? "";
  const v = /^\d+$/.test(t) || /^0x[0-9a-f]+$/i.test(t) ? Number(t) : Number.NaN;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`${what} must be a number from ${min} to ${max}, got "${text ?? ""}"`);
  }
  return v;
}

export function stringValue(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}
