import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { TypeDb } from "../../src/symbols/btf/db.js";
import { parseBtf } from "../../src/symbols/btf/parse.js";
import { GuestDataError, VmsightError } from "../../src/util/errors.js";
import { BtfBuilder } from "../fixtures/btf/builder.js";

/**
 * A miniature kernel: the shapes that trip BTF readers (anonymous struct/union members,
 * typedef chains, both bitfield encodings, flexible arrays, forward declarations).
 */
function miniKernel() {
  const b = new BtfBuilder();
  const uint = b.int("unsigned int", 4);
  const ulong = b.int("long unsigned int", 8);
  const int = b.int("int", 4, { signed: true });
  const char = b.int("char", 1, { char: true });
  const u32 = b.typedef("u32", b.typedef("__u32", uint));
  const pid_t = b.typedef("pid_t", b.typedef("__kernel_pid_t", int));
  const listHead = b.peekId;
  const pListHead = listHead + 1;
  b.struct("list_head", 16, [
    ["next", pListHead, 0],
    ["prev", pListHead, 64],
  ]);
  b.ptr(listHead);
  const sigset = b.typedef("sigset_t", b.struct("", 8, [["sig", b.array(ulong, int, 1), 0]]));
  const sigpending = b.struct("sigpending", 24, [
    ["list", listHead, 0],
    ["signal", sigset, 128],
  ]);
  const threadInfo = b.struct("thread_info", 16, [
    ["flags", ulong, 0],
    ["syscall_work", ulong, 64],
  ]);
  // Old-style bitfield: the INT itself says "3 bits at bit 2".
  const oldBits = b.int("unsigned int", 4, { bits: 3, offset: 2 });
  const comm = b.array(char, int, 16);
  const fwdMm = b.fwd("mm_struct");
  const pMm = b.ptr(fwdMm);
  const cvInt = b.const(b.volatile(int));
  const anonUnion = b.union("", 8, [
    ["exit_code", int, 0],
    ["exit_state", int, 32],
  ]);
  const task = b.struct(
    "task_struct",
    256,
    [
      ["thread_info", threadInfo, 0],
      ["__state", cvInt, 128],
      ["", anonUnion, 192],
      ["sched_reset_on_fork", uint, 256, 1],
      ["sched_contributes_to_load", uint, 257, 1],
      ["tasks", listHead, 320],
      ["mm", pMm, 448],
      ["pid", pid_t, 512],
      ["tgid", pid_t, 544],
      ["comm", comm, 576],
      ["pending", sigpending, 704],
      ["flags", u32, 896],
    ],
    true,
  );
  const packed = b.struct("packed_old", 8, [
    ["lo", oldBits, 32],
    ["hi", uint, 0],
  ]);
  // mm_struct as on 6.x: everything inside an anonymous struct, nested anonymous union.
  const inner = b.struct("", 64, [
    ["mm_count", int, 0],
    [
      "",
      b.union("", 8, [
        ["mmap_base", ulong, 0],
        ["mmap_legacy_base", ulong, 0],
      ]),
      64,
    ],
    ["pgd", b.ptr(ulong), 128],
    ["start_code", ulong, 192],
    ["end_code", ulong, 256],
  ]);
  const mm = b.struct("mm_struct", 72, [
    ["", inner, 0],
    ["cpu_bitmap", b.array(ulong, int, 0), 512],
  ]);
  const upid = b.struct("upid", 16, [
    ["nr", int, 0],
    ["ns", b.ptr(0), 64],
  ]);
  const pid = b.struct("pid", 16, [
    ["level", uint, 0],
    ["numbers", b.array(upid, int, 0), 128],
  ]);
  const pair = b.struct("pair", 32, [["items", b.array(upid, int, 2), 0]]);
  b.enum("module_state", 4, [
    ["MODULE_STATE_LIVE", 0],
    ["MODULE_STATE_COMING", 1],
  ]);
  b.enum64("", [["BIG_FLAG", 1n << 40n]]);
  b.union("thread_union", 16, [["ti", threadInfo, 0]]);
  b.struct("holder", 80, [["mm", fwdMm, 0]]);
  b.struct("empty_then_full", 0, []);
  b.struct("empty_then_full", 4, [["x", int, 0]]);
  return { bytes: b.build(), task, mm, pid, pair, packed, sigpending };
}

