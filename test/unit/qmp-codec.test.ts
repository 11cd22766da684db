import assert from "node:assert/strict";
import { test } from "node:test";
import {
  MAX_LINE_BYTES,
  QmpDecoder,
  type QmpFrame,
  classify,
  encodeCommand,
} from "../../src/transport/qmp/codec.js";
import { ProtocolError } from "../../src/util/errors.js";

const enc = new TextEncoder();

/** A session as QEMU 7.2 writes it; the RESUME event sits between command 2 and its return. */
const SESSION = [
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}\r\n',
  '{"return": {}, "id": 1}\r\n',
  '{"timestamp": {"seconds": 1795433361, "microseconds": 94045}, "event": "RESUME"}\r\n',
  '{"return": "Grüße, 🐧 日本語 ±\\r\\n", "id": 2}\r\n',
  '{"id": 3, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n',
  '{"event": "DEVICE_DELETED", "data": {"device": "nœud-€"}, "timestamp": {"seconds": 5, "microseconds": 6}}\n',
].join("");

// Written out by hand from the wire text above, not produced by the decoder.
const EXPECTED = [
  {
    kind: "greeting",
    version: { major: 7, minor: 2, micro: 22 },
    package: "Debian 1:7.2+dfsg-7",
    capabilities: ["oob"],
  },
  { kind: "return", id: 1, value: {} },
  { kind: "event", event: "RESUME", data: {}, timestamp: { seconds: 1795433361, microseconds: 94045 } },
  { kind: "return", id: 2, value: "Grüße, 🐧 日本語 ±\r\n" },
  { kind: "error", id: 3, errorClass: "CommandNotFound", desc: "The command nope has not been found" },
  {
    kind: "event",
    event: "DEVICE_DELETED",
    data: { device: "nœud-€" },
    timestamp: { seconds: 5, microseconds: 6 },
  },
];

type Outcome = { message: unknown } | { code: string; text: string };

function outcomes(frames: QmpFrame[]): Outcome[] {
  return frames.map((f) => (f.ok ? { message: f.message } : { code: f.error.code, text: f.error.message }));
}

function decodeInPieces(bytes: Uint8Array, cuts: number[], maxLineBytes?: number): Outcome[] {
  const decoder = new QmpDecoder(maxLineBytes === undefined ? {} : { maxLineBytes });
  const frames: QmpFrame[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    frames.push(...decoder.push(bytes.subarray(from, cut)));
    from = cut;
  }
  assert.equal(decoder.bufferedBytes, 0);
  return outcomes(frames);
}

test("the session bytes contain multi-byte UTF-8 that splits can land inside", () => {
  const bytes = enc.encode(SESSION);
  assert.ok(bytes.length > SESSION.length + 10);
});

test("decoding a session split at every byte position gives the hand-written messages", () => {
  const bytes = enc.encode(SESSION);
  const expected = EXPECTED.map((message) => ({ message }));
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.deepEqual(decodeInPieces(bytes, [cut]), expected, `split at byte ${cut}`);
  }
});

test("decoding a session split at every pair of byte positions gives the same messages", () => {
  const bytes = enc.encode(SESSION);
  const expected = EXPECTED.map((message) => ({ message }));
  for (let a = 0; a <= bytes.length; a += 1) {
    for (let b = a; b <= bytes.length; b += 7) {
      assert.deepEqual(decodeInPieces(bytes, [a, b]), expected, `split at ${a} and ${b}`);
    }
  }
});

test("decoding one byte at a time gives the same messages", () => {
  const bytes = enc.encode(SESSION);
  const cuts = Array.from({ length: bytes.length }, (_, i) => i);
  assert.deepEqual(
    decodeInPieces(bytes, cuts),
    EXPECTED.map((message) => ({ message })),
  );
});

test("frames carry the received line without its terminator", () => {
  const frames = new QmpDecoder().push(enc.encode(SESSION));
  assert.deepEqual(
    frames.map((f) => f.line),
    SESSION.split(/\r?\n/).filter((l) => l !== ""),
  );
});

