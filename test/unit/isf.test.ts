import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { libvmiOffsets, libvmiStanza, symbolFile } from "../../src/commands/isf.js";
import type { KernelInfo } from "../../src/os/linux/kernel.js";
import { parseBtf } from "../../src/symbols/btf/parse.js";
import { type IsfDocument, buildIsf } from "../../src/symbols/isf.js";
import { SymbolTable } from "../../src/symbols/kallsyms/table.js";
import { profileLayout } from "../../src/symbols/profile-layout.js";
import { VmsightError } from "../../src/util/errors.js";
import { exactJson } from "../../src/util/exact-json.js";
import { BtfBuilder } from "../fixtures/btf/builder.js";

const BANNER = Buffer.from("Linux version 6.1.0-test (builder@x) #1 SMP\n\0", "latin1");
/** Above 2^53: a Number would round it to ...a40 → ...a40 ± 1 ulps of 4096. */
const INIT_TASK = 0xffffffff82a1aa41n;
const BIG_ENUM = 0xfedcba9876543211n;

/** Anonymous union member, kind_flag bitfields, an old-style INT bitfield, typedefs, enums. */
function craftedBtf() {
  const b = new BtfBuilder();
  const uint = b.int("unsigned int", 4);
  const int = b.int("int", 4, { signed: true });
  const char = b.int("char", 1, { char: true, signed: true });
  const bool = b.int("_Bool", 1, { bool: true });
  const pidT = b.typedef("pid_t", b.const(int));
  const listHead = b.peekId;
  b.struct("list_head", 16, [
    ["next", listHead + 1, 0],
    ["prev", listHead + 1, 64],
  ]);
  b.ptr(listHead);
  const anon = b.union("", 4, [
    ["exit_code", int, 0],
    ["exit_flag", bool, 0],
  ]);
  const oldBits = b.int("unsigned int", 4, { bits: 3, offset: 2 });
  const state = b.enum("module_state", 4, [
    ["MODULE_STATE_LIVE", 0],
    ["MODULE_STATE_COMING", 1],
  ]);
  b.enum("", 4, [["ANON_CONSTANT", 7]]);
  b.enum64("big_flags", [["BIG", BIG_ENUM]]);
  const pFiles = b.ptr(b.fwd("files_struct"));
  const task = b.struct(
    "task_struct",
    64,
    [
      ["tasks", listHead, 0],
      ["pid", pidT, 128],
      ["", anon, 160],
      ["in_execve", uint, 192, 1],
      ["in_iowait", uint, 193, 2],
      ["state_bits", state, 200, 4],
      ["old", oldBits, 224, 0],
      ["comm", b.array(char, int, 16), 256],
      ["files", pFiles, 384],
    ],
    true,
  );
  b.var("runqueues", task);
  b.datasec(".data..percpu", 64, [[b.peekId - 1, 0, 64]]);
  return { btf: parseBtf(b.build()), task };
}

function crafted(): IsfDocument {
  const symbols = new SymbolTable([
    { name: "init_task", address: INIT_TASK, type: "D" },
    { name: "linux_banner", address: 0xffffffff82000100n, type: "D" },
    { name: "runqueues", address: 0x2c000n, type: "A", absolute: true },
    { name: "init_task", address: 0xffffffff83000000n, type: "d" },
  ]);
  return buildIsf({ btf: craftedBtf().btf, symbols, banner: BANNER, producerVersion: "9.9.9" });
}

