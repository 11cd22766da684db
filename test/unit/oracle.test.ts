import assert from "node:assert/strict";
import { test } from "node:test";
import {
  OracleFormatError,
  parseGuestView,
  parseMapsLine,
  parseModuleLine,
  parseStatLine,
  renderGuestBytes,
  roleProcess,
} from "../support/oracle.js";

// Lines copied from a real 6.12 guest, plus crafted ones for the awkward cases.
const TRICKY_STAT =
  "142 (a) b (c) S 1 142 142 0 -1 4194304 50 0 0 0 1 0 0 0 20 0 1 0 315 1097728 143 18446744073709551615 4198400";
/** The view's hex payloads, from text written here one char per byte. */
const hx = (text: string): string => Buffer.from(text, "latin1").toString("hex");
const stat = (line: string): string => `stat ${hx(`${line}\n`)}`;
const task = (tgid: number, line: string): string => `task ${tgid} ${hx(`${line}\n`)}`;
const cmdline = (pid: number, ...args: string[]): string =>
  `cmdline ${pid} ${hx(args.map((a) => `${a}\0`).join(""))}`;
const maps = (pid: number, ...lines: string[]): string =>
  `maps ${pid} ${hx(lines.map((l) => `${l}\n`).join(""))}`;

const VIEW = [
  "# vmsight-view",
  "<<<VMSIGHT-VIEW-BEGIN v2>>>",
  "release 6.12.111+deb12-amd64",
  "roles space=999",
  "<<<VMSIGHT-VIEW-END>>>",
  "# vmsight-view",
  "<<<VMSIGHT-VIEW-BEGIN v2>>>",
  "release 6.12.111+deb12-amd64",
  "self 224",
  "roles space=132 full15=134 long=136 threads=138",
  "counter 0x4bc3e0",
  stat(
    "1 (init) S 0 0 0 0 -1 4194560 5115 30951 0 0 15 208 68 317 20 0 1 0 42 2314240 416 18446744073709551615 4198400",
  ),
  task(
    1,
    "1 (init) S 0 0 0 0 -1 4194560 5115 30951 0 0 15 208 68 317 20 0 1 0 42 2314240 416 18446744073709551615 4198400",
  ),
  "uid 1 0 0 0 0",
  "gid 1 0 0 0 0",
  cmdline(1, "/bin/sh", "/init"),
  stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0 18446744073709551615 0"),
  "cmdline 2 ",
  stat(
    "11 (kworker/0:1-events) I 2 0 0 0 -1 69238880 0 0 0 0 0 3 0 0 20 0 1 0 54 0 0 18446744073709551615 0",
  ),
  "cmdline 11",
  stat(TRICKY_STAT),
  "uid 142 1000 1001 1002 1003",
  cmdline(142, "workload", "name", "a) b (c"),
  stat(
    "138 (wl-threads) S 1 0 0 0 -1 4194304 59 0 0 0 0 2 0 0 20 0 5 0 343 34668544 143 18446744073709551615 4198400",
  ),
  task(
    138,
    "138 (wl-threads) S 1 0 0 0 -1 4194304 59 0 0 0 0 2 0 0 20 0 5 0 343 34668544 143 18446744073709551615 1",
  ),
  task(
    138,
    "140 (wl-thread-0) S 1 0 0 0 -1 1077936192 0 0 0 0 0 0 0 0 20 0 5 0 344 34668544 143 18446744073709551615 1",
  ),
  "[   12.345678] a kernel message that slipped in",
  maps(
    138,
    "00400000-00401000 r--p 00000000 00:02 83                                 /bin/workload",
    "004bd000-004c3000 rw-p 00000000 00:00 0 ",
    "7fbcab304000-7fbcab305000 ---p 00000000 00:00 0",
    "7ffcaf7b3000-7ffcaf7d4000 rw-p 00000000 00:00 0                          [stack]",
    "7f0000000000-7f0000001000 r--s 00001000 fd:01 1234567                    /tmp/a file (deleted)",
  ),
  // café, and a comm cut inside 工 with a path holding invalid bytes and a backslash.
  stat(
    "150 (caf\xc3\xa9) S 1 0 0 0 -1 4194304 59 0 0 0 0 2 0 0 20 0 1 0 343 34668544 143 18446744073709551615 4198400",
  ),
  cmdline(150, "/bin/wl-caf\xc3\xa9", "name", "caf\xc3\xa9"),
  stat(
    "151 (a\xe5\xb7\xa5\xe5\xb7) S 1 0 0 0 -1 4194304 59 0 0 0 0 2 0 0 20 0 1 0 343 34668544 143 18446744073709551615 4198400",
  ),
  cmdline(151, "workload", "name", "bad\xff\\x41"),
  maps(151, "00400000-00401000 r--p 00000000 00:02 84                                 /bin/wl-bad\xff\\x41"),
  "module dummy 12288 0 - Live 0xffffffffc04aa000",
  "module crc_itu_t 12288 2 dummy,crc7, Live 0xffffffffc04a4000 (OE)",
  "<<<VMSIGHT-VIEW-END>>>",
  "# ",
].join("\r\n");

