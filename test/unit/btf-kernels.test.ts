/**
 * The parser and TypeDb against real Debian kernels, checked with bpftool (libbpf's own
 * BTF reader) as the independent ground truth.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import type { Btf } from "../../src/symbols/btf/btf.js";
import { TypeDb } from "../../src/symbols/btf/db.js";
import { parseBtf } from "../../src/symbols/btf/parse.js";
import type { BtfType } from "../../src/symbols/btf/types.js";
import { parseElf64 } from "../../src/util/elf.js";

interface RawType {
  readonly id: number;
  readonly kind: string;
  readonly name: string;
  readonly fields: Map<string, string>;
  readonly members: { name: string; fields: Map<string, string> }[];
}

function bpftoolRaw(vmlinux: string): string {
  for (const exe of ["bpftool", "/usr/sbin/bpftool"]) {
    const r = spawnSync(exe, ["btf", "dump", "file", vmlinux, "format", "raw"], {
      encoding: "utf8",
      maxBuffer: 256 << 20,
    });
    if (r.status === 0) return r.stdout;
  }
  throw new Error("bpftool btf dump failed (is bpftool installed?)");
}

const fieldsOf = (s: string) => new Map([...s.matchAll(/(\w+)=([^\s,]+)/g)].map((m) => [m[1]!, m[2]!]));

/** bpftool's raw dump: "[id] KIND 'name' k=v ..." lines, each followed by tab-indented members. */
function parseBpftool(text: string): Map<number, RawType> {
  const out = new Map<number, RawType>();
  let cur: RawType | undefined;
  for (const line of text.split("\n")) {
    if (line.startsWith("\t")) {
      const m = /^\t(?:'([^']*)' )?(.*)$/.exec(line)!;
      cur!.members.push({ name: m[1] ?? "", fields: fieldsOf(m[2]!) });
      continue;
    }
    const m = /^\[(\d+)\] (\w+) '([^']*)' ?(.*)$/.exec(line);
    if (!m) continue;
    cur = { id: Number(m[1]), kind: m[2]!, name: m[3]!, fields: fieldsOf(m[4]!), members: [] };
    out.set(cur.id, cur);
  }
  return out;
}

/** Our parsed types printed the way bpftool prints them, for a line-by-line diff. */
function formatLikeBpftool(btf: Btf): string[] {
  const lines: string[] = [];
  const q = (s: string) => `'${s || "(anon)"}'`;
  for (const t of btf.types()) {
    const head = `[${t.id}] ${t.kind.toUpperCase()} ${q(t.name)}`;
    lines.push(`${head} ${headFields(t)}`.trimEnd());
    lines.push(...memberLines(btf, t, q));
  }
  return lines;
}

function headFields(t: BtfType): string {
  switch (t.kind) {
    case "int": {
      const enc = t.signed ? "SIGNED" : t.char ? "CHAR" : t.bool ? "BOOL" : "(none)";
      return `size=${t.size} bits_offset=${t.bitOffset} nr_bits=${t.bits} encoding=${enc}`;
    }
    case "ptr":
    case "typedef":
    case "const":
    case "volatile":
    case "restrict":
    case "type_tag":
      return `type_id=${t.type}`;
    case "array":
      return `type_id=${t.type} index_type_id=${t.indexType} nr_elems=${t.nelems}`;
    case "struct":
    case "union":
      return `size=${t.size} vlen=${t.members.length}`;
    case "enum":
    case "enum64":
      return `encoding=${t.signed ? "SIGNED" : "UNSIGNED"} size=${t.size} vlen=${t.values.length}`;
    case "fwd":
      return `fwd_kind=${t.union ? "union" : "struct"}`;
    case "func":
      return `type_id=${t.type} linkage=${t.linkage}`;
    case "func_proto":
      return `ret_type_id=${t.returnType} vlen=${t.params.length}`;
    case "var":
      return `type_id=${t.type}, linkage=${t.linkage}`;
    case "datasec":
      return `size=${t.size} vlen=${t.vars.length}`;
    case "float":
      return `size=${t.size}`;
    case "decl_tag":
      return `type_id=${t.type} component_idx=${t.componentIdx}`;
    default:
      return "";
  }
}

