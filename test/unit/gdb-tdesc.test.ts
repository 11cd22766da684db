import assert from "node:assert/strict";
import { resolve } from "node:path";
import { test } from "node:test";
import { RspDecoder } from "../../src/transport/gdb/codec.js";
import {
  buildLayout,
  loadTargetDescription,
  parseTargetXml,
  readXferObject,
  stripXmlComments,
} from "../../src/transport/gdb/target-description.js";
import { ProtocolError } from "../../src/util/errors.js";
import { loadTranscript, replayUnits } from "../fixtures/gdb/fake-server.js";

const fixture = resolve(import.meta.dirname, "../../../test/fixtures/gdb/qemu72-session.json");

const MAIN = `<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target>
  <architecture>toy64</architecture>
  <xi:include href="core.xml"/>
  <!-- <reg name="ghost" bitsize="64"/> must not count -->
  <reg name="PC" bitsize="64" type="code_ptr"/>
  <xi:include href='extra.xml'/>
</target>`;
const CORE = `<feature name="core">
  <reg name="r0" bitsize="64" regnum="0"/>
  <!--
  <reg name="hidden1" bitsize="32"/>
  <reg name="hidden2" bitsize="32"/>
  -->
  <reg name="r1" bitsize="32" group="general"/>
</feature>`;
const EXTRA = `<feature name="extra">
  <reg name="ctl" bitsize="64" regnum="0x10"/>
  <reg name="v0" bitsize="128"/>
</feature>`;

const docs = new Map([
  ["target.xml", MAIN],
  ["core.xml", CORE],
  ["extra.xml", EXTRA],
]);

test("registers across includes, in document order, comments skipped, regnum honoured", async () => {
  const layout = await loadTargetDescription(async (annex) => docs.get(annex) ?? "");
  assert.equal(layout.architecture, "toy64");
  const rows = layout.registers.map((r) => [r.name, r.regnum, r.bitsize, r.offset]);
  assert.deepEqual(rows, [
    ["r0", 0, 64, 0],
    ["r1", 1, 32, 8],
    ["pc", 2, 64, 12],
    ["ctl", 16, 64, 20],
    ["v0", 17, 128, 28],
  ]);
  assert.equal(layout.size, 44);
  assert.equal(layout.byName.get("r1")?.group, "general");
  assert.equal(layout.byName.get("pc")?.type, "code_ptr");
  assert.equal(layout.byName.has("ghost"), false);
});

test("comment stripping and the malformed cases", async () => {
  assert.equal(stripXmlComments("a<!-- x -->b<!---->c").replace(/ /g, ""), "abc");
  assert.throws(() => stripXmlComments("a<!-- never closed"), ProtocolError);
  assert.throws(() => parseTargetXml('<xi:include href=""/>'), ProtocolError);
  assert.throws(() => buildLayout(parseTargetXml('<reg name="a" bitsize="12"/>')), ProtocolError);
  assert.throws(() => buildLayout(parseTargetXml('<reg bitsize="8"/>')), ProtocolError);
  assert.throws(
    () => buildLayout(parseTargetXml('<reg name="a" bitsize="8"/><reg name="b" bitsize="8" regnum="0"/>')),
    ProtocolError,
  );
  assert.throws(
    () => buildLayout(parseTargetXml('<reg name="a" bitsize="8"/><reg name="A" bitsize="8"/>')),
    ProtocolError,
  );
  await assert.rejects(
    loadTargetDescription(async () => '<xi:include href="self.xml"/>'),
    ProtocolError,
  );
});

/** Answers qXfer requests with the replies QEMU 7.2 actually sent in the recorded session. */
function recordedRequest(): (packet: string) => Promise<Buffer> {
  const replies = new Map<string, Buffer>();
  for (const unit of replayUnits(loadTranscript(fixture))) {
    const packet = new RspDecoder().push(unit.response).find((e) => e.type === "packet");
    if (packet?.type === "packet") replies.set(unit.request, packet.data);
  }
  return async (p) => {
    const reply = replies.get(p);
    if (!reply) throw new Error(`not in transcript: ${p}`);
    return reply;
  };
}

test("QEMU 7.2 x86-64: the g layout from the real target description (FIELD-NOTES offsets)", async () => {
  const request = recordedRequest();
  const layout = await loadTargetDescription(async (annex) =>
    (await readXferObject(request, "features", annex, { chunkSize: 0xff0 })).toString("utf8"),
  );
  assert.equal(layout.architecture, "i386:x86-64");
  const at = (name: string) => {
    const r = layout.byName.get(name);
    assert.ok(r, name);
    return [r.offset, r.bitsize / 8];
  };
  assert.deepEqual(at("rax"), [0, 8]);
  assert.deepEqual(at("r15"), [120, 8]);
  assert.deepEqual(at("rip"), [128, 8]);
  assert.deepEqual(at("eflags"), [136, 4]);
  assert.deepEqual(
    ["cs", "ss", "ds", "es", "fs", "gs"].map((n) => at(n)),
    [140, 144, 148, 152, 156, 160].map((o) => [o, 4]),
  );
  assert.deepEqual(at("fs_base"), [164, 8]);
  assert.deepEqual(at("gs_base"), [172, 8]);
  assert.deepEqual(at("k_gs_base"), [180, 8]);
  assert.deepEqual(at("cr0"), [188, 8]);
  assert.deepEqual(at("cr2"), [196, 8]);
  assert.deepEqual(at("cr3"), [204, 8]);
  assert.equal(layout.byName.get("cr3")?.regnum, 0x1d);
  assert.deepEqual(at("cr4"), [212, 8]);
  assert.deepEqual(at("cr8"), [220, 8]);
  assert.deepEqual(at("efer"), [228, 8]);
  assert.equal(layout.size, 608);
  // The commented-out segment bases must not be there.
  assert.equal(layout.byName.has("cs_base"), false);
});

test("readXferObject follows m/l chunks and bounds a stub that never finishes", async () => {
  const text = Buffer.from("0123456789abcdef#$}*");
  const asked: string[] = [];
  const chunked = async (p: string) => {
    asked.push(p);
    const m = /:([0-9a-f]+),([0-9a-f]+)$/.exec(p)!;
    const off = Number.parseInt(m[1]!, 16);
    const len = Number.parseInt(m[2]!, 16);
    const part = text.subarray(off, off + len);
    return Buffer.concat([Buffer.from(off + len >= text.length ? "l" : "m"), part]);
  };
  assert.deepEqual(await readXferObject(chunked, "features", "a.xml", { chunkSize: 7 }), text);
  assert.deepEqual(asked, [
    "qXfer:features:read:a.xml:0,7",
    "qXfer:features:read:a.xml:7,7",
    "qXfer:features:read:a.xml:e,7",
  ]);
  const endless = async () => Buffer.from("mxxxx");
  await assert.rejects(
    readXferObject(endless, "features", "a.xml", { chunkSize: 4, maxBytes: 100 }),
    ProtocolError,
  );
  const stuck = async () => Buffer.from("m");
  await assert.rejects(readXferObject(stuck, "features", "a.xml", { chunkSize: 4 }), ProtocolError);
  await assert.rejects(
    readXferObject(async () => Buffer.from("E00"), "features", "a", { chunkSize: 4 }),
    {
      code: "E_GDB_ERROR",
    },
  );
  await assert.rejects(
    readXferObject(async () => Buffer.alloc(0), "features", "a", { chunkSize: 4 }),
    {
      code: "E_GDB_UNSUPPORTED",
    },
  );
});
