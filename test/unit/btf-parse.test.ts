import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Btf } from "../../src/symbols/btf/btf.js";
import { TypeDb } from "../../src/symbols/btf/db.js";
import { parseBtf } from "../../src/symbols/btf/parse.js";
import { MAX_TYPE_DEPTH, resolveType, sizeOfType, typeName } from "../../src/symbols/btf/resolve.js";
import type { BtfType } from "../../src/symbols/btf/types.js";
import { GuestDataError, VmsightError } from "../../src/util/errors.js";
import { BtfBuilder, KIND } from "../fixtures/btf/builder.js";

type OfKind<K, T = BtfType> = T extends { kind: infer X } ? (K extends X ? T : never) : never;

function kindOf<K extends BtfType["kind"]>(t: BtfType, kind: K): OfKind<K> {
  assert.equal(t.kind, kind);
  return t as OfKind<K>;
}

/** One type of every kind; ids noted beside each. */
function everyKind() {
  const b = new BtfBuilder();
  const ids = {
    int: b.int("int", 4, { signed: true }), // 1
    char: b.int("char", 1, { char: true }), // 2
    bool: b.int("_Bool", 1, { bool: true }), // 3
    ptr: 0,
    array: 0,
    struct: 0,
    union: 0,
    enum: 0,
    enum64: 0,
    fwd: 0,
    typedef: 0,
    volatile: 0,
    const: 0,
    restrict: 0,
    proto: 0,
    func: 0,
    var: 0,
    datasec: 0,
    float: 0,
    declTag: 0,
    typeTag: 0,
  };
  ids.ptr = b.ptr(ids.char);
  ids.array = b.array(ids.char, ids.int, 16);
  ids.struct = b.struct("point", 8, [
    ["x", ids.int, 0],
    ["y", ids.int, 32],
  ]);
  ids.union = b.union("either", 4, [
    ["i", ids.int, 0],
    ["c", ids.char, 0],
  ]);
  ids.enum = b.enum(
    "color",
    4,
    [
      ["RED", 0],
      ["MINUS", -2],
    ],
    true,
  );
  ids.enum64 = b.enum64("big", [
    ["HUGE", 0xfedcba9876543210n],
    ["ONE", 1n],
  ]);
  ids.fwd = b.fwd("opaque", true);
  ids.typedef = b.typedef("myint", ids.int);
  ids.volatile = b.volatile(ids.int);
  ids.const = b.const(ids.ptr);
  ids.restrict = b.restrict(ids.ptr);
  ids.proto = b.funcProto(ids.int, [
    ["a", ids.int],
    ["", 0],
  ]);
  ids.func = b.func("do_thing", ids.proto, 0);
  ids.var = b.var("counter", ids.int, 2);
  ids.datasec = b.datasec(".data", 64, [[ids.var, 8, 4]]);
  ids.float = b.float("double", 8);
  ids.declTag = b.declTag("user", ids.struct, 1);
  ids.typeTag = b.typeTag("percpu", ids.int);
  return { bytes: b.build(), ids };
}

