import assert from "node:assert/strict";
import { test } from "node:test";
import { isStopReply, parseStopReply } from "../../src/transport/gdb/stop-reply.js";
import { ProtocolError } from "../../src/util/errors.js";

test("T05 with thread and a write watchpoint (QEMU's Z2 stop)", () => {
  const stop = parseStopReply("T05thread:p01.01;watch:ffffffff81234567;");
  assert.equal(stop.type, "signal");
  if (stop.type !== "signal") return;
  assert.equal(stop.signal, 5);
  assert.equal(stop.thread, "p01.01");
  assert.deepEqual(stop.watch, { kind: "watch", address: 0xffffffff81234567n });
});

test("rwatch and awatch", () => {
  for (const kind of ["rwatch", "awatch"] as const) {
    const stop = parseStopReply(`T05${kind}:1000;thread:p01.02;`);
    assert.ok(stop.type === "signal");
    assert.deepEqual(stop.type === "signal" && stop.watch, { kind, address: 0x1000n });
    assert.equal(stop.type === "signal" && stop.thread, "p01.02");
  }
});

test("interrupt stop from QEMU, registers, core, swbreak and unknown fields", () => {
  const stop = parseStopReply("T02thread:p01.01;");
  assert.equal(stop.type === "signal" && stop.signal, 2);
  const full = parseStopReply("T0506:0010000000000000;10:f0ff000000000000;core:1;swbreak:;library:;");
  assert.ok(full.type === "signal");
  if (full.type !== "signal") return;
  assert.deepEqual(full.registers.get(6), Buffer.from("0010000000000000", "hex"));
  assert.deepEqual(full.registers.get(16), Buffer.from("f0ff000000000000", "hex"));
  assert.equal(full.core, 1);
  assert.equal(full.swbreak, true);
  assert.equal(full.hwbreak, false);
  assert.equal(full.fields.get("library"), "");
});

test("S, W and X replies", () => {
  assert.deepEqual(parseStopReply("S0b"), {
    type: "signal",
    signal: 11,
    swbreak: false,
    hwbreak: false,
    registers: new Map(),
    fields: new Map(),
  });
  assert.deepEqual(parseStopReply("W00"), { type: "exited", status: 0 });
  assert.deepEqual(parseStopReply("W01;process:a"), { type: "exited", status: 1, process: "a" });
  assert.deepEqual(parseStopReply("X09;process:1f"), { type: "terminated", signal: 9, process: "1f" });
  assert.deepEqual(parseStopReply("N"), { type: "no-resumed" });
});

test("isStopReply tells stop replies from other packets", () => {
  for (const p of ["T05", "T02thread:p01.01;", "S05", "W00", "X09;process:1", "N"])
    assert.ok(isStopReply(p), p);
  for (const p of ["OK", "E01", "", "O48656c6c6f", "Sxx", "S05extra", "NO"]) assert.ok(!isStopReply(p), p);
});

test("malformed stop replies throw ProtocolError", () => {
  for (const p of ["", "T5", "Tzz", "Q05", "S05x", "T05watch:xyz;", "T0506:abc;"]) {
    assert.throws(() => parseStopReply(p), ProtocolError, p);
  }
  assert.throws(() => parseStopReply(`T05${"a:;".repeat(2000)}`), ProtocolError);
});
