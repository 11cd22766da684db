import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { kernelFromQemuArgs, machineProperty, qemuKernelFile } from "../../src/qemu/qemu-cmdline.js";

describe("QEMU's -kernel on its command line", () => {
  const qemu = (...args: string[]) => ["qemu-system-x86_64", "-S", ...args, "-nographic"];

  test("-kernel PATH and --kernel PATH, among options with and without an argument", () => {
    assert.equal(kernelFromQemuArgs(qemu("-kernel", "/boot/vmlinuz", "-m", "1G")), "/boot/vmlinuz");
    assert.equal(
      kernelFromQemuArgs(["qemu", "disk.img", "-no-reboot", "-m", "-kernel", "-s", "-kernel", "k"]),
      "k",
    );
    assert.equal(kernelFromQemuArgs(qemu("--kernel", "bz")), "bz");
  });

  test("the machine property: -machine/-M TYPE,kernel=PATH, with ,, for a comma", () => {
    assert.equal(kernelFromQemuArgs(qemu("-machine", "pc,accel=tcg,kernel=/k/bz")), "/k/bz");
    assert.equal(kernelFromQemuArgs(qemu("-M", "kernel=/k/a,,b,accel=tcg")), "/k/a,b");
    assert.equal(kernelFromQemuArgs(qemu("--machine", "type=q35,kernel=x")), "x");
    assert.equal(machineProperty("q35,kernelx=1,xkernel=2", "kernel"), undefined);
  });

  test("the last setting wins, whichever form it has", () => {
    assert.equal(kernelFromQemuArgs(qemu("-kernel", "a", "-machine", "pc,kernel=b")), "b");
    assert.equal(kernelFromQemuArgs(qemu("-machine", "kernel=b", "-kernel", "a")), "a");
    assert.equal(kernelFromQemuArgs(qemu("-kernel", "a", "-machine", "pc")), "a");
  });

  test("no kernel: none given, -kernel=PATH (QEMU rejects it), or a value that only looks like one", () => {
    assert.equal(kernelFromQemuArgs(qemu("-drive", "file=disk.img")), undefined);
    assert.equal(kernelFromQemuArgs(qemu("-kernel=/boot/vmlinuz")), undefined);
    assert.equal(kernelFromQemuArgs(qemu("-append", "-kernel")), undefined);
    assert.equal(kernelFromQemuArgs(qemu("-name", "-kernel", "disk.img")), undefined);
    assert.equal(kernelFromQemuArgs(["qemu-system-x86_64", "-initrd", "i", "-kernel"]), undefined);
  });
});

describe("qemuKernelFile reads a live process's command line", () => {
  let dir: string;
  let child: ChildProcess;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "vmsight-cmdline-"));
    mkdirSync(join(dir, "boot"));
    writeFileSync(join(dir, "boot", "bzImage"), "not really a kernel");
    // A stand-in for QEMU: only its argv and working directory matter.
    child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)", "--", "-kernel", "boot/bzImage"], {
      cwd: dir,
      stdio: "ignore",
    });
    await new Promise((r) => child.once("spawn", r));
  });
  after(() => {
    child?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("a relative path is QEMU's working directory's", () => {
    assert.deepEqual(qemuKernelFile(child.pid!), { kind: "usable", path: join(dir, "boot", "bzImage") });
  });

  test("a deleted file or a directory is unusable, and says why", () => {
    const path = join(dir, "boot", "bzImage");
    unlinkSync(path);
    const gone = qemuKernelFile(child.pid!);
    assert.equal(gone.kind, "unusable");
    assert.match(gone.kind === "unusable" ? gone.why : "", /^ENOENT/);
    mkdirSync(path);
    assert.deepEqual(qemuKernelFile(child.pid!), { kind: "unusable", path, why: "not a regular file" });
  });

  test("a process without -kernel has none", () => {
    assert.deepEqual(qemuKernelFile(process.pid), { kind: "none" });
  });
});