describe("parseBtf: every kind", () => {
  const { bytes, ids } = everyKind();
  const btf = parseBtf(bytes);

  test("counts ids from 1", () => {
    assert.equal(btf.firstId, 1);
    assert.equal(btf.typeCount, 21);
    assert.equal(btf.type(0).kind, "void");
  });

  test("INT encoding, offset and bits", () => {
    const i = kindOf(btf.type(ids.int), "int");
    assert.deepEqual(
      [i.name, i.size, i.signed, i.char, i.bool, i.bitOffset, i.bits],
      ["int", 4, true, false, false, 0, 32],
    );
    assert.equal(kindOf(btf.type(ids.char), "int").char, true);
    assert.equal(kindOf(btf.type(ids.bool), "int").bool, true);
  });

  test("PTR, ARRAY", () => {
    assert.equal(kindOf(btf.type(ids.ptr), "ptr").type, ids.char);
    const a = kindOf(btf.type(ids.array), "array");
    assert.deepEqual([a.type, a.indexType, a.nelems], [ids.char, ids.int, 16]);
  });

  test("STRUCT and UNION members", () => {
    const s = kindOf(btf.type(ids.struct), "struct");
    assert.equal(s.name, "point");
    assert.equal(s.size, 8);
    assert.deepEqual(s.members, [
      { name: "x", type: ids.int, bitOffset: 0, bitSize: 0 },
      { name: "y", type: ids.int, bitOffset: 32, bitSize: 0 },
    ]);
    const u = kindOf(btf.type(ids.union), "union");
    assert.deepEqual(
      u.members.map((m) => m.name),
      ["i", "c"],
    );
  });

  test("ENUM (signed) and ENUM64 values", () => {
    const e = kindOf(btf.type(ids.enum), "enum");
    assert.equal(e.signed, true);
    assert.deepEqual(e.values, [
      { name: "RED", value: 0n },
      { name: "MINUS", value: -2n },
    ]);
    const e64 = kindOf(btf.type(ids.enum64), "enum64");
    assert.equal(e64.values[0]!.value, 0xfedcba9876543210n);
    assert.equal(e64.size, 8);
  });

  test("FWD, TYPEDEF and qualifiers", () => {
    assert.equal(kindOf(btf.type(ids.fwd), "fwd").union, true);
    assert.equal(kindOf(btf.type(ids.typedef), "typedef").type, ids.int);
    assert.equal(kindOf(btf.type(ids.volatile), "volatile").type, ids.int);
    assert.equal(kindOf(btf.type(ids.const), "const").type, ids.ptr);
    assert.equal(kindOf(btf.type(ids.restrict), "restrict").type, ids.ptr);
    const tt = kindOf(btf.type(ids.typeTag), "type_tag");
    assert.deepEqual([tt.name, tt.type], ["percpu", ids.int]);
  });

  test("FUNC, FUNC_PROTO (variadic), VAR, DATASEC", () => {
    const f = kindOf(btf.type(ids.func), "func");
    assert.deepEqual([f.name, f.type, f.linkage], ["do_thing", ids.proto, "static"]);
    const p = kindOf(btf.type(ids.proto), "func_proto");
    assert.equal(p.returnType, ids.int);
    assert.deepEqual(p.params, [
      { name: "a", type: ids.int },
      { name: "", type: 0 },
    ]);
    const v = kindOf(btf.type(ids.var), "var");
    assert.deepEqual([v.name, v.linkage], ["counter", "extern"]);
    const d = kindOf(btf.type(ids.datasec), "datasec");
    assert.deepEqual([d.name, d.size, d.vars], [".data", 64, [{ type: ids.var, offset: 8, size: 4 }]]);
  });

  test("FLOAT and DECL_TAG", () => {
    assert.equal(kindOf(btf.type(ids.float), "float").size, 8);
    const t = kindOf(btf.type(ids.declTag), "decl_tag");
    assert.deepEqual([t.name, t.type, t.componentIdx], ["user", ids.struct, 1]);
  });

  test("sizes and C spellings", () => {
    assert.equal(sizeOfType(btf, ids.array), 16);
    assert.equal(sizeOfType(btf, ids.const), 8);
    assert.equal(sizeOfType(btf, ids.typeTag), 4);
    assert.equal(typeName(btf, ids.array), "char[16]");
    assert.equal(typeName(btf, ids.ptr), "char *");
    assert.equal(typeName(btf, ids.const), "char * const");
    assert.equal(typeName(btf, ids.struct), "struct point");
    assert.equal(typeName(btf, ids.fwd), "union opaque");
    assert.equal(typeName(btf, ids.volatile), "volatile int");
    assert.equal(typeName(btf, ids.proto), "int (int, ...)");
    assert.equal(resolveType(btf, ids.typedef).id, ids.int);
  });

  test("an out-of-range id asked of the Btf is a GuestDataError", () => {
    assert.throws(() => btf.type(22), GuestDataError);
    assert.throws(() => btf.type(-1), GuestDataError);
  });
});

describe("parseBtf: spelling of nested declarators", () => {
  const b = new BtfBuilder();
  const int = b.int("int", 4, { signed: true });
  const char = b.int("char", 1, { char: true });
  const cchar = b.const(char);
  const pcchar = b.ptr(cchar);
  const arr23 = b.array(b.array(int, int, 3), int, 2);
  const parr = b.ptr(b.array(int, int, 4));
  const fnptr = b.ptr(b.funcProto(0, [["x", pcchar]]));
  const ptrs = b.array(pcchar, int, 4);
  const btf = parseBtf(b.build());
  test("C-like spellings", () => {
    assert.equal(typeName(btf, pcchar), "const char *");
    assert.equal(typeName(btf, arr23), "int[2][3]");
    assert.equal(sizeOfType(btf, arr23), 24);
    assert.equal(typeName(btf, parr), "int (*)[4]");
    assert.equal(typeName(btf, fnptr), "void (*)(const char *)");
    assert.equal(typeName(btf, ptrs), "const char *[4]");
  });
});

