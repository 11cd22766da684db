import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { constants, accessSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureGuestImage } from "../../src/guests/guest-image.js";
import { kernelSpec } from "../../src/guests/kernels.js";
import { detectAccel } from "../../src/qemu/accel.js";
import { launchGuest, parseMemorySize, qemuArgs } from "../../src/qemu/launch.js";
import { VmsightError } from "../../src/util/errors.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { type GuestView, parseGuestView, roleProcess } from "../support/oracle.js";

const KERNELS = ["6.1", "6.12"];
const BOOT_TIMEOUT = 10 * 60_000;
const log = (line: string): void => console.error(line);

/** [name, mtime, uid, gid] of every entry of a newc archive, read independently of cpio(1). */
function newcEntries(archive: Buffer): [string, number, number, number][] {
  const out: [string, number, number, number][] = [];
  let at = 0;
  for (let n = 0; n < 100_000; n++) {
    assert.equal(archive.toString("latin1", at, at + 6), "070701", `newc magic at ${at}`);
    const field = (i: number): number =>
      Number.parseInt(archive.toString("latin1", at + 6 + i * 8, at + 14 + i * 8), 16);
    const [uid, gid, mtime, fileSize, nameSize] = [field(2), field(3), field(5), field(6), field(11)];
    const name = archive.toString("latin1", at + 110, at + 110 + nameSize - 1);
    if (name === "TRAILER!!!") return out;
    out.push([name, mtime, uid, gid]);
    const pad4 = (x: number): number => (x + 3) & ~3;
    at = pad4(pad4(at + 110 + nameSize) + fileSize);
  }
  throw new Error("no TRAILER!!! in archive");
}

/** Whether we may open `path` for reading and writing. */
function usable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Runs fn with one environment variable set, restoring (or removing) it afterwards. */
function withEnv<T>(name: string, value: string, fn: () => T): T {
  const saved = process.env[name];
  process.env[name] = value;
  const restore = (): void => {
    if (saved === undefined) Reflect.deleteProperty(process.env, name);
    else process.env[name] = saved;
  };
  try {
    const result = fn();
    if (result instanceof Promise) return result.finally(restore) as T;
    restore();
    return result;
  } catch (e) {
    restore();
    throw e;
  }
}