describe("isf: a Volatility 3 symbol file from BTF and kallsyms", () => {
  test("metadata names the format, the producer and a kind the schema accepts", () => {
    const { metadata } = crafted();
    assert.equal(metadata.format, "6.2.0");
    assert.deepEqual(metadata.producer, { name: "vmsight", version: "9.9.9" });
    for (const s of metadata.linux.symbols) assert.match(s.kind, /^(dwarf|symtab|system-map)$/);
  });

  test("addresses and enum values beyond 2^53 are written as exact integers", () => {
    const text = exactJson(crafted());
    assert.ok(text.includes(`"init_task":{"address":${INIT_TASK}`), "init_task's exact address");
    assert.ok(text.includes(`"BIG":${BIG_ENUM}`), "the enum64 value");
    assert.notEqual(
      Number(INIT_TASK).toString(),
      INIT_TASK.toString(),
      "the test value is not a safe Number",
    );
    assert.doesNotThrow(() => JSON.parse(text), "valid JSON");
  });

  test("the first of several symbols of one name is kept, and BTF variables get their type", () => {
    const { symbols } = crafted();
    assert.equal(symbols.init_task?.address, INIT_TASK);
    assert.deepEqual(symbols.runqueues?.type, { kind: "struct", name: "task_struct" });
    assert.deepEqual(symbols.init_task?.type, { kind: "struct", name: "task_struct" });
  });

  test("linux_banner carries the guest's bytes as base64 constant_data", () => {
    const banner = crafted().symbols.linux_banner!;
    assert.deepEqual(Buffer.from(banner.constant_data!, "base64"), BANNER);
  });

  test("an anonymous member points at a named user type holding its fields", () => {
    const doc = crafted();
    const fields = doc.user_types.task_struct!.fields;
    const anon = Object.values(fields).filter((f) => f.anonymous);
    assert.equal(anon.length, 1);
    assert.equal(anon[0]!.offset, 20);
    const type = anon[0]!.type as { kind: string; name: string };
    assert.equal(type.kind, "union");
    assert.deepEqual(Object.keys(doc.user_types[type.name]!.fields), ["exit_code", "exit_flag"]);
  });

  test("typedefs and qualifiers are looked through; pointers, arrays and forward declarations kept", () => {
    const doc = crafted();
    const f = doc.user_types.task_struct!.fields;
    assert.deepEqual(f.pid, { offset: 16, type: { kind: "base", name: "int" } });
    assert.deepEqual(f.comm, {
      offset: 32,
      type: { kind: "array", count: 16, subtype: { kind: "base", name: "char" } },
    });
    assert.deepEqual(f.files?.type, { kind: "pointer", subtype: { kind: "struct", name: "files_struct" } });
    assert.deepEqual(doc.user_types.files_struct, { kind: "struct", size: 0, fields: {} });
    assert.deepEqual(doc.user_types.list_head!.fields.next?.type, {
      kind: "pointer",
      subtype: { kind: "struct", name: "list_head" },
    });
    assert.equal(doc.base_types.char?.kind, "char");
    assert.equal(doc.base_types._Bool?.kind, "bool");
    assert.equal(doc.base_types.pointer?.size, 8);
  });

  test("bitfields: both BTF encodings become offset + bit_position + bit_length", () => {
    const f = crafted().user_types.task_struct!.fields;
    const bits = (name: string) => {
      const { offset, type } = f[name]!;
      const t = type as { kind: string; bit_position: number; bit_length: number; type: unknown };
      return [t.kind, offset, t.bit_position, t.bit_length, t.type];
    };
    const uint = { kind: "base", name: "unsigned int" };
    assert.deepEqual(bits("in_execve"), ["bitfield", 24, 0, 1, uint]);
    assert.deepEqual(bits("in_iowait"), ["bitfield", 24, 1, 2, uint]);
    assert.deepEqual(bits("state_bits"), ["bitfield", 24, 8, 4, { kind: "enum", name: "module_state" }]);
    assert.deepEqual(bits("old"), ["bitfield", 28, 2, 3, uint]);
  });

  test("enums, named and unnamed, with the base type they are stored in", () => {
    const doc = crafted();
    assert.deepEqual(doc.enums.module_state, {
      size: 4,
      base: "unsigned int",
      constants: { MODULE_STATE_LIVE: 0n, MODULE_STATE_COMING: 1n },
    });
    const unnamed = Object.entries(doc.enums).find(([, e]) => "ANON_CONSTANT" in e.constants);
    assert.match(unnamed![0], /^unnamed_\d+$/);
    assert.equal(doc.enums.big_flags?.base, "long unsigned int");
    assert.ok(doc.base_types["long unsigned int"], "an enum's base type exists");
  });
});