describe("parseBtf: bitfields", () => {
  test("kind_flag on: size in the top 8 bits of the offset", () => {
    const b = new BtfBuilder();
    const u32 = b.int("unsigned int", 4);
    const s = b.struct(
      "flags",
      4,
      [
        ["a", u32, 0, 1],
        ["b", u32, 1, 3],
        ["c", u32, 4, 28],
      ],
      true,
    );
    const t = kindOf(parseBtf(b.build()).type(s), "struct");
    assert.equal(t.bitfieldMembers, true);
    assert.deepEqual(
      t.members.map((m) => [m.bitOffset, m.bitSize]),
      [
        [0, 1],
        [1, 3],
        [4, 28],
      ],
    );
  });

  test("kind_flag off: the offset is the whole word, the width lives in the INT", () => {
    const b = new BtfBuilder();
    const bf = b.int("unsigned int", 4, { bits: 3, offset: 0 });
    // Offset 0x01000010 would read as bit 16, width 1 with kind_flag; here it is bit 16777232.
    const s = b.struct("big", 0x300000, [["x", bf, 0x01000010]]);
    const t = kindOf(parseBtf(b.build()).type(s), "struct");
    assert.deepEqual(t.members[0], { name: "x", type: bf, bitOffset: 0x01000010, bitSize: 0 });
    assert.equal(kindOf(parseBtf(b.build()).type(bf), "int").bits, 3);
  });
});