describe("TypeDb on a miniature kernel", () => {
  const k = miniKernel();
  const db = new TypeDb(parseBtf(k.bytes));

  test("finds structs and unions by tag, with or without the keyword", () => {
    assert.equal(db.findStruct("task_struct")?.id, k.task);
    assert.equal(db.findStruct("struct task_struct")?.id, k.task);
    assert.equal(db.findStruct("thread_union")?.kind, "union");
    assert.equal(db.findStruct("union task_struct"), undefined);
    assert.equal(db.findStruct("nope"), undefined);
    assert.equal(db.getStruct("empty_then_full").size, 4);
  });

  test("sizeof struct, union, typedef and base names", () => {
    assert.equal(db.sizeof("task_struct"), 256);
    assert.equal(db.sizeof("struct list_head"), 16);
    assert.equal(db.sizeof("thread_union"), 16);
    assert.equal(db.sizeof("pid_t"), 4);
    assert.equal(db.sizeof("sigset_t"), 8);
    assert.equal(db.sizeof("long unsigned int"), 8);
    assert.equal(db.sizeof("enum module_state"), 4);
    assert.equal(db.findSizeof("struct nope"), undefined);
  });

  test("offsetof plain and dotted members", () => {
    assert.equal(db.offsetof("task_struct", "tasks"), 40);
    assert.equal(db.offsetof("task_struct", "comm"), 72);
    assert.equal(db.offsetof("task_struct", "thread_info.flags"), 0);
    assert.equal(db.offsetof("task_struct", "thread_info.syscall_work"), 8);
    assert.equal(db.offsetof("task_struct", "pending.signal"), 88 + 16);
    assert.equal(db.offsetof("task_struct", "pending.signal.sig"), 104);
    assert.equal(db.offsetof("task_struct", "tasks.prev"), 48);
  });

  test("looks through anonymous unions and nested anonymous structs", () => {
    assert.equal(db.offsetof("task_struct", "exit_code"), 24);
    assert.equal(db.offsetof("task_struct", "exit_state"), 28);
    assert.equal(db.offsetof("mm_struct", "pgd"), 16);
    assert.equal(db.offsetof("mm_struct", "start_code"), 24);
    assert.equal(db.offsetof("mm_struct", "mmap_base"), 8);
    assert.equal(db.offsetof("mm_struct", "mmap_legacy_base"), 8);
    assert.equal(db.offsetof("mm_struct", "cpu_bitmap"), 64);
    assert.deepEqual(db.memberNames("mm_struct"), [
      "mm_count",
      "mmap_base",
      "mmap_legacy_base",
      "pgd",
      "start_code",
      "end_code",
      "cpu_bitmap",
    ]);
  });

  test("member(): resolved type, C spelling and size", () => {
    const pid = db.member("task_struct", "pid");
    assert.deepEqual(
      [pid.offset, pid.bitOffset, pid.bitSize, pid.typeName, pid.size],
      [64, 512, 0, "pid_t", 4],
    );
    assert.equal(pid.type.kind, "int");
    assert.equal(pid.type.name, "int");
    const comm = db.member("task_struct", "comm");
    assert.deepEqual([comm.typeName, comm.size, comm.type.kind], ["char[16]", 16, "array"]);
    const tasks = db.member("task_struct", "tasks");
    assert.deepEqual([tasks.typeName, tasks.type.kind, tasks.size], ["struct list_head", "struct", 16]);
    const state = db.member("task_struct", "__state");
    assert.deepEqual([state.typeName, state.type.name], ["const volatile int", "int"]);
    const flags = db.member("task_struct", "flags");
    assert.deepEqual([flags.typeName, flags.type.name, flags.size], ["u32", "unsigned int", 4]);
    const signal = db.member("task_struct", "pending.signal");
    assert.deepEqual([signal.typeName, signal.type.kind, signal.size], ["sigset_t", "struct", 8]);
  });

  test("a pointer to a forward declaration reads as that; the fwd itself completes by name", () => {
    const mm = db.member("task_struct", "mm");
    assert.deepEqual([mm.typeName, mm.size, mm.type.kind], ["struct mm_struct *", 8, "ptr"]);
    assert.equal(db.offsetof("holder", "mm.pgd"), 16);
    assert.equal(db.member("holder", "mm").type.kind, "struct");
  });

  test("bitfields with kind_flag", () => {
    const a = db.member("task_struct", "sched_reset_on_fork");
    assert.deepEqual([a.offset, a.bitOffset, a.bitSize], [32, 256, 1]);
    const b = db.member("task_struct", "sched_contributes_to_load");
    assert.deepEqual([b.offset, b.bitOffset, b.bitSize], [32, 257, 1]);
  });

  test("bitfields without kind_flag take width and shift from the INT", () => {
    const lo = db.member("packed_old", "lo");
    assert.deepEqual([lo.offset, lo.bitOffset, lo.bitSize], [4, 34, 3]);
    const hi = db.member("packed_old", "hi");
    assert.deepEqual([hi.bitOffset, hi.bitSize], [0, 0]);
  });

  test("array indexing", () => {
    assert.equal(db.offsetof("pid", "numbers[0].nr"), 16);
    assert.equal(db.offsetof("pid", "numbers[3].ns"), 16 + 3 * 16 + 8);
    assert.equal(db.offsetof("pair", "items[1].nr"), 16);
    assert.equal(db.member("pair", "items[1]").typeName, "struct upid");
    assert.equal(db.member("pid", "numbers").typeName, "struct upid[0]");
    assert.throws(() => db.offsetof("pair", "items[2]"), /past the end of 2 elements/);
    assert.throws(() => db.offsetof("pair", "items[0][0]"), /is not an array/);
  });

  test("errors: unknown types and members, with hints", () => {
    const code = (c: string, hint?: RegExp) => (e: unknown) =>
      e instanceof VmsightError && e.code === c && (hint === undefined || hint.test(e.hint ?? ""));
    assert.throws(() => db.offsetof("task_strukt", "pid"), code("E_TYPE_UNKNOWN", /task_struct/));
    assert.throws(() => db.offsetof("task_struct", "tgidd"), code("E_MEMBER_UNKNOWN", /tgid/));
    assert.throws(() => db.offsetof("mm_struct", "start_cod"), code("E_MEMBER_UNKNOWN", /start_code/));
    assert.throws(() => db.offsetof("task_struct", "comm.x"), code("E_MEMBER_UNKNOWN"));
    assert.throws(() => db.offsetof("task_struct", "mm.pgd"), code("E_MEMBER_UNKNOWN", /pointer/));
    assert.throws(() => db.offsetof("task_struct", "pid..x"), code("E_MEMBER_PATH"));
    assert.throws(() => db.getStruct("nope"), code("E_TYPE_UNKNOWN"));
    assert.throws(() => db.getType("struct nope"), code("E_TYPE_UNKNOWN"));
    assert.equal(db.findMember("task_struct", "nope"), undefined);
    assert.equal(db.findOffsetof("nope", "pid"), undefined);
    assert.equal(db.findOffsetof("task_struct", "pending.signal"), 104);
  });

  test("enumerators across all enums, ENUM64 included", () => {
    assert.equal(db.enumValue("MODULE_STATE_COMING"), 1n);
    assert.equal(db.enumValue("BIG_FLAG"), 1n << 40n);
    assert.equal(db.findEnumValue("NOPE"), undefined);
    assert.throws(
      () => db.enumValue("MODULE_STATE_LIV"),
      (e: unknown) =>
        e instanceof VmsightError && e.code === "E_TYPE_UNKNOWN" && /MODULE_STATE_LIVE/.test(e.hint ?? ""),
    );
  });

  test("typeCount", () => {
    assert.equal(db.typeCount, parseBtf(k.bytes).typeCount);
    assert.ok(db.typeCount > 40);
  });
});

