import { VmsightError } from "../../util/errors.js";

export interface PathSegment {
  readonly name: string;
  readonly indexes: readonly number[];
}

const SEGMENT = /^([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)$/;
const MAX_PATH = 1024;

/** Splits "numbers[0].nr" into [{ name: "numbers", indexes: [0] }, { name: "nr", indexes: [] }]. */
export function parseMemberPath(path: string): PathSegment[] {
  if (path.length > MAX_PATH) throw badPath(path, `longer than ${MAX_PATH} characters`);
  return path.split(".").map((part) => {
    const m = SEGMENT.exec(part.trim());
    if (!m) throw badPath(path, `"${part}" is not a member name with optional [index] suffixes`);
    const indexes = (m[2] ?? "").match(/\d+/g)?.map(Number) ?? [];
    if (indexes.some((i) => !Number.isSafeInteger(i))) throw badPath(path, "index too large");
    return { name: m[1]!, indexes };
  });
}

function badPath(path: string, why: string): VmsightError {
  return new VmsightError("E_MEMBER_PATH", `bad member path "${path}": ${why}`, {
    hint: 'write paths as C member designators, e.g. "thread_info.flags" or "numbers[0].nr"',
  });
}
