/**
 * Signal arithmetic against independent ground truth: the blog post's 32-bit formula, the
 * guest's own /proc/<pid>/status (ShdPnd 0000000000000100 after a pending SIGKILL), and the
 * first bytes of signal_wake_up_state() copied from the Debian 6.1 and 6.12 guests.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  SIGNALS,
  intReturn,
  parseSignal,
  sigaddset,
  sigismember,
  sigsetBit,
  tifBitFromCode,
  wakeStateFor,
  withFlag,
} from "../../src/events/kill-signals.js";
import { planSignalWrites } from "../../src/events/kill.js";
import { VmsightError } from "../../src/util/errors.js";

describe("signal numbers and names", () => {
  test("accepts names, SIG names, any case and numbers", () => {
    assert.equal(parseSignal(undefined), "KILL");
    assert.equal(parseSignal("kill"), "KILL");
    assert.equal(parseSignal("SIGTERM"), "TERM");
    assert.equal(parseSignal("19"), "STOP");
    assert.equal(parseSignal("sigcont"), "CONT");
  });
  test("x86 Linux numbers (kill -l in the guest: 9 KILL, 15 TERM, 18 CONT, 19 STOP)", () => {
    assert.deepEqual({ ...SIGNALS }, { KILL: 9, TERM: 15, CONT: 18, STOP: 19 });
  });
  test("rejects other signals with a usage error", () => {
    for (const bad of ["HUP", "0", "64", "", "SIG", "KILLL"]) {
      assert.throws(
        () => parseSignal(bad),
        (e: unknown) => e instanceof VmsightError && e.code === "E_USAGE",
      );
    }
  });
});

describe("sigset bits", () => {
  test("SIGKILL is bit 8 of word 0: the guest shows ShdPnd 0000000000000100", () => {
    assert.deepEqual(sigsetBit(9), { word: 0, mask: 0x100n });
    assert.equal(sigaddset(Buffer.alloc(8), 9).toString("hex"), "0001000000000000");
  });
  test("the post's formula set.sig[(sig-1)/32] |= 1 << ((sig-1)%32) with 32-bit words", () => {
    for (const sig of [1, 9, 15, 19, 32, 33, 64]) {
      const post = { word: Math.floor((sig - 1) / 32), mask: 1n << BigInt((sig - 1) % 32) };
      assert.deepEqual(sigsetBit(sig, 32), post);
      // The same bit of the same bytes in memory, whatever the word size.
      const bytes64 = sigaddset(Buffer.alloc(8), sig);
      const bytes32 = Buffer.alloc(8);
      bytes32.writeUInt32LE(Number(post.mask), post.word * 4);
      assert.deepEqual(bytes64, bytes32, `signal ${sig}`);
    }
  });
  test("sigaddset keeps other members and is idempotent; sigismember reads them back", () => {
    const set = Buffer.from("0200000000000080", "hex"); // SIGINT and signal 64
    const once = sigaddset(set, 15);
    assert.equal(once.toString("hex"), "0240000000000080");
    assert.deepEqual(sigaddset(once, 15), once);
    assert.ok(sigismember(once, 2) && sigismember(once, 15) && sigismember(once, 64));
    assert.ok(!sigismember(once, 9));
    assert.equal(set.toString("hex"), "0200000000000080", "input not modified");
  });
  test("out-of-range signals are refused", () => {
    for (const bad of [0, 65, -1, 1.5]) assert.throws(() => sigsetBit(bad), VmsightError);
  });
});

describe("TIF_SIGPENDING from the guest's code", () => {
  // signal_wake_up_state() as mapped in the running guests (lock prefix patched to ds: on UP).
  const deb612 = "660f1f000f1f440000534889fb3e800f0483ce01e8d7ce030085c074065bc3cccccccc";
  const deb61 = "0f1f440000534889fb3e800f0483ce01e8bbe3020085c074065bc3cccccccc4889df5b";
  test("Debian 6.1 and 6.12: lock orb $0x4,(%rdi) → bit 2", () => {
    assert.equal(tifBitFromCode(Buffer.from(deb612, "hex")), 2);
    assert.equal(tifBitFromCode(Buffer.from(deb61, "hex")), 2);
  });
  test("an SMP kernel keeps the f0 lock prefix; a generic-TIF kernel sets bit 1", () => {
    assert.equal(tifBitFromCode(Buffer.from("53f0800f04", "hex")), 2);
    assert.equal(tifBitFromCode(Buffer.from("53f0800f02c3", "hex")), 1);
  });
  test("no such instruction before the first ret, or a non-power-of-two mask: unknown", () => {
    assert.equal(tifBitFromCode(Buffer.from("53c3f0800f04", "hex")), undefined);
    assert.equal(tifBitFromCode(Buffer.from("f0800f06c3", "hex")), undefined);
    assert.equal(tifBitFromCode(Buffer.alloc(0)), undefined);
  });
  test("withFlag sets one bit of an unsigned long", () => {
    assert.equal(withFlag(0x8000000000000001n, 2), 0x8000000000000005n);
    assert.equal(withFlag(4n, 2), 4n);
  });
});

describe("what the kernel does per signal", () => {
  test("SIGKILL wakes TASK_WAKEKILL|TASK_INTERRUPTIBLE sleepers, others interruptible ones (include/linux/sched.h)", () => {
    assert.equal(wakeStateFor("KILL"), 0x100 | 0x1);
    assert.equal(wakeStateFor("TERM"), 0x1);
  });
  test("int return values in rax are sign-extended from 32 bits (-ESRCH = -3)", () => {
    assert.equal(intReturn(0xfffffffdn), -3);
    assert.equal(intReturn(0xdeadbeef00000000n), 0);
    assert.equal(intReturn(1n), 1);
  });
});

describe("the memory writes of methods memory and wake", () => {
  const state = {
    shared: { addr: 0xffff888001000050n, value: 0x4000n }, // bit 14: SIGTERM already pending
    threads: [
      { tid: 10, addr: 0xffff888002000000n, flags: 0n },
      { tid: 11, addr: 0xffff888003000000n, flags: 0x4n }, // TIF_SIGPENDING already set
      { tid: 12, addr: 0xffff888004000000n, flags: 0x8000000000000008n },
    ],
  };
  test("SIGKILL in the shared set, TIF_SIGPENDING where missing, other bits kept", () => {
    const w = planSignalWrites(state, 9, 2);
    assert.deepEqual(
      w.map((x) => [x.addr, x.before, x.after]),
      [
        [0xffff888001000050n, 0x4000n, 0x4100n],
        [0xffff888002000000n, 0n, 4n],
        [0xffff888004000000n, 0x8000000000000008n, 0x800000000000000cn],
      ],
    );
  });
  test("nothing to write when everything is already set", () => {
    assert.deepEqual(
      planSignalWrites(state, 15, 2).map((x) => x.what),
      ["thread 10 thread_info.flags", "thread 12 thread_info.flags"],
      "SIGTERM is already in the shared set",
    );
    const settled = {
      shared: { addr: 1n, value: 0x100n },
      threads: [{ tid: 1, addr: 2n, flags: 4n }],
    };
    assert.deepEqual(planSignalWrites(settled, 9, 2), []);
  });
});