function memberLines(btf: Btf, t: BtfType, q: (s: string) => string): string[] {
  switch (t.kind) {
    case "struct":
    case "union":
      return t.members.map(
        (m) =>
          `\t${q(m.name)} type_id=${m.type} bits_offset=${m.bitOffset}${m.bitSize ? ` bitfield_size=${m.bitSize}` : ""}`,
      );
    case "enum":
      return t.values.map((v) => `\t${q(v.name)} val=${v.value}`);
    case "enum64":
      return t.values.map((v) => `\t${q(v.name)} val=${v.value}${t.signed ? "LL" : "ULL"}`);
    case "func_proto":
      return t.params.map((p) => `\t${q(p.name)} type_id=${p.type}`);
    case "datasec":
      return t.vars.map((v) => {
        const target = btf.type(v.type);
        return `\ttype_id=${v.type} offset=${v.offset} size=${v.size} (${target.kind.toUpperCase()} ${q(target.name)})`;
      });
    default:
      return [];
  }
}

/**
 * offsetof computed from bpftool's dump alone: follow the path, descend into anonymous
 * members summing their bits_offset, strip typedef/const/volatile between steps.
 */
class BpftoolLayout {
  private readonly byName = new Map<string, RawType>();
  constructor(private readonly types: Map<number, RawType>) {
    for (const t of types.values()) {
      if ((t.kind === "STRUCT" || t.kind === "UNION") && !this.byName.has(t.name) && t.members.length > 0) {
        this.byName.set(t.name, t);
      }
    }
  }
  struct(name: string): RawType {
    const t = this.byName.get(name);
    assert.ok(t, `bpftool has no struct ${name}`);
    return t;
  }
  private strip(id: number): RawType {
    let t = this.types.get(id)!;
    while (["TYPEDEF", "CONST", "VOLATILE", "TYPE_TAG", "RESTRICT"].includes(t.kind)) {
      t = this.types.get(Number(t.fields.get("type_id")))!;
    }
    return t;
  }
  private find(s: RawType, name: string): { bits: number; typeId: number; bitfield: number } | undefined {
    for (const m of s.members) {
      const bits = Number(m.fields.get("bits_offset"));
      const typeId = Number(m.fields.get("type_id"));
      if (m.name === name) return { bits, typeId, bitfield: Number(m.fields.get("bitfield_size") ?? 0) };
      if (m.name === "(anon)") {
        const inner = this.strip(typeId);
        const hit = inner.kind === "STRUCT" || inner.kind === "UNION" ? this.find(inner, name) : undefined;
        if (hit) return { ...hit, bits: hit.bits + bits };
      }
    }
    return undefined;
  }
  /** Bit offset and bitfield size of a dotted path; "[0]" steps into an array's element type. */
  member(structName: string, path: string): { bits: number; bitfield: number } | undefined {
    let cur = this.struct(structName);
    let bits = 0;
    let bitfield = 0;
    for (const seg of path.split(".")) {
      const [name, index] = seg.split("[");
      const hit = this.find(cur, name!);
      if (!hit) return undefined;
      bits += hit.bits;
      bitfield = hit.bitfield;
      let t = this.strip(hit.typeId);
      if (index !== undefined) {
        assert.equal(index, "0]", "only [0] is supported here");
        t = this.strip(Number(t.fields.get("type_id")));
      }
      cur = t;
    }
    return { bits, bitfield };
  }
}