test("a comm with spaces and parentheses ends at the last ')'", () => {
  const row = parseStatLine(TRICKY_STAT);
  assert.equal(row.pid, 142);
  assert.equal(row.comm, "a) b (c");
  assert.equal(row.state, "S");
  assert.equal(row.ppid, 1);
  assert.equal(row.pgrp, 142);
  assert.equal(row.session, 142);
  assert.equal(row.flags, 4194304);
  assert.equal(row.numThreads, 1);
  assert.equal(row.startTime, 315n);
  assert.equal(row.vsize, 1097728n);
});

test("the last complete view in the text is the one parsed, CRs and all", () => {
  const v = parseGuestView(VIEW);
  assert.equal(v.release, "6.12.111+deb12-amd64");
  assert.equal(v.viewerPid, 224);
  assert.deepEqual(
    [...v.roles],
    [
      ["space", 132],
      ["full15", 134],
      ["long", 136],
      ["threads", 138],
    ],
  );
  assert.equal(v.counterAddress, 0x4bc3e0n);
  assert.deepEqual(
    v.processes.map((p) => [p.pid, p.comm, p.state, p.ppid]),
    [
      [1, "init", "S", 0],
      [2, "kthreadd", "S", 0],
      [11, "kworker/0:1-events", "I", 2],
      [142, "a) b (c", "S", 1],
      [138, "wl-threads", "S", 1],
      [150, "café", "S", 1],
      [151, "a工\\xe5\\xb7", "S", 1],
    ],
  );
  assert.deepEqual(v.unparsed, ["[   12.345678] a kernel message that slipped in"]);
});

test("threads are grouped under their tgid with their own tid", () => {
  const v = parseGuestView(VIEW);
  const tasks = v.threads.get(138) ?? [];
  assert.deepEqual(
    tasks.map((t) => [t.tgid, t.pid, t.comm]),
    [
      [138, 138, "wl-threads"],
      [138, 140, "wl-thread-0"],
    ],
  );
  assert.equal(v.threads.get(1)?.length, 1);
  assert.equal(v.threads.get(2), undefined);
});

test("uids, gids and cmdlines, empty ones included", () => {
  const v = parseGuestView(VIEW);
  assert.deepEqual(v.uids.get(142), { real: 1000, effective: 1001, saved: 1002, fs: 1003 });
  assert.deepEqual(v.gids.get(1), { real: 0, effective: 0, saved: 0, fs: 0 });
  assert.equal(v.cmdlines.get(1), "/bin/sh /init");
  assert.equal(v.cmdlines.get(2), "");
  assert.equal(v.cmdlines.get(11), "");
  assert.equal(v.cmdlines.get(142), "workload name a) b (c");
  assert.equal(v.cmdlines.get(150), "/bin/wl-café name café");
  assert.equal(v.cmdlines.get(151), "workload name bad\\xff\\\\x41");
});

test("names are bytes: kept exactly, and shown by the README's rule", () => {
  const v = parseGuestView(VIEW);
  const split = v.processes.find((p) => p.pid === 151)!;
  assert.deepEqual(split.commBytes, Buffer.from("61e5b7a5e5b7", "hex"));
  assert.equal(v.maps.get(151)?.[0]?.path, "/bin/wl-bad\\xff\\\\x41");
  assert.equal(v.mapsLines.get(151)?.[0]?.endsWith(" /bin/wl-bad\\xff\\\\x41"), true);
  assert.equal(v.mapsLines.get(138)?.[1], "004bd000-004c3000 rw-p 00000000 00:00 0 ");
});