const sha256 = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("launcher pieces (no guest)", () => {
  test("accelerator choice: hardware KVM only", () => {
    const pvm = detectAccel("auto", { devKvm: true, devKvmUsable: true, kvmModules: ["kvm", "kvm_pvm"] });
    assert.equal(pvm.accel, "tcg");
    assert.match(pvm.reason, /kvm_pvm/);
    assert.equal(detectAccel("auto", { devKvm: false, devKvmUsable: false, kvmModules: [] }).accel, "tcg");
    const intel = { devKvm: true, devKvmUsable: true, kvmModules: ["kvm", "kvm_intel"] };
    assert.equal(detectAccel("auto", intel).accel, "kvm");
    assert.equal(detectAccel("auto", { ...intel, devKvmUsable: false }).accel, "tcg");
    assert.equal(detectAccel("auto", { ...intel, kvmModules: ["kvm_amd"] }).accel, "kvm");
    assert.equal(detectAccel("tcg", intel).accel, "tcg");
    withEnv("VMSIGHT_ACCEL", "kvm", () => {
      const forced = detectAccel(undefined, { devKvm: false, devKvmUsable: false, kvmModules: [] });
      assert.equal(forced.accel, "kvm");
    });
    withEnv("VMSIGHT_ACCEL", "fast", () => assert.throws(() => detectAccel(), VmsightError));
  });

  test("this host: KVM only with kvm_intel or kvm_amd loaded and /dev/kvm usable (kvm_pvm: TCG)", () => {
    const hardware = existsSync("/sys/module/kvm_intel") || existsSync("/sys/module/kvm_amd");
    const choice = detectAccel("auto");
    assert.equal(choice.accel, hardware && usable("/dev/kvm") ? "kvm" : "tcg", choice.reason);
  });

  test("memory sizes", () => {
    assert.equal(parseMemorySize("512M"), 512 * 1024 * 1024);
    assert.equal(parseMemorySize("4G"), 4 * 1024 * 1024 * 1024);
    assert.equal(parseMemorySize("1t"), 1024 ** 4);
    for (const bad of ["", "lots", "512", "0M", "-1G", "1.5G", "2P", "32M", "2T", "512MB"]) {
      assert.throws(
        () => parseMemorySize(bad),
        (e: unknown) => e instanceof VmsightError && e.code === "E_USAGE",
        bad,
      );
    }
  });

  test("qmpOnly leaves -qmp as the only control channel", () => {
    const base = {
      kernel: "/k",
      initrd: "/i",
      append: "console=ttyS0",
      memory: "512M",
      cpus: 1,
      paused: false,
      accel: "tcg" as const,
      cpu: "qemu64",
      runDir: "/run/x",
      memoryPath: undefined,
      extraArgs: [],
    };
    const only = qemuArgs({ ...base, qmpOnly: true });
    assert.deepEqual(
      only.filter(
        (a) => a.startsWith("-qmp") || a.startsWith("-gdb") || a === "-s" || a.startsWith("-monitor"),
      ),
      ["-qmp"],
    );
    assert.ok(!only.some((a) => a.includes("socket,")), only.join(" "));
    assert.ok(only.includes("file,id=ser0,path=/run/x/serial.log"));
    const full = qemuArgs({ ...base, qmpOnly: false, paused: true, memoryPath: "/dev/shm/vmsight-x" });
    assert.ok(full.includes("-S"));
    assert.ok(full.includes("memory-backend-file,id=ram0,size=512M,mem-path=/dev/shm/vmsight-x,share=on"));
    assert.ok(
      qemuArgs({ ...base, qmpOnly: false, memfd: true }).includes(
        "memory-backend-memfd,id=ram0,size=512M,share=on",
      ),
    );
    assert.ok(!only.some((a) => a.startsWith("memory-backend")), "anonymous RAM is QEMU's default");
  });

  test("an early QEMU exit is a VmsightError quoting qemu.log, and leaves none of its files", async (t) => {
    const image = await ensureGuestImage("6.12", log);
    const parent = mkdtempSync(join(tmpdir(), "vmsight-t-"));
    const runDir = join(parent, "run");
    t.after(() => rmSync(parent, { recursive: true, force: true }));
    await assert.rejects(
      launchGuest({ kernel: image.kernel, initrd: image.initrd, runDir, extraArgs: ["-no-such-option"] }),
      (e: unknown) =>
        e instanceof VmsightError && e.code === "E_QEMU_START" && /no-such-option/.test(e.message),
    );
    assert.ok(!existsSync(join(runDir, "qemu.log")));
    assert.ok(!existsSync(join(runDir, "qmp.sock")));
  });

  test("shared-file RAM is a /dev/shm file of the guest's size, removed by stop()", async () => {
    const image = await ensureGuestImage("6.12", log);
    const g = await launchGuest({ ...image, paused: true, memory: "256M", memoryBackend: "shared-file" });
    try {
      assert.ok(g.memoryPath?.startsWith("/dev/shm/vmsight-"));
      assert.equal(statSync(g.memoryPath!).size, 256 * 1024 * 1024);
    } finally {
      await g.stop();
    }
    assert.ok(!existsSync(g.memoryPath!));
    assert.ok(!existsSync(g.runDir));
  });
});