describe("TypeDb: hostile layouts", () => {
  test("an anonymous member that contains itself stops at the depth cap", () => {
    const b = new BtfBuilder();
    const self = b.peekId;
    b.struct("", 8, [["", self, 0]]);
    b.struct("outer", 8, [["", self, 0]]);
    const db = new TypeDb(parseBtf(b.build()));
    assert.throws(() => db.offsetof("outer", "x"), GuestDataError);
  });

  test("64 nested structs with two anonymous members each are flattened once per struct", () => {
    const b = new BtfBuilder();
    const long = b.int("long", 8, { signed: true });
    let inner = b.struct("", 8, [["x", long, 0]]);
    // The second anonymous member comes first in memory: C picks the first declared one.
    for (let level = 1; level < 64; level++) {
      inner = b.struct(level === 63 ? "outer" : "", 16 * level, [
        ["", inner, 64],
        ["", inner, 0],
      ]);
    }
    const db = new TypeDb(parseBtf(b.build()));
    assert.equal(db.offsetof("outer", "x"), 8 * 63);
    assert.deepEqual(db.memberNames("outer"), ["x"]);
  });

  test("a struct naming a wide anonymous type thousands of times runs out of budget", () => {
    const b = new BtfBuilder();
    const long = b.int("long", 8, { signed: true });
    const wide = b.struct(
      "wide",
      8000,
      Array.from({ length: 1000 }, (_, i): [string, number, number] => [`m${i}`, long, 64 * i]),
    );
    const anon = Array.from({ length: 2000 }, (): [string, number, number] => ["", wide, 0]);
    b.struct("outer", 8, [...anon, ["last", long, 0]]);
    const db = new TypeDb(parseBtf(b.build()));
    assert.throws(() => db.offsetof("outer", "last"), /more than \d+ steps/);
    assert.equal(db.offsetof("wide", "m999"), 8 * 999, "the wide struct on its own still flattens");
  });

  test("64 nested function prototypes with two parameters each fail to spell, typed", () => {
    const b = new BtfBuilder();
    let proto = b.funcProto(b.int("int", 4, { signed: true }), []);
    for (let level = 0; level < 64; level++) {
      const p = b.ptr(proto);
      proto = b.funcProto(0, [
        ["a", p],
        ["b", b.const(p)],
      ]);
    }
    b.struct("ops", 8, [["fn", b.ptr(proto), 0]]);
    const db = new TypeDb(parseBtf(b.build()));
    assert.throws(
      () => db.member("ops", "fn"),
      (e: unknown) => e instanceof GuestDataError && /spelling/.test(e.message),
    );
    assert.throws(() => db.typeName(proto), GuestDataError);
  });

  test("a shallow prototype still spells in full", () => {
    const b = new BtfBuilder();
    const int = b.int("int", 4, { signed: true });
    const inner = b.ptr(b.funcProto(int, [["x", int]]));
    const proto = b.ptr(
      b.funcProto(0, [
        ["a", inner],
        ["b", inner],
      ]),
    );
    const db = new TypeDb(parseBtf(b.build()));
    assert.equal(db.typeName(proto), "void (*)(int (*)(int), int (*)(int))");
  });

  test("a struct whose member type is a typedef cycle", () => {
    const b = new BtfBuilder();
    b.typedef("loop", 1);
    b.struct("s", 8, [["m", 1, 0]]);
    const db = new TypeDb(parseBtf(b.build()));
    assert.throws(() => db.offsetof("s", "m.x"), GuestDataError);
    assert.throws(() => db.sizeof("loop"), GuestDataError);
  });
});