const COMMON_MEMBERS: [string, string][] = [
  ...[
    "tasks",
    "pid",
    "tgid",
    "comm",
    "mm",
    "active_mm",
    "real_parent",
    "parent",
    "children",
    "sibling",
    "group_leader",
    "signal",
    "pending",
    "pending.signal",
    "cred",
    "real_cred",
    "flags",
    "__state",
    "exit_code",
    "exit_state",
    "thread_info",
    "thread_info.flags",
    "stack",
    "thread_pid",
    "thread_node",
    "start_time",
    "on_cpu",
    "se.vruntime",
    "sched_reset_on_fork",
  ].map((m): [string, string] => ["task_struct", m]),
  ...[
    "pgd",
    "start_code",
    "end_code",
    "start_stack",
    "arg_start",
    "arg_end",
    "env_start",
    "env_end",
    "mm_mt",
    "map_count",
    "mmap_base",
  ].map((m): [string, string] => ["mm_struct", m]),
  ...["vm_start", "vm_end", "vm_flags", "vm_file", "vm_pgoff"].map((m): [string, string] => [
    "vm_area_struct",
    m,
  ]),
  ["module", "list"],
  ["module", "name"],
  ["module", "state"],
  ["file", "f_path"],
  ["file", "f_path.dentry"],
  ["path", "dentry"],
  ["path", "mnt"],
  ["dentry", "d_name"],
  ["dentry", "d_name.name"],
  ["dentry", "d_parent"],
  ["qstr", "name"],
  ["cred", "uid"],
  ["sigpending", "signal"],
  ["signal_struct", "shared_pending"],
  ["maple_tree", "ma_root"],
  ["pid", "numbers"],
  ["pid", "numbers[0].nr"],
  ["upid", "nr"],
];

const KERNELS: { id: string; only: [string, string][]; absent: [string, string][] }[] = [
  { id: "6.1", only: [["module", "core_layout"]], absent: [["module", "mem"]] },
  { id: "6.12", only: [["module", "mem"]], absent: [["module", "core_layout"]] },
];

