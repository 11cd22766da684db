import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import {
  RspDecoder,
  type RspEvent,
  encodeNotification,
  encodePacket,
} from "../../src/transport/gdb/codec.js";
import { isStopReply, parseStopReply } from "../../src/transport/gdb/stop-reply.js";
import { buildLayout, parseTargetXml } from "../../src/transport/gdb/target-description.js";
import { chunks } from "./chunks.js";
import { fuzzTargets } from "./harness.js";

const SESSION = new URL("../../../test/fixtures/gdb/qemu72-session.json", import.meta.url);

/** What QEMU 7.2's gdbstub sent in the recorded session, as one byte stream. */
function received(): string[] {
  const s = JSON.parse(readFileSync(SESSION, "utf8")) as { entries: { dir: string; text: string }[] };
  return s.entries.filter((e) => e.dir === "recv").map((e) => e.text);
}

const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1");

const MAX_PACKET = 4096;

function decodeAll(parts: Uint8Array[]): RspEvent[] {
  const d = new RspDecoder({ maxPacketBytes: MAX_PACKET });
  return parts.flatMap((p) => d.push(p));
}

/** Packet bodies of the session: stop replies and target descriptions among them. */
function bodies(): string[] {
  return decodeAll([Buffer.from(received().join(""), "latin1")]).flatMap((e) =>
    e.type === "packet" ? [e.data.toString("latin1")] : [],
  );
}

fuzzTargets(import.meta.url, [
  {
    name: "gdb-rsp-stream",
    seeds: () => [
      Buffer.from(received().join(""), "latin1"),
      Buffer.concat([
        encodePacket(Buffer.from([0x23, 0x24, 0x7d, 0x2a, 0, 0xff])),
        encodeNotification("Stop:T05thread:01;"),
        Buffer.from('+-\x03$0*"#ad$ab*#00'),
      ]),
    ],
    run: (bytes) => {
      const events = decodeAll(chunks(bytes));
      // Split anywhere, the same stream decodes to the same events.
      assert.deepEqual(events, decodeAll([bytes]), "events depend on how the stream was split");
      assert.ok(events.length <= bytes.length, `${events.length} events from ${bytes.length} bytes`);
      for (const e of events) {
        // Run-length encoding repeats a byte at most 97 times per 3 bytes.
        if ("data" in e) assert.ok(e.data.length <= 33 * MAX_PACKET, `a ${e.data.length}-byte packet`);
      }
    },
    runs: 3000,
  },
  {
    name: "gdb-stop-reply",
    seeds: () => [
      ...bodies()
        .filter(isStopReply)
        .map((b) => Buffer.from(b, "latin1")),
      Buffer.from("T05thread:p1.1;core:0;watch:1000;06:0102030405060708;swbreak:;"),
      Buffer.from("W00;process:1a"),
      Buffer.from("X09"),
      Buffer.from("N"),
    ],
    run: (bytes) => {
      const packet = latin1(bytes);
      if (!isStopReply(packet)) return;
      const stop = parseStopReply(packet);
      if (stop.type === "signal") assert.ok(stop.registers.size + stop.fields.size <= packet.length);
    },
    runs: 3000,
  },
  {
    name: "gdb-target-xml",
    seeds: () =>
      bodies()
        .filter((b) => /^[lm]<\?xml/.test(b))
        .map((b) => Buffer.from(b.slice(1), "utf8")),
    run: (bytes) => {
      const layout = buildLayout(parseTargetXml(Buffer.from(bytes).toString("utf8")));
      assert.ok(layout.registers.length <= bytes.length / 6, `${layout.registers.length} registers`);
    },
    runs: 3000,
    maxRandomBytes: 16384,
  },
]);
