/**
 * The instructions a breakpoint is stepped over by a RIP write. Expected lengths are from the
 * Intel SDM's recommended multi-byte NOP table (vol. 2B, NOP) and the ENDBR64 encoding, and
 * the first bytes of real Debian kernel functions (6.12: `66 0f 1f 00` then the fentry NOP).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { skippableAt, skippableLength } from "../../src/arch/x86/skippable.js";

const b = (hex: string) => Buffer.from(hex.replace(/ /g, ""), "hex");

test("the SDM's recommended NOPs of 1 to 9 bytes", () => {
  const nops = [
    "90",
    "66 90",
    "0f 1f 00",
    "0f 1f 40 00",
    "0f 1f 44 00 00",
    "66 0f 1f 44 00 00",
    "0f 1f 80 00 00 00 00",
    "0f 1f 84 00 00 00 00 00",
    "66 0f 1f 84 00 00 00 00 00",
  ];
  nops.forEach((n, i) => assert.equal(skippableLength(b(`${n} cc cc`)), i + 1, n));
});

test("kernel function entries: ENDBR64, sealed ENDBR (nopw), the patched-out fentry call", () => {
  assert.equal(skippableLength(b("f3 0f 1e fa 0f 1f 44 00 00")), 4); // begin_new_exec on 6.12
  assert.equal(skippableLength(b("66 0f 1f 00 0f 1f 44 00 00")), 4); // kernel_clone on 6.12
  assert.equal(skippableLength(b("0f 1f 44 00 00 55 48 89 e5")), 5); // 6.1 style
  assert.equal(skippableLength(b("66 66 2e 0f 1f 84 00 00 00 00 00")), 11); // padding NOP
});

test("instructions with effects are not skippable", () => {
  for (const insn of [
    "55",
    "41 57",
    "e8 00 00 00 00",
    "48 89 e5",
    "cc",
    "0f 1f c8",
    "0f 0b",
    "f3 90",
    "0f 18 00",
  ]) {
    assert.equal(skippableLength(b(insn)), undefined, insn);
  }
  assert.equal(skippableLength(b("0f 1f 48 00")), undefined, "/1 of 0f 1f is not a NOP");
});

test("truncated bytes never read past the buffer", () => {
  assert.equal(skippableLength(b("0f 1f 84 00 00")), undefined);
  assert.equal(skippableLength(b("0f 1f")), undefined);
  assert.equal(skippableLength(b("")), undefined);
});

test("a call to a function that only returns is passed over; any other call is not", () => {
  // 6.1's flush_sigqueue as the vmlinux file holds it, before ftrace patches the call to a NOP.
  const at = 0xffffffff810b3d30n;
  const fentry = 0xffffffff81076560n;
  const call = b("e8 2b 28 fc ff 55 48 89 fd");
  assert.equal(skippableAt(call, at, [fentry]), 5);
  assert.equal(skippableAt(call, at + 0x10n, [fentry]), undefined, "the same bytes elsewhere call elsewhere");
  assert.equal(skippableAt(call, at, []), undefined);
  assert.equal(skippableAt(b("f3 0f 1e fa e8 00 00 00 00"), at, [fentry]), 4, "ENDBR first");
  assert.equal(skippableAt(b("e8 2b 28"), at, [fentry]), undefined, "truncated");
});
