import { VmsightError } from "../util/errors.js";
import type { StructLayout } from "./layout.js";

/**
 * A StructLayout answered by an offsets profile: the JSON `vmsight discover` writes, one
 * `"struct.member": offset` pair per member it learned at boot (`"task_struct.pid": 2432`,
 * `"task_struct.thread_info.flags": 0`). Nothing else is known: a member that is not in the
 * profile is absent (findOffset → undefined), and so are sizes and enums.
 */
export type OffsetsProfile = Readonly<Record<string, number>>;

/** Offsets above this are not struct members of any kernel (task_struct is ~10 KiB). */
const MAX_OFFSET = 1 << 20;
const KEY = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*(\[[0-9]+\])?)+$/;
/** comm and module names: the only array sizes the object model asks a profile for. */
const KNOWN_SIZES: Readonly<Record<string, number>> = {
  "task_struct.comm": 16,
  "module.name": 56,
};

/** Parses and checks a profile's JSON text; `source` names it in errors. */
export function parseOffsetsProfile(text: string, source: string): OffsetsProfile {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new VmsightError("E_PROFILE", `offsets profile ${source} is not JSON: ${(error as Error).message}`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new VmsightError(
      "E_PROFILE",
      `offsets profile ${source} must be a JSON object of "struct.member": offset`,
    );
  }
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(data)) {
    if (!KEY.test(key))
      throw new VmsightError("E_PROFILE", `offsets profile ${source}: "${key}" is not "struct.member"`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > MAX_OFFSET) {
      throw new VmsightError(
        "E_PROFILE",
        `offsets profile ${source}: ${key} must be a byte offset from 0 to ${MAX_OFFSET}, got ${JSON.stringify(value)}`,
      );
    }
    out[key] = value;
  }
  return out;
}

export function profileLayout(profile: OffsetsProfile, source: string): StructLayout {
  const find = (struct: string, path: string): number | undefined => {
    const v = profile[`${struct}.${path}`];
    return typeof v === "number" ? v : undefined;
  };
  return {
    source: `offsets profile ${source}`,
    profile,
    findOffset: find,
    offsetof(struct, path) {
      const o = find(struct, path);
      if (o === undefined) {
        throw new VmsightError(
          "E_MEMBER_UNKNOWN",
          `${struct}.${path} is not in the offsets profile ${source}`,
          {
            hint: "the profile lacks it: `vmsight discover` learns only the members it lists; use the guest's BTF (drop --offsets) for the rest",
          },
        );
      }
      return o;
    },
    findSize: () => undefined,
    sizeof(struct) {
      throw new VmsightError(
        "E_TYPE_UNKNOWN",
        `sizeof(struct ${struct}) is not in the offsets profile ${source}`,
        {
          hint: "an offsets profile holds member offsets only",
        },
      );
    },
    memberSize: (struct, path) =>
      find(struct, path) === undefined ? undefined : KNOWN_SIZES[`${struct}.${path}`],
    findEnumValue: () => undefined,
  };
}
