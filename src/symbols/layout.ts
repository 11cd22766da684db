/**
 * Where struct members sit, whichever way that was learned: from the kernel's BTF, or from an
 * offsets profile discovered at boot (no debug info). The Linux object model reads guest
 * structures only through this interface, so it works the same on both.
 */
export interface StructLayout {
  /** Byte offset of a member; `path` may be dotted (`"thread_info.flags"`, `"pending.signal"`). */
  offsetof(struct: string, path: string): number;
  /** The same, or undefined when the member does not exist in this kernel (e.g. `core_layout` on 6.4+). */
  findOffset(struct: string, path: string): number | undefined;
  sizeof(struct: string): number;
  findSize(struct: string): number | undefined;
  /** Size in bytes of a member (e.g. `task_struct.comm` is 16). */
  memberSize(struct: string, path: string): number | undefined;
  /** The value of an enumerator (`MOD_TEXT`, `TASK_COMM_LEN`…), when the layout knows enums. */
  findEnumValue(name: string): bigint | undefined;
  /** Where the layout came from, for messages ("BTF from guest memory", "offsets profile x.json"). */
  readonly source: string;
  /** An offsets profile's own entries ("struct.member" → offset), when that is the source. */
  readonly profile?: Readonly<Record<string, number>>;
}
