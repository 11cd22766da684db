import { execFileSync } from "node:child_process";

/**
 * Member offsets as bpftool reads them from a vmlinux's BTF (`bpftool btf dump file`, raw
 * format): an oracle independent of vmsight's own BTF reader, for tests that check offsets
 * vmsight got some other way (a discovered profile). Members of anonymous structs and unions
 * are found through them, as C names them.
 */
interface RawMember {
  readonly name: string;
  readonly type: number;
  readonly bits: number;
}
interface RawType {
  readonly name: string;
  readonly kind: string;
  readonly type?: number;
  readonly members: RawMember[];
}

function parseRaw(text: string): Map<number, RawType> {
  const types = new Map<number, RawType>();
  let current: RawType | undefined;
  for (const line of text.split("\n")) {
    const head = /^\[(\d+)\] (\w+) '([^']*)'(?:.*?\btype_id=(\d+))?/.exec(line);
    if (head) {
      current = { kind: head[2]!, name: head[3]!, members: [], type: head[4] ? Number(head[4]) : undefined };
      types.set(Number(head[1]), current);
      continue;
    }
    const m = /^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)/.exec(line);
    if (m && current) current.members.push({ name: m[1]!, type: Number(m[2]), bits: Number(m[3]) });
  }
  return types;
}

export class BpftoolBtf {
  private readonly types: Map<number, RawType>;
  private readonly structs = new Map<string, number>();

  constructor(vmlinux: string) {
    const text = execFileSync("bpftool", ["btf", "dump", "file", vmlinux], {
      encoding: "utf8",
      maxBuffer: 1 << 30,
    });
    this.types = parseRaw(text);
    for (const [id, t] of this.types)
      if (t.kind === "STRUCT" && t.name !== "(anon)" && !this.structs.has(t.name))
        this.structs.set(t.name, id);
  }

  /** "struct.member" → byte offset, or undefined when bpftool's BTF has no such member. */
  offset(key: string): number | undefined {
    const [struct, member] = key.split(".");
    const id = this.structs.get(struct!);
    const bits = id === undefined ? undefined : this.find(id, member!, 0);
    return bits === undefined ? undefined : bits / 8;
  }

  private find(id: number, member: string, depth: number): number | undefined {
    const t = this.types.get(id);
    if (!t || depth > 8) return undefined;
    for (const m of t.members) {
      if (m.name === member) return m.bits;
      if (m.name !== "(anon)") continue;
      const inner = this.find(m.type, member, depth + 1);
      if (inner !== undefined) return m.bits + inner;
    }
    return undefined;
  }
}
