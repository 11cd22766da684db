import assert from "node:assert/strict";
import { test } from "node:test";
import { warningLines } from "../../src/cli/linux-commands.js";

test("a table's rows that could not be read in full are named on stderr, one warning a line", () => {
  assert.deepEqual(
    warningLines([
      { pid: 1, comm: "init", cmdline: "/sbin/init" },
      { pid: 7, comm: "café", cmdline: "", warnings: ["command line unreadable: x", "cred y"] },
      { tid: 9, tgid: 7, comm: "t", warnings: ["z"] },
      { start: 0x1000n, end: 0x2000n, path: "?", warnings: ["file of VMA 0xffff1: w"] },
      { name: "dummy", base: 0n, warnings: ["users unreadable: u"] },
    ]),
    [
      "vmsight: warning: pid 7 (café): command line unreadable: x",
      "vmsight: warning: pid 7 (café): cred y",
      "vmsight: warning: tid 9 (t): z",
      "vmsight: warning: 0x1000-0x2000: file of VMA 0xffff1: w",
      "vmsight: warning: module dummy: users unreadable: u",
    ],
  );
  assert.deepEqual(warningLines([{ pid: 1, comm: "init" }]), []);
});