describe("guest images", () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const freshDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), "vmsight-images-"));
    dirs.push(d);
    return d;
  };

  for (const id of KERNELS) {
    test(`${id}: two builds from scratch are byte-identical`, { timeout: BOOT_TIMEOUT }, async () => {
      const a = await ensureGuestImage(id, log, { imagesDir: freshDir() });
      const b = await ensureGuestImage(id, log, { imagesDir: freshDir() });
      assert.notEqual(a.initrd, b.initrd);
      assert.equal(basename(join(a.initrd, "..")), basename(join(b.initrd, "..")));
      assert.equal(sha256(a.initrd), sha256(b.initrd));
      const entries = newcEntries(readFileSync(a.initrd));
      const names = entries.map((e) => e[0]);
      assert.deepEqual(
        names,
        [...names].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)),
      );
      for (const want of [
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/workload",
        "bin/vmsight-view",
        "etc/vmsight/modules",
      ]) {
        assert.ok(names.includes(want), `${want} in the initramfs`);
      }
      for (const m of kernelSpec(id).modules) {
        assert.ok(names.includes(`lib/modules/${a.release}/kernel/${m}.ko`), `uncompressed ${m}.ko`);
      }
      assert.deepEqual(
        entries.filter(([, mtime, uid, gid]) => mtime !== 0 || uid !== 0 || gid !== 0),
        [],
        "every entry has mtime 0 and owner 0:0",
      );
    });
  }

  test(
    "vmcoreinfo: an image of its own adds qemu_fw_cfg; the default one goes without",
    {
      timeout: BOOT_TIMEOUT,
    },
    async () => {
      const dir = freshDir();
      const plain = await ensureGuestImage("6.1", log, { imagesDir: dir });
      const fwCfg = await ensureGuestImage("6.1", log, { imagesDir: dir, vmcoreinfo: true });
      const name = (i: { initrd: string }): string => basename(join(i.initrd, ".."));
      assert.match(name(plain), /^6\.1-[0-9a-f]{16}$/);
      assert.match(name(fwCfg), /^6\.1-vmcoreinfo-[0-9a-f]{16}$/);
      const ko = `lib/modules/${plain.release}/kernel/drivers/firmware/qemu_fw_cfg.ko`;
      const names = (i: { initrd: string }): string[] => newcEntries(readFileSync(i.initrd)).map((e) => e[0]);
      assert.ok(names(fwCfg).includes(ko), "qemu_fw_cfg.ko in the vmcoreinfo image");
      assert.ok(!names(plain).includes(ko), "no qemu_fw_cfg.ko in the default image");
    },
  );

  test("SOURCE_DATE_EPOCH is an input: another epoch, another image", { timeout: BOOT_TIMEOUT }, async () => {
    const a = await ensureGuestImage("6.12", log, { imagesDir: freshDir() });
    const b = await withEnv("SOURCE_DATE_EPOCH", "1700000000", () =>
      ensureGuestImage("6.12", log, { imagesDir: freshDir() }),
    );
    assert.notEqual(basename(join(a.initrd, "..")), basename(join(b.initrd, "..")));
    assert.deepEqual(new Set(newcEntries(readFileSync(b.initrd)).map((e) => e[1])), new Set([1700000000]));
  });
});

/** Module names as /proc/modules prints them: the file's base name with '-' as '_'. */
const moduleName = (path: string): string => basename(path).replace(/-/g, "_");

