import type { TypeDb } from "./btf/db.js";
import type { StructLayout } from "./layout.js";

/** StructLayout answered by the kernel's own BTF. */
export function btfLayout(db: TypeDb, source: string): StructLayout {
  return {
    source,
    offsetof: (s, p) => db.offsetof(s, p),
    findOffset: (s, p) => db.findOffsetof(s, p),
    sizeof: (s) => db.sizeof(s),
    findSize: (s) => db.findSizeof(s),
    memberSize: (s, p) => db.findMember(s, p)?.size,
    findEnumValue: (n) => db.findEnumValue(n),
  };
}