for (const kernel of KERNELS) {
  describe(`BTF of the Debian ${kernel.id} kernel against bpftool`, () => {
    let btf: Btf;
    let db: TypeDb;
    let raw: Map<number, RawType>;
    let layout: BpftoolLayout;
    let bpftoolText: string;
    let btfBytes: Uint8Array;

    before(() => {
      const k = ensureKernel(kernel.id);
      const bytes = parseElf64(readFileSync(k.vmlinux)).sectionBytes(".BTF");
      assert.ok(bytes, `${k.vmlinux} has no .BTF section`);
      btfBytes = bytes;
      const t0 = performance.now();
      btf = parseBtf(bytes);
      const t1 = performance.now();
      db = new TypeDb(btf);
      const t2 = performance.now();
      console.log(
        `${kernel.id} (${k.release}): ${(bytes.length / 1e6).toFixed(2)} MB BTF, ${btf.typeCount} types, ` +
          `parse ${(t1 - t0).toFixed(1)} ms, TypeDb index ${(t2 - t1).toFixed(1)} ms`,
      );
      bpftoolText = bpftoolRaw(k.vmlinux);
      raw = parseBpftool(bpftoolText);
      layout = new BpftoolLayout(raw);
    });

    test("every type decodes exactly as bpftool prints it", () => {
      const ours = formatLikeBpftool(btf);
      const theirs = bpftoolText.split("\n").filter((l) => l !== "");
      const diffs: string[] = [];
      for (let i = 0; i < Math.max(ours.length, theirs.length) && diffs.length < 5; i++) {
        if (ours[i] !== theirs[i])
          diffs.push(`line ${i + 1}:\n  ours:    ${ours[i]}\n  bpftool: ${theirs[i]}`);
      }
      assert.deepEqual(diffs, []);
      assert.equal(btf.typeCount, raw.size);
      assert.equal(db.typeCount, raw.size);
    });

    test("offsetof and bitfields of the members vmsight reads", () => {
      const members = [...COMMON_MEMBERS, ...kernel.only];
      assert.ok(members.length >= 40);
      for (const [s, path] of members) {
        const want = layout.member(s, path);
        assert.ok(want, `bpftool: ${s}.${path} not found`);
        const got = db.member(s, path);
        assert.equal(got.bitOffset, want.bits, `${s}.${path} bit offset`);
        assert.equal(got.offset, Math.floor(want.bits / 8), `offsetof(${s}, ${path})`);
        assert.equal(db.offsetof(s, path), Math.floor(want.bits / 8));
        assert.equal(got.bitSize, want.bitfield, `${s}.${path} bitfield size`);
      }
    });

    test("members one kernel has and the other lacks", () => {
      for (const [s, path] of kernel.absent) {
        assert.equal(layout.member(s, path), undefined, `bpftool: ${s}.${path} should be absent`);
        assert.equal(db.findMember(s, path), undefined);
      }
    });

    test("sizeof against bpftool", () => {
      for (const name of [
        "task_struct",
        "mm_struct",
        "list_head",
        "module",
        "pid",
        "upid",
        "cred",
        "vm_area_struct",
      ]) {
        assert.equal(db.sizeof(name), Number(layout.struct(name).fields.get("size")), `sizeof(${name})`);
      }
      assert.equal(db.sizeof("pid_t"), 4);
      assert.equal(db.sizeof("long unsigned int"), 8);
    });

    test("C spellings of member types", () => {
      assert.equal(db.member("task_struct", "comm").typeName, "char[16]");
      assert.equal(db.member("task_struct", "pid").typeName, "pid_t");
      assert.equal(db.member("task_struct", "tasks").typeName, "struct list_head");
      assert.equal(db.member("task_struct", "mm").typeName, "struct mm_struct *");
      assert.equal(db.member("task_struct", "real_cred").typeName, "const struct cred *");
      assert.equal(db.member("mm_struct", "pgd").typeName, "pgd_t *");
      assert.equal(db.member("qstr", "name").typeName, "const unsigned char *");
      assert.equal(db.member("task_struct", "comm").size, 16);
    });

    test("lazily decoded BTF answers every question as the eager parse does", () => {
      const lazy = new TypeDb(parseBtf(btfBytes, { lazy: true }));
      assert.equal(lazy.typeCount, db.typeCount);
      for (const [s, path] of [...COMMON_MEMBERS, ...kernel.only]) {
        const [a, b] = [lazy.member(s, path), db.member(s, path)];
        assert.deepEqual(
          [a.offset, a.bitOffset, a.bitSize, a.size, a.typeName],
          [b.offset, b.bitOffset, b.bitSize, b.size, b.typeName],
          `${s}.${path}`,
        );
      }
      for (const [s, path] of kernel.absent) assert.equal(lazy.findMember(s, path), undefined);
      for (const name of [
        "task_struct",
        "struct mm_struct",
        "union thread_union",
        "pid_t",
        "enum pid_type",
        "nosuch",
      ])
        assert.equal(lazy.findSizeof(name), db.findSizeof(name), name);
      assert.equal(lazy.findEnumValue("PIDTYPE_TGID"), db.findEnumValue("PIDTYPE_TGID"));
      const hint = (d: TypeDb) => {
        try {
          d.getType("task_strukt");
        } catch (e) {
          return (e as { hint?: string }).hint;
        }
      };
      assert.match(hint(lazy) ?? "", /task_struct/);
      assert.equal(hint(lazy), hint(db));
      assert.deepEqual([...lazy.btf.types()], [...btf.types()]);
    });

    test("enumerators", () => {
      assert.equal(db.enumValue("MODULE_STATE_LIVE"), 0n);
      assert.equal(db.enumValue("MODULE_STATE_UNFORMED"), 3n);
      assert.equal(db.enumValue("PIDTYPE_PID"), 0n);
      assert.equal(db.enumValue("PIDTYPE_TGID"), 1n);
    });
  });
}