for (const id of KERNELS) {
  describe(`guest ${id} under TCG`, { timeout: BOOT_TIMEOUT }, () => {
    let guest: TestGuest | undefined;
    let view: GuestView;
    let bootView: GuestView;

    before(async () => {
      guest = await bootTestGuest(id, { accel: "tcg", memory: "512M", log });
      await guest.waitReady(60_000);
      log(`${id}: VMSIGHT-READY ${guest.readyAfterMs} ms after launch`);
      bootView = parseGuestView(guest.serial.output);
      view = await guest.view();
    });
    after(async () => {
      await guest?.stop();
    });

    test("the view is complete and clean", () => {
      assert.equal(view.release, guest!.image.release);
      assert.deepEqual(view.unparsed, []);
      assert.deepEqual([...view.roles.keys()].sort(), [
        "cjk",
        "full15",
        "invalid",
        "long",
        "memwrite",
        "piperead",
        "sleep",
        "space",
        "split",
        "stopped",
        "threads",
        "utf8",
      ]);
      // init printed the same roles at boot, before VMSIGHT-READY.
      assert.deepEqual([...bootView.roles], [...view.roles]);
      assert.ok(view.processes.length > 20, "kernel threads are listed too");
      for (const p of view.processes) {
        assert.ok(view.uids.has(p.pid), `uid of ${p.pid}`);
        assert.ok(view.cmdlines.has(p.pid), `cmdline of ${p.pid}`);
        assert.ok((view.threads.get(p.pid)?.length ?? 0) >= 1, `tasks of ${p.pid}`);
      }
    });

    test("each role has its comm, state and parent", () => {
      const want: [string, string, string][] = [
        ["space", "my worker 1", "S"],
        ["full15", "abcdefghijklmno", "S"],
        ["long", "averyveryverylo", "S"],
        ["threads", "wl-threads", "S"],
        ["piperead", "wl-piperead", "S"],
        ["sleep", "sleep", "S"],
        ["stopped", "sleep", "T"],
        ["memwrite", "wl-memwrite", "S"],
        ["utf8", "café", "S"],
        ["cjk", "工作负载", "S"],
        ["split", "a工作负载\\xe5\\xb7", "S"],
        ["invalid", "bad\\xffé\\\\x41", "S"],
      ];
      for (const [role, comm, state] of want) {
        const p = roleProcess(view, role);
        assert.deepEqual([role, p.comm, p.state, p.ppid], [role, comm, state, 1]);
        assert.equal(view.uids.get(p.pid)?.effective, 0);
      }
      assert.equal(view.cmdlines.get(roleProcess(view, "space").pid), "workload name my worker 1");
      assert.equal(view.cmdlines.get(roleProcess(view, "long").pid), "workload name averyveryverylongname");
      // The bytes themselves, not only their rendering: the kernel cut 工 (e5 b7 a5) after two bytes.
      assert.equal(roleProcess(view, "split").commBytes.toString("hex"), "61e5b7a5e4bd9ce8b49fe8bdbde5b7");
      assert.equal(view.cmdlines.get(roleProcess(view, "utf8").pid), "/bin/wl-café name café");
      assert.equal(
        view.cmdlines.get(roleProcess(view, "invalid").pid),
        "/bin/wl-bad\\xffé\\\\x41 name bad\\xffé\\\\x41",
      );
    });

    test("threads: five tasks, named by the workload", () => {
      const p = roleProcess(view, "threads");
      assert.equal(p.numThreads, 5);
      const tasks = view.threads.get(p.pid) ?? [];
      assert.deepEqual(tasks.map((t) => t.comm).sort(), [
        "wl-thread-0",
        "wl-thread-1",
        "wl-thread-2",
        "wl-thread-3",
        "wl-threads",
      ]);
      assert.deepEqual(new Set(tasks.map((t) => t.state)), new Set(["S"]));
      assert.equal(
        tasks.find((t) => t.comm === "wl-threads")?.pid,
        p.pid,
        "the main thread's tid is the pid",
      );
    });

    test("the kernel's listed modules are loaded", () => {
      for (const m of kernelSpec(id).modules) {
        const row = view.modules.find((r) => r.name === moduleName(m));
        assert.ok(row, `${moduleName(m)} in /proc/modules`);
        assert.equal(row.state, "Live");
        assert.ok(row.address >= 0xffffffff80000000n, `${row.name} at a kernel address`);
      }
    });

    test("maps of the workload processes; the memwrite counter lies in one", () => {
      for (const role of ["space", "full15", "long", "threads", "piperead", "memwrite"]) {
        const maps = view.maps.get(roleProcess(view, role).pid) ?? [];
        assert.ok(
          maps.some((m) => m.path === "/bin/workload" && m.perms === "r-xp"),
          `${role}: /bin/workload text`,
        );
      }
      const stopped = view.maps.get(roleProcess(view, "stopped").pid) ?? [];
      assert.ok(stopped.some((m) => m.path === "/bin/busybox"));
      const counter = view.counterAddress;
      assert.ok(counter !== undefined);
      const mem = view.maps.get(roleProcess(view, "memwrite").pid) ?? [];
      const holder = mem.find((m) => m.start <= counter && counter < m.end);
      assert.ok(holder?.perms.startsWith("rw"), "the counter is in a writable mapping");
    });

    test("the shell answers over the serial line", async () => {
      const long = roleProcess(view, "long").pid;
      assert.equal(await guest!.serial.command(`cat /proc/${long}/comm`), "averyveryverylo\n");
      const { status } = await guest!.serial.run("false");
      assert.equal(status, 1);
      assert.equal(await guest!.serial.command("workload forkloop 25"), "forkloop 25\n");
    });
  });
}

describe("a guest with nothing but -qmp", { timeout: BOOT_TIMEOUT }, () => {
  let guest: TestGuest | undefined;
  after(async () => {
    await guest?.stop();
  });

  test("boots to VMSIGHT-READY, seen in the serial log file", async () => {
    guest = await bootTestGuest("6.12", { qmpOnly: true, log });
    assert.equal(guest.guest.serialSocket, undefined);
    assert.throws(() => guest!.serial, VmsightError);
    const cmdline = readFileSync(`/proc/${guest.guest.pid}/cmdline`, "latin1").split("\0");
    assert.deepEqual(
      cmdline.filter((a) => /^-(qmp|gdb|s|monitor|mon|serial|chardev|device|netdev)$/.test(a)),
      ["-qmp", "-chardev", "-serial"],
    );
    const chardev = cmdline[cmdline.indexOf("-chardev") + 1] ?? "";
    assert.match(chardev, /^file,/);
    await guest.waitReady(60_000);
    log(`6.12 qmpOnly: VMSIGHT-READY ${guest.readyAfterMs} ms after launch`);
    const view = parseGuestView(readFileSync(guest.guest.serialLog, "latin1"));
    assert.equal(roleProcess(view, "long").comm, "averyveryverylo");
    assert.deepEqual(view.unparsed, []);
  });
});
