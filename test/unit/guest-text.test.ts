import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { decodeGuestBytes, decodeGuestStrings } from "../../src/util/guest-text.js";
import { renderGuestBytes } from "../support/oracle.js";

const hex = (h: string) => Buffer.from(h.replace(/ /g, ""), "hex");

/** The documented inverse, written here independently: `\\` → \, `\xNN` → NN, else UTF-8. */
function toBytes(text: string): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < text.length; ) {
    if (text[i] === "\\") {
      if (text[i + 1] === "\\") {
        out.push(Buffer.from([0x5c]));
        i += 2;
        continue;
      }
      assert.match(text.slice(i, i + 4), /^\\x[0-9a-f]{2}$/, `escape at ${i} of ${JSON.stringify(text)}`);
      out.push(Buffer.from([Number.parseInt(text.slice(i + 2, i + 4), 16)]));
      i += 4;
      continue;
    }
    const cp = text.codePointAt(i)!;
    const ch = String.fromCodePoint(cp);
    out.push(Buffer.from(ch, "utf8"));
    i += ch.length;
  }
  return Buffer.concat(out);
}

test("valid UTF-8 is text: café, CJK, emoji", () => {
  assert.equal(decodeGuestBytes(hex("63 61 66 c3 a9")), "café");
  assert.equal(decodeGuestBytes(Buffer.from("工作负载")), "工作负载");
  assert.equal(decodeGuestBytes(Buffer.from("a😀b")), "a😀b");
  assert.equal(decodeGuestBytes(Buffer.alloc(0)), "");
});

test("invalid bytes are \\xNN, each on its own; the valid text around them stays", () => {
  assert.equal(decodeGuestBytes(hex("62 61 64 ff fe 21")), "bad\\xff\\xfe!");
  // comm cut at 15 bytes inside 工 (e5 b7 a5): the two leading bytes are escaped.
  assert.equal(decodeGuestBytes(hex("61 e5b7a5 e4bd9c e8b49f e8bdbd e5 b7")), "a工作负载\\xe5\\xb7");
  assert.equal(decodeGuestBytes(hex("c3")), "\\xc3");
  assert.equal(decodeGuestBytes(hex("80 41")), "\\x80A");
});

test("overlong forms, surrogates and code points past U+10FFFF are not UTF-8", () => {
  assert.equal(decodeGuestBytes(hex("c0 af")), "\\xc0\\xaf");
  assert.equal(decodeGuestBytes(hex("e0 80 af")), "\\xe0\\x80\\xaf");
  assert.equal(decodeGuestBytes(hex("ed a0 80")), "\\xed\\xa0\\x80");
  assert.equal(decodeGuestBytes(hex("f4 90 80 80")), "\\xf4\\x90\\x80\\x80");
  assert.equal(decodeGuestBytes(hex("f0 8f bf bf")), "\\xf0\\x8f\\xbf\\xbf");
  assert.equal(decodeGuestBytes(hex("f4 8f bf bf")), "\u{10ffff}");
});

test("a backslash is doubled, so a literal \\x41 cannot pass for the byte 0x41", () => {
  assert.equal(decodeGuestBytes(Buffer.from("a\\x41")), "a\\\\x41");
  assert.notEqual(decodeGuestBytes(Buffer.from("a\\x41")), decodeGuestBytes(Buffer.from("aA")));
});

test("control characters (C0, DEL, C1) are escaped so they cannot drive a terminal", () => {
  assert.equal(decodeGuestBytes(Buffer.from("a\nb\x1b[2J\x7f")), "a\\x0ab\\x1b[2J\\x7f");
  assert.equal(decodeGuestBytes(hex("c2 9b 41 c2 a0")), "\\xc2\\x9bA\u00a0");
});

test("every byte string maps back to itself, and valid printable UTF-8 is left alone", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      assert.deepEqual(toBytes(decodeGuestBytes(bytes)), Buffer.from(bytes));
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 32 }), (s) => {
      const plain = s.replace(/[\x00-\x1f\x7f-\x9f\\]/g, "");
      assert.equal(decodeGuestBytes(Buffer.from(plain, "utf8")), plain);
    }),
    { numRuns: 2000 },
  );
});

test("NUL-separated strings: a final NUL ends the last one, empty ones are kept", () => {
  assert.deepEqual(decodeGuestStrings(Buffer.from("workload\0name\0caf\xc3\xa9\0", "latin1")), [
    "workload",
    "name",
    "café",
  ]);
  assert.deepEqual(decodeGuestStrings(Buffer.from("a\0\0b", "latin1")), ["a", "", "b"]);
  assert.deepEqual(decodeGuestStrings(Buffer.from("a\0\0", "latin1")), ["a", ""]);
  assert.deepEqual(decodeGuestStrings(Buffer.from("bad\xff", "latin1")), ["bad\\xff"]);
  assert.deepEqual(decodeGuestStrings(Buffer.alloc(0)), []);
});

test("the decoder agrees with the e2e oracle's independent rendering on mixed bytes", () => {
  // Pieces of valid UTF-8 (any code point, controls included), lone bytes, and cut sequences.
  const piece = fc.oneof(
    fc.string({ unit: "binary", maxLength: 4 }).map((t) => Buffer.from(t, "utf8")),
    fc.uint8Array({ maxLength: 3 }).map((b) => Buffer.from(b)),
    fc
      .string({ unit: "binary", minLength: 1, maxLength: 1 })
      .map((t) => Buffer.from(t, "utf8").subarray(0, -1)),
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
      const bytes = Buffer.concat(pieces);
      assert.equal(decodeGuestBytes(bytes), renderGuestBytes(bytes));
    }),
    { numRuns: 3000 },
  );
});
