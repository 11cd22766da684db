import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type DecoderOptions,
  RspDecoder,
  type RspEvent,
  checksum,
  encodePacket,
  escapeBinary,
} from "../../src/transport/gdb/codec.js";

const b = (s: string): Buffer => Buffer.from(s, "latin1");

/** Test-side checksum, written independently of the codec's. */
function cs(body: Buffer): string {
  let sum = 0;
  for (const x of body) sum += x;
  return (sum % 256).toString(16).padStart(2, "0");
}
const frame = (body: string | Buffer): Buffer => {
  const raw = typeof body === "string" ? b(body) : body;
  return Buffer.concat([b("$"), raw, b(`#${cs(raw)}`)]);
};

/** The same input cut at every position, and byte by byte, must give the same events. */
function decodeEverySplit(input: Buffer, expected: RspEvent[], opts: DecoderOptions = {}): void {
  assert.deepEqual(new RspDecoder(opts).push(input), expected, "whole input");
  for (let i = 0; i <= input.length; i++) {
    const d = new RspDecoder(opts);
    const events = [...d.push(input.subarray(0, i)), ...d.push(input.subarray(i))];
    assert.deepEqual(events, expected, `split at ${i}`);
  }
  const d = new RspDecoder(opts);
  const events: RspEvent[] = [];
  for (const byte of input) events.push(...d.push(Buffer.of(byte)));
  assert.deepEqual(events, expected, "byte by byte");
}

const packet = (s: string | Buffer): RspEvent => ({ type: "packet", data: typeof s === "string" ? b(s) : s });

test("real QEMU 7.2 replies decode (checksums as QEMU computed them)", () => {
  decodeEverySplit(b("+$OK#9a+$T05thread:p01.01;#06$vCont;c;C;s;S#62"), [
    { type: "ack" },
    packet("OK"),
    { type: "ack" },
    packet("T05thread:p01.01;"),
    packet("vCont;c;C;s;S"),
  ]);
  decodeEverySplit(b("$PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+#92"), [
    packet("PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+"),
  ]);
});

test("acks, naks and the interrupt byte outside packets; line noise is dropped", () => {
  decodeEverySplit(b("+-\x03zz\r\n+"), [
    { type: "ack" },
    { type: "nak" },
    { type: "interrupt" },
    { type: "ack" },
  ]);
});

test("escaped bytes are unescaped (}x -> x ^ 0x20)", () => {
  // }\x03 = '#', }\x04 = '$', }] = '}', }\x0a = '*'
  const raw = b("a}\x03}\x04}]}\x0az");
  decodeEverySplit(frame(raw), [packet("a#$}*z")]);
});

test("run-length encoding: count char minus 29 extra copies (GDB manual: '0* ' is 0000)", () => {
  decodeEverySplit(frame("0* "), [packet("0000")]);
  decodeEverySplit(frame('ab*"c'), [packet("abbbbbbc")]); // '"' = 34 -> 5 extra
  decodeEverySplit(frame("x*~"), [packet(`x${"x".repeat(126 - 29)}`)]);
});

test("run-length repeats the raw byte before '*', as GDB expands before unescaping", () => {
  // "}]" is an escaped '}'; "*!" repeats the raw ']' 4 more times.
  decodeEverySplit(frame("}]*!"), [packet("}]]]]")]);
});

test("bad checksum yields an event and the stream recovers", () => {
  decodeEverySplit(b("$OK#00$OK#9a"), [
    { type: "bad-checksum", notification: false, expected: 0x00, actual: 0x9a },
    packet("OK"),
  ]);
  decodeEverySplit(b("$OK#zz+"), [
    { type: "bad-checksum", notification: false, expected: -1, actual: 0x9a },
    { type: "ack" },
  ]);
});

test("notifications %...#cs", () => {
  const body = b("Stop:T05thread:p01.01;");
  decodeEverySplit(Buffer.concat([b("%"), body, b(`#${cs(body)}`), frame("OK")]), [
    { type: "notification", data: body },
    packet("OK"),
  ]);
});

test("a new '$' inside a packet restarts framing; '%' inside one is data", () => {
  decodeEverySplit(b("$garbage$OK#9a"), [packet("OK")]);
  decodeEverySplit(frame("a%b"), [packet("a%b")]);
});

test("malformed run-length and escape sequences are reported, not thrown", () => {
  decodeEverySplit(frame("* "), [
    { type: "malformed", notification: false, reason: "run-length marker with nothing to repeat" },
  ]);
  decodeEverySplit(frame("ab}"), [
    { type: "malformed", notification: false, reason: "escape byte at the end of the packet" },
  ]);
  decodeEverySplit(frame("a*"), [
    { type: "malformed", notification: false, reason: "run-length marker at the end of the packet" },
  ]);
  decodeEverySplit(frame("a*\x10"), [
    { type: "malformed", notification: false, reason: "invalid run-length count byte 0x10" },
  ]);
});

test("oversized packets are cut off and the decoder resynchronises", () => {
  const tooLong = { type: "malformed", notification: false, reason: "packet longer than 4 bytes" } as const;
  // The rest of the oversized frame ("+-" included) is skipped, not read as acks.
  decodeEverySplit(
    Buffer.concat([b("$abc+-fgh#00+"), frame("OK")]),
    [tooLong, { type: "ack" }, packet("OK")],
    {
      maxPacketBytes: 4,
    },
  );
  // Exactly at the limit is fine; one more byte is not.
  decodeEverySplit(frame("abcd"), [packet("abcd")], { maxPacketBytes: 4 });
  decodeEverySplit(b("$abcde#zz+"), [tooLong, { type: "ack" }], { maxPacketBytes: 4 });
  // A '$' inside the skipped frame still starts a new one.
  decodeEverySplit(b("$abcde$OK#9a"), [tooLong, packet("OK")], { maxPacketBytes: 4 });
});

test("binary payload: all 256 byte values round-trip through encodePacket and the decoder", () => {
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  const encoded = encodePacket(all);
  // 256 bytes + 4 escapes + '$' + '#cs'
  assert.equal(encoded.length, 256 + 4 + 4);
  for (const special of [0x23, 0x24, 0x2a, 0x7d]) {
    assert.equal(
      encoded.subarray(1, -3).includes(special) && special !== 0x7d,
      false,
      `raw 0x${special.toString(16)}`,
    );
  }
  decodeEverySplit(encoded, [packet(all)]);
  // qXfer-style binary reply: 'm' prefix then data with every framing byte in it.
  const xfer = Buffer.concat([b("m"), Buffer.of(0x23, 0x24, 0x7d, 0x2a, 0x00, 0xff, 0x03)]);
  decodeEverySplit(Buffer.concat([b("+"), encodePacket(xfer)]), [{ type: "ack" }, packet(xfer)]);
});

test("encodePacket escapes #, $, } and * and checksums the escaped text", () => {
  assert.deepEqual(encodePacket("OK"), b("$OK#9a"));
  assert.deepEqual(encodePacket("g"), b("$g#67"));
  // 4 * 0x7d + 0x03 + 0x04 + 0x5d + 0x0a = 0x262 -> 0x62
  assert.deepEqual(encodePacket(Buffer.of(0x23, 0x24, 0x7d, 0x2a)), b("$}\x03}\x04}]}\x0a#62"));
  assert.deepEqual(escapeBinary(b("a*b")), b("a}\x0ab"));
  assert.equal(checksum(b("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")), 0x9b);
});