describe("split BTF (module on top of vmlinux)", () => {
  const base = new BtfBuilder();
  const int = base.int("int", 4, { signed: true });
  const char = base.int("char", 1, { char: true });
  const listHead = base.peekId;
  base.struct("list_head", 16, [
    ["next", listHead + 1, 0],
    ["prev", listHead + 1, 64],
  ]);
  base.ptr(listHead);
  base.enum("module_state", 4, [["MODULE_STATE_LIVE", 0]]);
  const baseBtf = parseBtf(base.build());

  const split = new BtfBuilder({ typeCount: baseBtf.typeCount, builder: base });
  const name = split.array(char, int, 56);
  const mod = split.struct("dummy_priv", 80, [
    ["list", listHead, 0],
    ["name", name, 128],
    ["int", int, 576],
  ]);
  const splitBtf = parseBtf(split.build(), { base: baseBtf });

  test("ids continue after the base", () => {
    assert.equal(splitBtf.firstId, baseBtf.typeCount + 1);
    assert.equal(name, 6);
    assert.equal(splitBtf.type(mod).name, "dummy_priv");
    assert.equal(splitBtf.type(listHead).name, "list_head");
    assert.equal(splitBtf.typeCount, 7);
  });

  test("strings below the base's length come from the base", () => {
    // The member "int" is named by the base's string: the split adds only its own three.
    assert.equal(split.stringLength - base.stringLength, "dummy_priv\0list\0name\0".length);
    assert.ok(split.knownStr("int")! < base.stringLength);
    const t = splitBtf.type(mod);
    assert.equal(t.kind === "struct" && t.members[2]!.name, "int");
  });

  test("a TypeDb over split BTF sees both", () => {
    const db = new TypeDb(splitBtf);
    assert.equal(db.offsetof("dummy_priv", "list.prev"), 8);
    assert.equal(db.member("dummy_priv", "name").typeName, "char[56]");
    assert.equal(db.sizeof("list_head"), 16);
    assert.equal(db.enumValue("MODULE_STATE_LIVE"), 0n);
  });

  test("without its base, split BTF is rejected", () => {
    assert.throws(() => parseBtf(split.build()), GuestDataError);
  });

  test("a split type id past the end is rejected", () => {
    const bad = new BtfBuilder({ typeCount: baseBtf.typeCount, builder: base });
    bad.ptr(baseBtf.typeCount + 5);
    assert.throws(
      () => parseBtf(bad.build(), { base: baseBtf }),
      /refers to type id 10, but the last id is 6/,
    );
  });

  test("a split string offset past the end is rejected", () => {
    const bad = new BtfBuilder({ typeCount: baseBtf.typeCount, builder: base });
    bad.raw(base.stringLength + 500, 8, 0, false, int);
    assert.throws(() => parseBtf(bad.build(), { base: baseBtf }), /string offset \d+ is past the end/);
  });
});
