import assert from "node:assert/strict";
import fc from "fast-check";
import type { Btf } from "../../src/symbols/btf/btf.js";
import { TypeDb } from "../../src/symbols/btf/db.js";
import { parseBtf } from "../../src/symbols/btf/parse.js";
import { isComposite } from "../../src/symbols/btf/types.js";
import { BtfBuilder } from "../fixtures/btf/builder.js";
import { fuzzTargets } from "./harness.js";
import { typed } from "./typed.js";

/** The shapes kernels use: anonymous members, typedef chains, bitfields, prototypes, enums. */
function kernelish(): Uint8Array {
  return kernelishBuilder().build();
}

function kernelishBuilder(): BtfBuilder {
  const b = new BtfBuilder();
  const int = b.int("int", 4, { signed: true });
  const uint = b.int("unsigned int", 4);
  const char = b.int("char", 1, { char: true });
  const long = b.int("long", 8, { signed: true });
  const pid = b.typedef("pid_t", b.typedef("__kernel_pid_t", int));
  const listHead = b.peekId;
  b.struct("list_head", 16, [
    ["next", listHead + 1, 0],
    ["prev", listHead + 1, 64],
  ]);
  b.ptr(listHead);
  const comm = b.array(char, int, 16);
  const anon = b.struct(
    "",
    8,
    [
      ["flags", uint, 0],
      ["bits", uint, 32 | (3 << 24), 3],
    ],
    true,
  );
  const un = b.union("", 8, [
    ["a", long, 0],
    ["", anon, 0],
  ]);
  const proto = b.funcProto(int, [
    ["x", b.ptr(b.const(char))],
    ["", 0],
  ]);
  const task = b.peekId;
  b.struct("task_struct", 96, [
    ["pid", pid, 0],
    ["", un, 64],
    ["tasks", listHead, 128],
    ["comm", comm, 256],
    ["fn", b.ptr(proto), 384],
    ["parent", task + 1, 448],
  ]);
  b.ptr(task);
  b.enum("state", 4, [
    ["LIVE", 0],
    ["GONE", 2],
  ]);
  b.enum64("big", [["HUGE", 1n << 40n]]);
  b.fwd("opaque");
  b.volatile(b.restrict(b.ptr(int)));
  b.typeTag("user", b.ptr(char));
  const v = b.var("counter", int);
  b.datasec(".data", 8, [[v, 0, 4]]);
  b.declTag("tag", task, 1);
  b.float("double", 8);
  return b;
}

/** A module's BTF on top of the kernelish base, as modules carry it; its base is built once. */
const split = (() => {
  let base: { builder: BtfBuilder; btf: Btf } | undefined;
  const get = () => {
    if (!base) {
      const builder = kernelishBuilder();
      base = { builder, btf: parseBtf(builder.build()) };
    }
    return base;
  };
  return {
    base: () => get().btf,
    seed: () => {
      const { builder, btf } = get();
      const m = new BtfBuilder({ typeCount: btf.typeCount, builder });
      const listHead = new TypeDb(btf).getStruct("list_head").id;
      const own = m.peekId;
      m.struct("dummy_priv", 48, [
        ["list", listHead, 0],
        ["name", m.array(1, 1, 8), 128],
        ["", own + 2, 192],
      ]);
      m.array(1, 1, 8);
      m.struct("", 8, [["pid", 1, 0]]);
      m.ptr(own);
      return m.build();
    },
  };
})();

/** Deeply shared anonymous members and prototypes: the shapes that cost exponential work. */
function nested(): Uint8Array {
  const b = new BtfBuilder();
  const long = b.int("long", 8, { signed: true });
  let inner = b.struct("", 8, [["x", long, 0]]);
  let proto = b.funcProto(long, []);
  for (let level = 1; level < 40; level++) {
    inner = b.struct(level % 8 === 0 ? `s${level}` : "", 16, [
      ["", inner, 64],
      ["", inner, 0],
    ]);
    const p = b.ptr(proto);
    proto = b.funcProto(0, [
      ["a", p],
      ["b", p],
    ]);
  }
  b.struct("outer", 16, [
    ["", inner, 0],
    ["fn", b.ptr(proto), 64],
  ]);
  return b.build();
}

const NAMES = ["", "", "a", "b", "x", "task_struct"];

/**
 * Random type graphs that parse: any kind may refer to any id, forwards and backwards, so
 * cycles, shared anonymous members and long chains come up; only the containers' sizes are fixed.
 */
function graph(): fc.Arbitrary<Uint8Array> {
  const name = fc.constantFrom(...NAMES);
  const kind = fc.constantFrom(
    "int",
    "ptr",
    "array",
    "struct",
    "union",
    "typedef",
    "const",
    "proto",
    "enum",
    "fwd",
  );
  const type = fc.record({
    kind,
    name,
    refs: fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
    names: fc.array(name, { minLength: 5, maxLength: 5 }),
    nelems: fc.oneof(fc.nat(8), fc.constant(0xffff_ffff)),
  });
  return fc.array(type, { minLength: 1, maxLength: 48 }).map((types) => {
    const b = new BtfBuilder();
    const n = types.length;
    const id = (r: number) => r % (n + 1);
    for (const t of types) {
      const ref = id(t.refs[0]!);
      const members = t.refs.map((r, i): [string, number, number] => [t.names[i]!, id(r), 32 * i]);
      switch (t.kind) {
        case "int":
          b.int(t.name || "int", 4);
          break;
        case "ptr":
          b.ptr(ref);
          break;
        case "array":
          b.array(ref, ref, t.nelems);
          break;
        case "struct":
          b.struct(t.name, 512, members);
          break;
        case "union":
          b.union(t.name, 512, members);
          break;
        case "typedef":
          b.typedef(t.name || "t", ref);
          break;
        case "const":
          b.const(ref);
          break;
        case "proto":
          b.funcProto(
            ref,
            members.map(([m, r]) => [m, r]),
          );
          break;
        case "enum":
          b.enum(t.name, 4, [
            ["E_A", 1],
            ["E_B", 2],
          ]);
          break;
        case "fwd":
          b.fwd(t.name || "f");
          break;
      }
    }
    return b.build();
  });
}

function exercise(bytes: Uint8Array, base?: Btf): void {
  const btf = parseBtf(bytes, { base });
  // Every type takes at least 12 bytes of the type section.
  const own = btf.typeCount - (base?.typeCount ?? 0);
  assert.ok(own <= bytes.length / 12, `${own} types from ${bytes.length} bytes`);
  const db = new TypeDb(btf);
  for (let id = 0; id <= btf.typeCount; id++) {
    typed(() => db.typeName(id));
    typed(() => db.sizeOfId(id));
    const t = typed(() => db.resolve(id));
    if (t && isComposite(t) && t.name !== "") {
      const names = typed(() => db.memberNames(t.name)) ?? [];
      for (const m of names.slice(0, 16)) typed(() => db.findMember(t.name, m));
    }
  }
  for (const t of btf.types()) {
    if (t.kind === "enum" || t.kind === "enum64")
      for (const e of t.values.slice(0, 8)) typed(() => db.enumValue(e.name));
  }
}

fuzzTargets(import.meta.url, [
  {
    name: "btf",
    seeds: () => [kernelish(), nested()],
    generate: graph,
    run: (bytes) => exercise(bytes),
    runs: 3000,
  },
  {
    name: "btf-split",
    seeds: () => [split.seed()],
    run: (bytes) => exercise(bytes, split.base()),
    runs: 2000,
  },
]);
