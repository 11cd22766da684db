/**
 * vmsight's private directory against a hostile /tmp: a directory someone else made first
 * (another owner, a loose mode, a symlink, a file) is refused with a message that names the path
 * and the fix, never used. The last test plants one in front of the real CLI and a real QEMU.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, beforeEach, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { gdbSocketPath } from "../../src/qemu/qemu-process.js";
import { VmsightError } from "../../src/util/errors.js";
import { ensurePrivateDir, privateDir } from "../../src/util/private-dir.js";
import { assertCleanError, runCli } from "../support/cli.js";

const uid = process.geteuid!();
const notRoot = uid === 0 ? false : "chown to another uid needs root";
const saved = { TMPDIR: process.env.TMPDIR, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR };
let root = "";
let expected = "";

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "private-dir-"));
  process.env.TMPDIR = root;
  Reflect.deleteProperty(process.env, "XDG_RUNTIME_DIR");
  expected = join(root, `vmsight-${uid}`);
});

afterEach(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) Reflect.deleteProperty(process.env, k);
    else process.env[k] = v;
  }
  rmSync(root, { recursive: true, force: true });
});

/** Fails unless `fn` refuses `path` with E_UNSAFE_DIR, saying why and naming the fix. */
function assertRefused(fn: () => unknown, path: string, why: RegExp, fix: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VmsightError, String(e));
    assert.equal(e.code, "E_UNSAFE_DIR");
    assert.ok(e.message.includes(path), e.message);
    assert.match(e.message, why);
    assert.match(e.hint ?? "", fix);
    return true;
  });
}

test("a fresh private directory is made 0700 and ours, even under a loose or strict umask", () => {
  for (const mask of [0o000, 0o077, 0o277]) {
    rmSync(expected, { recursive: true, force: true });
    const old = process.umask(mask);
    try {
      assert.equal(privateDir(), expected);
    } finally {
      process.umask(old);
    }
    const st = lstatSync(expected);
    assert.ok(st.isDirectory());
    assert.equal(st.uid, uid);
    assert.equal(st.mode & 0o777, 0o700, `umask 0${mask.toString(8)}`);
  }
  assert.equal(privateDir(), expected, "and reused as it is on the next call");
});

test("a directory planted by another user is refused", { skip: notRoot }, () => {
  mkdirSync(expected, { mode: 0o700 });
  chownSync(expected, 65534, 65534);
  assertRefused(() => privateDir(), expected, /owned by uid 65534, not by you/, /rm -rf .*vmsight-/);
});

test("a directory of ours that others may enter or write is refused", () => {
  mkdirSync(expected);
  chmodSync(expected, 0o777);
  assertRefused(() => privateDir(), expected, /mode 0777, not 0700/, /chmod 700/);
  chmodSync(expected, 0o750);
  assertRefused(() => privateDir(), expected, /mode 0750/, /chmod 700/);
});

test("a symlink is refused even when it points at a good directory of ours", () => {
  const real = join(root, "elsewhere");
  mkdirSync(real, { mode: 0o700 });
  symlinkSync(real, expected);
  assertRefused(() => privateDir(), expected, /symbolic link/, /rm -rf/);
  const dangling = join(root, "dangling");
  symlinkSync(join(root, "not-yet"), dangling);
  assertRefused(() => ensurePrivateDir(dangling), dangling, /symbolic link/, /rm -rf/);
  assert.ok(!existsSync(join(root, "not-yet")), "nothing is created through the link");
});

test("a plain file in the directory's place is refused", () => {
  writeFileSync(expected, "");
  assertRefused(() => privateDir(), expected, /not a directory/, /rm -rf/);
});

test("$XDG_RUNTIME_DIR is used when it is ours and private, ignored when it is someone else's", () => {
  const runtime = join(root, "run-user");
  mkdirSync(runtime, { mode: 0o700 });
  process.env.XDG_RUNTIME_DIR = runtime;
  assert.equal(privateDir(), join(runtime, "vmsight"));
  chmodSync(runtime, 0o777); // e.g. a world-writable directory: not a runtime dir
  assert.equal(privateDir(), expected);
  process.env.XDG_RUNTIME_DIR = "relative/path";
  assert.equal(privateDir(), expected);
});

test("the gdbstub socket path is never given out in a planted directory", { skip: notRoot }, () => {
  mkdirSync(expected, { mode: 0o700 });
  chownSync(expected, 65534, 65534);
  assertRefused(() => gdbSocketPath(process.pid), expected, /owned by uid 65534/, /rm -rf/);
});

const QEMU = "qemu-system-x86_64";
const noQemu = spawnSync(QEMU, ["--version"]).error !== undefined ? `${QEMU} is not installed` : false;
let qemu: ChildProcess | undefined;
after(() => qemu?.kill("SIGKILL"));

test(
  "the CLI refuses a planted directory before QEMU's gdbstub is started in it",
  { skip: notRoot || noQemu },
  async () => {
    const sock = join(root, "q.sock");
    const args = ["-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "64"];
    qemu = spawn(QEMU, [...args, "-qmp", `unix:${sock},server=on,wait=off`], { stdio: "ignore" });
    for (let i = 0; i < 200 && !existsSync(sock); i++) await sleep(25);
    mkdirSync(expected, { mode: 0o777 });
    chmodSync(expected, 0o777);
    chownSync(expected, 65534, 65534);
    // runCli's child inherits TMPDIR, so it looks where the planted directory is.
    const regs = await runCli(["--qmp", sock, "regs"]);
    assertCleanError(regs);
    assert.match(regs.stderr, /^vmsight: refusing to use .*vmsight-0: it is owned by uid 65534/);
    assert.match(regs.stderr, /hint: remove it \(rm -rf /);
    assert.deepEqual(readdirSync(expected), [], "no socket was made in it");
    // Commands that need no private files still work: status reads QMP and guest RAM only.
    const status = await runCli(["--qmp", sock, "status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    qemu.kill("SIGKILL");
  },
);
