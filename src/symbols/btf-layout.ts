import type { TypeDb } from "./btf/db.js";
import type { StructLayout } from "./layout.js";

/**
 * StructLayout answered by the kernel's own BTF. Answers are memoised: object-model walks ask the
 * same few questions once per task, and a BTF member lookup parses its path each time.
 */
export function btfLayout(db: TypeDb, source: string): StructLayout {
  const memo = <T>(fn: (s: string, p: string) => T) => {
    const seen = new Map<string, T>();
    return (s: string, p: string): T => {
      const key = `${s}\0${p}`;
      if (seen.has(key)) return seen.get(key) as T;
      const value = fn(s, p);
      seen.set(key, value);
      return value;
    };
  };
  return {
    source,
    // offsetof throws for unknown members; only successful answers are memoised.
    offsetof: memo((s, p) => db.offsetof(s, p)),
    findOffset: memo((s, p) => db.findOffsetof(s, p)),
    sizeof: (s) => db.sizeof(s),
    findSize: (s) => db.findSizeof(s),
    memberSize: memo((s, p) => db.findMember(s, p)?.size),
    findEnumValue: (n) => db.findEnumValue(n),
  };
}