test("malformed lines are E_QMP_NOT_QMP naming what was seen, at every split, and decoding goes on", () => {
  const long = `x${"y".repeat(100)}`;
  const wire = `garbage\r\n[1]\r\n"str"\r\n{"foo": 1}\r\n${long}\r\n{"return": 5, "id": 9}\r\n`;
  const bytes = enc.encode(wire);
  const expected: Outcome[] = [
    { code: "E_QMP_NOT_QMP", text: 'not a QMP message: expected one JSON object per line, got: "garbage"' },
    { code: "E_QMP_NOT_QMP", text: 'not a QMP message: expected a JSON object, got: "[1]"' },
    { code: "E_QMP_NOT_QMP", text: 'not a QMP message: expected a JSON object, got: "\\"str\\""' },
    {
      code: "E_QMP_NOT_QMP",
      text: 'not a QMP message: a JSON object that is not a greeting, return, error or event: "{\\"foo\\": 1}"',
    },
    {
      code: "E_QMP_NOT_QMP",
      text: `not a QMP message: expected one JSON object per line, got: "x${"y".repeat(59)}…"`,
    },
    { message: { kind: "return", id: 9, value: 5 } },
  ];
  for (let cut = 0; cut <= bytes.length; cut++) {
    assert.deepEqual(decodeInPieces(bytes, [cut]), expected, `split at byte ${cut}`);
  }
});

test("a line over the byte bound is refused once, the rest of it skipped, at every split", () => {
  const max = 40;
  const ok = `{"return": "${"a".repeat(max - 14)}"}`; // exactly `max` bytes
  assert.equal(enc.encode(ok).length, max);
  const tooLong = `{"return": "${"b".repeat(max - 13)}"}`; // max + 1
  const bytes = enc.encode(`${ok}\r\n${tooLong}\r\n{"return": 1}\n`);
  const refused = `not a QMP message: line longer than ${max} bytes: ${JSON.stringify(tooLong.slice(0, 60))}`;
  // "\r" counts toward the line, so the max-byte line is accepted only with a bare "\n"...
  const expectedCrLf = [
    {
      code: "E_QMP_NOT_QMP",
      text: `not a QMP message: line longer than ${max} bytes: ${JSON.stringify(ok)}`,
    },
    { code: "E_QMP_NOT_QMP", text: refused },
    { message: { kind: "return", id: undefined, value: 1 } },
  ];
  for (let cut = 0; cut <= bytes.length; cut++) {
    const got = decodeInPieces(bytes, [cut], max);
    // An over-long line that is still unfinished is reported from what was buffered: same text.
    assert.deepEqual(got, expectedCrLf, `split at ${cut}`);
  }
  const lf = enc.encode(`${ok}\n${tooLong}\n{"return": 1}\n`);
  for (let cut = 0; cut <= lf.length; cut++) {
    assert.deepEqual(
      decodeInPieces(lf, [cut], max),
      [
        { message: { kind: "return", id: undefined, value: "a".repeat(max - 14) } },
        { code: "E_QMP_NOT_QMP", text: refused },
        { message: { kind: "return", id: undefined, value: 1 } },
      ],
      `split at ${cut}`,
    );
  }
});

test("the default bound is 16 MiB: a 16 MiB line passes, one byte more without a newline is refused at once", () => {
  assert.equal(MAX_LINE_BYTES, 16 * 1024 * 1024);
  const fill = "z".repeat(MAX_LINE_BYTES - '{"return": ""}'.length);
  const decoder = new QmpDecoder();
  const frames = decoder.push(enc.encode(`{"return": "${fill}"}\n`));
  assert.equal(frames.length, 1);
  assert.ok(frames[0]!.ok && frames[0]!.message.kind === "return");

  const junk = new Uint8Array(MAX_LINE_BYTES + 1).fill(0x71);
  const refused = decoder.push(junk);
  assert.equal(refused.length, 1);
  assert.ok(!refused[0]!.ok);
  assert.match(refused[0]!.error.message, /line longer than 16777216 bytes: "q{60}…"$/);
  assert.equal(decoder.bufferedBytes, 0, "an over-long line is not kept in memory");
  assert.deepEqual(outcomes(decoder.push(enc.encode('qqq\r\n{"return": 2}\r\n'))), [
    { message: { kind: "return", id: undefined, value: 2 } },
  ]);
});