describe("parseBtf: hostile input fails fast with GuestDataError", () => {
  const good = () => {
    const b = new BtfBuilder();
    const int = b.int("int", 4, { signed: true });
    b.struct("s", 4, [["m", int, 0]]);
    return b;
  };
  const rejects = (bytes: Uint8Array, pattern: RegExp) => {
    const t0 = performance.now();
    assert.throws(
      () => parseBtf(bytes),
      (e: unknown) => e instanceof GuestDataError && pattern.test(e.message),
    );
    assert.ok(performance.now() - t0 < 1000);
  };

  test("the good blob parses, also with a longer header", () => {
    assert.equal(parseBtf(good().build()).typeCount, 2);
    assert.equal(parseBtf(good().build({ hdrPad: 8 })).typeCount, 2);
  });
  test("truncated header", () => rejects(good().build().subarray(0, 20), /header is truncated \(20 bytes/));
  test("bad magic", () => rejects(good().build({ magic: 0x1234 }), /bad magic 0x1234/));
  test("big-endian magic", () => rejects(good().build({ magic: 0x9feb }), /big-endian/));
  test("bad version", () => rejects(good().build({ version: 2 }), /unsupported version 2/));
  test("hdr_len past the buffer", () => rejects(good().build({ hdrLen: 1 << 30 }), /hdr_len 1073741824/));
  test("type_len past the end", () =>
    rejects(good().build({ typeLen: 0xfffffff0 }), /type section .* past the end/));
  test("str_off past the end", () =>
    rejects(good().build({ strOff: 1 << 20 }), /string section .* past the end/));
  test("a type cut off mid-header", () => {
    const b = good();
    // int: 16 bytes; the struct's 12-byte header then has only 8.
    rejects(b.build({ typeLen: 24, strOff: 40 }), /type \[2\] header .* truncated \(8 bytes left/);
  });
  test("vlen far larger than the buffer", () => {
    const b = good();
    b.raw(b.str("huge"), KIND.STRUCT, 0xffff, false, 8, [0, 1, 0]);
    rejects(b.build(), /type \[3\] STRUCT 'huge' vlen=65535 needs 786420 more bytes, but only 12 remain/);
  });
  test("string offset out of range", () => {
    const b = good();
    b.raw(0x7fffffff, KIND.TYPEDEF, 0, false, 1);
    rejects(
      b.build(),
      /type \[3\] TYPEDEF name: string offset 2147483647 is past the end of the string section/,
    );
  });
  test("member name offset out of range", () => {
    const b = good();
    b.raw(0, KIND.STRUCT, 1, false, 4, [99999, 1, 0]);
    rejects(b.build(), /member 0: string offset 99999/);
  });
  test("string section without a final NUL", () => {
    const b = good();
    const bytes = b.build();
    bytes[bytes.length - 1] = 0x41;
    rejects(bytes, /does not end with a NUL/);
  });
  test("type id out of range", () => {
    const b = good();
    b.ptr(500);
    rejects(b.build(), /type \[3\] ptr '' refers to type id 500, but the last id is 3/);
  });
  test("member past the end of its struct", () => {
    const b = good();
    b.struct("tiny", 4, [["far", 1, 4096]]);
    rejects(b.build(), /member 'far' at bit 4096 lies past the end of its 4 bytes/);
  });
  test("unknown kind", () => {
    const b = good();
    b.raw(0, 31, 0, false, 0);
    rejects(b.build(), /unknown kind 31/);
  });
  test("INT wider than its size", () => {
    const b = good();
    b.int("odd", 1, { bits: 64 });
    rejects(b.build(), /INT 'odd' has 64 bits/);
  });
  test("unknown linkage", () => {
    const b = good();
    b.var("v", 1, 7);
    rejects(b.build(), /unknown linkage 7/);
  });

  test("a typedef cycle parses, but resolving it stops at the depth cap", () => {
    const b = new BtfBuilder();
    b.typedef("a", 2); // 1 -> 2
    b.const(3); // 2 -> 3
    b.typedef("c", 1); // 3 -> 1
    b.array(1, 1, 4); // 4: array of a cycle
    b.ptr(5); // 5: a pointer to itself
    const btf = parseBtf(b.build());
    const cyc = (e: unknown) =>
      e instanceof GuestDataError && new RegExp(`longer than ${MAX_TYPE_DEPTH}`).test(e.message);
    assert.throws(() => resolveType(btf, 1), cyc);
    assert.throws(() => sizeOfType(btf, 4), cyc);
    assert.throws(() => typeName(btf, 5), cyc);
    assert.equal(typeName(btf, 2), "const c");
  });

  test("arrays nested into an absurd size", () => {
    const b = new BtfBuilder();
    const int = b.int("int", 4);
    let t = int;
    for (let i = 0; i < 4; i++) t = b.array(t, int, 0xffffffff);
    const btf = parseBtf(b.build());
    assert.throws(() => sizeOfType(btf, t), /absurd size/);
  });

  test("random corruption never escapes as a non-vmsight error", () => {
    const bytes = everyKind().bytes;
    let seed = 1;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    const outcome = { parsed: 0, rejected: 0 };
    for (let round = 0; round < 3000; round++) {
      // Mostly flip bytes in the type/string data; now and then cut the blob or hit the header.
      const whole = round % 4 !== 0;
      const copy = whole ? bytes.slice() : bytes.slice(0, 24 + (rand() % (bytes.length - 23)));
      const from = whole ? 24 : 0;
      for (let k = 0; k < 1 + (rand() % 3); k++) copy[from + (rand() % (copy.length - from))] = rand() & 0xff;
      try {
        exercise(parseBtf(copy));
        outcome.parsed++;
      } catch (e) {
        assert.ok(e instanceof VmsightError, `round ${round}: ${e}`);
        outcome.rejected++;
      }
    }
    assert.ok(outcome.parsed > 300 && outcome.rejected > 300, JSON.stringify(outcome));
  });
});

/** Walks everything a reader would ask of a parsed blob; only vmsight errors may come out. */
function exercise(btf: Btf): void {
  const db = new TypeDb(btf);
  for (let id = 1; id <= btf.typeCount; id++) {
    const t = btf.type(id);
    tolerate(() => typeName(btf, id));
    tolerate(() => resolveType(btf, id));
    tolerate(() => sizeOfType(btf, id));
    if (t.kind === "struct" || t.kind === "union") {
      for (const m of t.members) tolerate(() => db.findMember(t.name || "point", m.name || "x"));
    }
  }
  tolerate(() => db.findEnumValue("RED"));
}

function tolerate(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof VmsightError)) throw e;
  }
}