describe("symbols for other tools from an offsets profile (no BTF)", () => {
  const profile = {
    "task_struct.tasks": 2192,
    "task_struct.mm": 2272,
    "task_struct.pid": 2416,
    "task_struct.comm": 2976,
    "mm_struct.pgd": 72,
  };
  const slide = 0xc400000n;
  const kernel = (p: Record<string, number>) =>
    ({
      layout: profileLayout(p, "p.json"),
      symbols: new SymbolTable([{ name: "init_task", address: 0xffffffff82a1aa40n + slide, type: "D" }]),
      banner: "Linux version 6.1.0-50-amd64 (x) #1",
      slide,
      typeCount: 0,
    }) as unknown as KernelInfo;

  test("libvmi-config works: offsets from the profile, init_task at its link-time address", () => {
    const o = libvmiOffsets(kernel(profile));
    assert.deepEqual(
      [o.linux_tasks, o.linux_mm, o.linux_pid, o.linux_name, o.linux_pgd],
      [2192, 2272, 2416, 2976, 72],
    );
    assert.equal(o.linux_init_task, 0xffffffff82a1aa40n);
    const stanza = libvmiStanza(o);
    assert.match(stanza, /^6\.1\.0-50-amd64 \{\n {4}ostype = "Linux";\n/);
    assert.match(stanza, /linux_tasks = 0x890;/);
    assert.match(stanza, /linux_kaslr = 0xc400000;/);
    assert.doesNotMatch(stanza, /sysmap/);
  });

  test("libvmi-config names a member the profile lacks", () => {
    const { "mm_struct.pgd": _, ...partial } = profile;
    assert.throws(() => libvmiOffsets(kernel(partial)), /mm_struct\.pgd/);
  });

  const PROFILE_BANNER = "Linux version 6.1.0-50-amd64 (x) #1\n";
  /** What `isf` reads beyond the profile: kallsyms and the banner's bytes. */
  const isfKernel = (p: Record<string, number>, layout = profileLayout(p, "p.json")) =>
    ({
      ...kernel(p),
      layout,
      symbols: new SymbolTable([
        { name: "init_task", address: 0xffffffff82a1aa40n + slide, type: "D" },
        { name: "init_files", address: 0xffffffff82b00000n + slide, type: "D" },
        { name: "linux_banner", address: 0xffffffff82000000n + slide, type: "R" },
      ]),
      kernel: {
        read: (_at: bigint, n: number) =>
          Buffer.concat([Buffer.from(`${PROFILE_BANNER}\0`), Buffer.alloc(n)]),
      },
    }) as unknown as KernelInfo;
  const parse = (text: string) => JSON.parse(text) as IsfDocument;

  test("isf from a profile: its members with their C types, link-time symbols, the banner", () => {
    const { text } = symbolFile(isfKernel({ ...profile, "cred.uid": 8, "module.module_core": 320 }));
    const doc = parse(text);
    const task = doc.user_types.task_struct!;
    assert.deepEqual(task.fields.pid, { offset: 2416, type: { kind: "base", name: "int" } });
    assert.deepEqual(task.fields.comm, {
      offset: 2976,
      type: { kind: "array", count: 16, subtype: { kind: "base", name: "char" } },
    });
    assert.deepEqual(task.fields.tasks, { offset: 2192, type: { kind: "struct", name: "list_head" } });
    assert.deepEqual(task.fields.mm?.type, {
      kind: "pointer",
      subtype: { kind: "struct", name: "mm_struct" },
    });
    assert.equal(task.size, 2976 + 16, "the end of the furthest member: a lower bound");
    assert.equal(doc.user_types.mm_struct?.fields.pgd?.offset, 72);
    assert.equal(doc.user_types.list_head?.fields.prev?.offset, 8);
    assert.equal(doc.user_types.cred?.size, 0, "cred.uid has no type here: cred stays empty");
    assert.ok(text.includes('"init_task":{"address":18446744071606217280,'), "exact link-time address");
    assert.deepEqual(doc.symbols.init_files?.type, { kind: "struct", name: "files_struct" });
    const banner = Buffer.from(doc.symbols.linux_banner!.constant_data!, "base64");
    assert.equal(banner.toString("latin1"), `${PROFILE_BANNER}\0`);
    for (const t of ["file", "dentry", "inet_sock", "unix_sock", "files_struct"])
      assert.deepEqual(
        doc.user_types[t],
        { kind: "struct", size: 0, fields: {} },
        `${t} for Volatility's loader`,
      );
    for (const f of Object.values(task.fields))
      if (f.type.kind === "base") assert.ok(doc.base_types[f.type.name], f.type.name);
  });

  test("isf from a profile says what it left out and which plugins cannot run", () => {
    const { notes } = symbolFile(isfKernel({ ...profile, "cred.uid": 8, "module.module_core": 320 }));
    assert.match(notes[0]!, /^partial symbol file from offsets profile p\.json: .* 5 members/);
    assert.ok(notes.includes("left out (vmsight does not know their C types): cred.uid, module.module_core"));
    assert.ok(
      notes.includes(
        "Volatility's linux.pslist cannot run: the profile lacks task_struct.tgid, task_struct.parent, task_struct.files",
      ),
      notes.join("\n"),
    );
    const full = {
      ...profile,
      "task_struct.tgid": 2420,
      "task_struct.parent": 2440,
      "task_struct.files": 3024,
    };
    const more = symbolFile(isfKernel(full)).notes;
    assert.ok(!more.some((n) => n.includes("linux.pslist")), more.join("\n"));
    assert.ok(more.some((n) => /linux\.lsof cannot run: the profile lacks files_struct\.fdt/.test(n)));
  });

  test("isf without BTF and without a profile is E_NO_BTF with a hint", () => {
    const bare = { ...profileLayout(profile, "p.json"), profile: undefined };
    assert.throws(
      () => symbolFile(isfKernel(profile, bare)),
      (e) => e instanceof VmsightError && e.code === "E_NO_BTF" && /--offsets/.test(e.hint ?? ""),
    );
  });
});