test("invalid UTF-8 is E_QMP_NOT_QMP", () => {
  const bytes = new Uint8Array([...enc.encode('{"return": "'), 0xff, 0xfe, ...enc.encode('"}\r\n')]);
  const [frame] = new QmpDecoder().push(bytes);
  assert.ok(frame !== undefined && !frame.ok);
  assert.equal(frame.error.code, "E_QMP_NOT_QMP");
  assert.match(frame.error.message, /invalid UTF-8: "\{\\"return\\": \\"\uFFFD\uFFFD\\"}"/);
});

test("blank lines are skipped", () => {
  assert.deepEqual(outcomes(new QmpDecoder().push(enc.encode('\r\n \n{"return": 1, "id": "a"}\r\n'))), [
    { message: { kind: "return", id: "a", value: 1 } },
  ]);
});

test("the unfinished line can be previewed (for a peer that went quiet mid-line)", () => {
  const decoder = new QmpDecoder();
  decoder.push(enc.encode("(qemu) "));
  assert.equal(decoder.bufferedBytes, 7);
  assert.equal(decoder.bufferedText(), "(qemu) ");
});

test("classify refuses QMP-shaped objects with the wrong member types", () => {
  const bad: unknown[] = [
    { QMP: {} },
    { QMP: { version: { qemu: { major: "7", minor: 2, micro: 0 } } } },
    { error: "oops" },
    { error: { class: "GenericError" } },
    { event: "STOP", data: [1] },
    { event: 5 },
    null,
    42,
  ];
  for (const value of bad) {
    assert.throws(
      () => classify(value),
      (e: unknown) => e instanceof ProtocolError && e.code === "E_QMP_NOT_QMP",
      JSON.stringify(value),
    );
  }
});

test("classify fills what QEMU may leave out: greeting package, event data and timestamp", () => {
  assert.deepEqual(classify({ QMP: { version: { qemu: { major: 9, minor: 0, micro: 1 } } } }), {
    kind: "greeting",
    version: { major: 9, minor: 0, micro: 1 },
    package: "",
    capabilities: [],
  });
  assert.deepEqual(classify({ event: "STOP" }), {
    kind: "event",
    event: "STOP",
    data: {},
    timestamp: { seconds: 0, microseconds: 0 },
  });
  // An error reply to a request QEMU could not parse has no id.
  assert.deepEqual(classify({ error: { class: "GenericError", desc: "JSON parse error" } }), {
    kind: "error",
    id: undefined,
    errorClass: "GenericError",
    desc: "JSON parse error",
  });
});

test("encodeCommand writes QEMU's request shape, arguments only when given", () => {
  // The first form is byte-for-byte what QEMU 7.2 accepted in the recorded session.
  assert.equal(encodeCommand("query-status", undefined, 2), '{"execute":"query-status","id":2}');
  assert.deepEqual(
    JSON.parse(encodeCommand("human-monitor-command", { "command-line": "info mtree -f" }, 4)),
    {
      execute: "human-monitor-command",
      arguments: { "command-line": "info mtree -f" },
      id: 4,
    },
  );
});

test("encodeCommand turns unserialisable arguments into E_QMP_ENCODE, not a TypeError", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  for (const args of [{ addr: 1n }, cyclic]) {
    assert.throws(
      () => encodeCommand("x", args, 1),
      (e: unknown) => e instanceof ProtocolError && e.code === "E_QMP_ENCODE" && e.hint !== undefined,
    );
  }
});