test("renderGuestBytes: UTF-8 as text, other bytes and controls escaped, backslash doubled", () => {
  const r = (h: string) => renderGuestBytes(Buffer.from(h, "hex"));
  assert.equal(r("636166c3a9"), "café");
  assert.equal(r("e5b7a5e4bd9c"), "工作");
  assert.equal(r("e5b7"), "\\xe5\\xb7");
  assert.equal(r("ff5c"), "\\xff\\\\");
  assert.equal(r("0a7f"), "\\x0a\\x7f");
  assert.equal(r("c29bc2a0"), "\\xc2\\x9b\u00a0");
  assert.equal(r("efbbbf41"), "\ufeffA");
  assert.equal(r("eda080"), "\\xed\\xa0\\x80");
  assert.equal(r("c0af"), "\\xc0\\xaf");
});

test("maps: named, anonymous (with or without the trailing space), spaces in the path", () => {
  const maps = parseGuestView(VIEW).maps.get(138) ?? [];
  assert.equal(maps.length, 5);
  assert.deepEqual(maps[0], {
    start: 0x400000n,
    end: 0x401000n,
    perms: "r--p",
    offset: 0n,
    dev: "00:02",
    inode: 83n,
    path: "/bin/workload",
  });
  assert.equal(maps[1]?.path, "");
  assert.equal(maps[1]?.start, 0x4bd000n);
  assert.equal(maps[2]?.path, "");
  assert.equal(maps[2]?.perms, "---p");
  assert.equal(maps[3]?.path, "[stack]");
  assert.equal(maps[3]?.end, 0x7ffcaf7d4000n);
  assert.deepEqual(maps[4], {
    start: 0x7f0000000000n,
    end: 0x7f0000001000n,
    perms: "r--s",
    offset: 0x1000n,
    dev: "fd:01",
    inode: 1234567n,
    path: "/tmp/a file (deleted)",
  });
});

test("modules: refcount, used-by list, state, address and taints", () => {
  const [dummy, crc] = parseGuestView(VIEW).modules;
  assert.deepEqual(dummy, {
    name: "dummy",
    size: 12288,
    refcount: 0,
    usedBy: [],
    state: "Live",
    address: 0xffffffffc04aa000n,
    taints: "",
  });
  assert.deepEqual(crc?.usedBy, ["dummy", "crc7"]);
  assert.equal(crc?.refcount, 2);
  assert.equal(crc?.taints, "OE");
  assert.equal(parseModuleLine("m 4096 - - Unloading 0xffffffffc0000000").refcount, undefined);
});

test("roleProcess finds a role's row or names the roles there are", () => {
  const v = parseGuestView(VIEW);
  assert.equal(roleProcess(v, "threads").comm, "wl-threads");
  assert.throws(() => roleProcess(v, "memwrite"), /no process for role "memwrite" \(roles: space, full15/);
  // space=132 is in the role table but has no stat line: that is an error too, not undefined.
  assert.throws(() => roleProcess(v, "space"), OracleFormatError);
});

test("malformed input is a typed error", () => {
  const codeIs = (e: unknown): boolean => e instanceof OracleFormatError;
  assert.throws(() => parseGuestView("no markers here"), codeIs);
  assert.throws(() => parseGuestView("<<<VMSIGHT-VIEW-BEGIN v2>>>\nstat 1 (x) S 0\n"), codeIs);
  assert.throws(() => parseStatLine("12 init S 0 0"), codeIs);
  assert.throws(() => parseStatLine("12 (init) S 0 0"), codeIs);
  assert.throws(() => parseStatLine("x (init) S 0 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0"), codeIs);
  assert.throws(() => parseMapsLine("00400000 r--p 00000000 00:02 83"), codeIs);
  assert.throws(() => parseModuleLine("dummy 12288"), codeIs);
  const wrap = (line: string): string => `<<<VMSIGHT-VIEW-BEGIN v2>>>\n${line}\n<<<VMSIGHT-VIEW-END>>>`;
  assert.throws(() => parseGuestView(wrap("stat 3120283e2053")), codeIs); // no final newline
  assert.throws(() => parseGuestView(wrap("cmdline 1 zz")), codeIs);
  assert.throws(() => parseGuestView(wrap("roles space")), codeIs);
  assert.throws(() => parseGuestView(wrap("uid 1 0 0 0 0 0")), codeIs);
  assert.throws(() => parseGuestView(wrap("counter 0xzz")), codeIs);
});
