import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Target } from "../../src/qemu/session.js";
import { TypeDb } from "../../src/symbols/btf/db.js";
import { btfFromElfFile } from "../../src/symbols/btf/file.js";
import { BpftoolBtf } from "../support/bpftool.js";
import { cliJson, runCli } from "../support/cli.js";
/**
 * Issue 4 end to end: boot-time offset discovery (CN109857520) on real Debian kernels.
 *
 * The guest is started paused; `vmsight --qmp S discover`, given nothing but the QMP socket,
 * sees it boot, learns the offsets with no debug info and without the kernel's BTF, and removes
 * its traps. Then:
 *   - every discovered offset equals the one the kernel's own BTF (read from the vmlinux file
 *     here, independently) gives;
 *   - `ps --no-btf --offsets profile.json` equals the guest's own /proc view;
 *   - no trap is left: a fresh gdbstub client lets the guest run a fork loop and nothing stops it.
 */
import { assertProfilePsMatches } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { guestSymbol, linkedTextAddress } from "../support/kallsyms-oracle.js";

const KERNELS = (process.env.VMSIGHT_DISCOVERY_KERNELS ?? "6.1,6.12,6.1-rt").split(",");

interface DiscoverJson {
  converged: boolean;
  kernelSource: string;
  partial: boolean;
  stopReason?: string;
  profile: Record<string, number>;
  members: { member: string; eventsNeeded: number | null; required: boolean; candidates: number }[];
  traps: { remaining: number; verified: boolean; removed: { what: string; hits: number }[] };
  forks: { firstTotalForks: number; createsSeen: number; totalForks: number; highestPid: number };
  events: { total: number };
}

/** The BTF path a profile key stands for; module text is core_layout (6.1) or mem[MOD_TEXT] (6.4+). */
function btfOffset(db: TypeDb, key: string): number | undefined {
  const [struct, ...rest] = key.split(".");
  const path = rest.join(".");
  if (struct === "module" && (path === "module_core" || path === "core_text_size")) {
    const core = db.findOffsetof("module", "core_layout");
    if (core !== undefined)
      return db.findOffsetof("module", path === "module_core" ? "core_layout.base" : "core_layout.text_size");
    const text = Number(db.findEnumValue("MOD_TEXT") ?? 0n);
    const stride = db.sizeof("module_memory");
    const field = db.offsetof("module_memory", path === "module_core" ? "base" : "size");
    return db.offsetof("module", "mem") + text * stride + field;
  }
  return db.findOffsetof(struct!, path);
}

for (const kernelId of KERNELS) {
  describe(`boot-time discovery on a ${kernelId} guest, without debug info or BTF`, () => {
    let g: TestGuest;
    let dir: string;
    let profilePath: string;
    let result: DiscoverJson;
    let progress: string;
    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "vmsight-discovery-"));
      profilePath = join(dir, "profile.json");
      g = await bootTestGuest(kernelId, { paused: true });
      const r = await runCli(
        [
          "--qmp",
          g.qmpSocket,
          "discover",
          "--out",
          profilePath,
          // Well inside the test's own limit: a boot that never converges still ends with a
          // report of what was left, not a killed process.
          "--timeout",
          "240",
          "--json",
        ],
        300_000,
      );
      assert.equal(r.code, 0, `discover failed:\n${r.stderr}`);
      result = JSON.parse(r.stdout) as DiscoverJson;
      progress = r.stderr;
      await g.waitReady(180_000);
    });
    after(async () => {
      await g?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    test("discovery ends by itself, with every member converged and the process members reported first", () => {
      // The guest loads as few modules as the demo (guests/kernels.json): they must be enough.
      assert.equal(result.converged, true, `stopped: ${result.stopReason}`);
      // No file was given: the kernel came from QEMU's own command line.
      assert.equal(result.kernelSource, "qemu -kernel");
      assert.equal(result.partial, false);
      assert.equal(result.stopReason, undefined);
      assert.match(progress, /process members \(task_struct, mm_struct, cred\) converged at event \d+/);
      assert.doesNotMatch(progress, /timed out/);
    });

    test("every discovered offset equals the kernel's own BTF", () => {
      assert.equal(result.converged, true);
      const db = new TypeDb(btfFromElfFile(g.image.kernelFiles.vmlinux));
      const keys = Object.keys(result.profile);
      for (const k of [
        "task_struct.tasks",
        "task_struct.pid",
        "task_struct.comm",
        "task_struct.pending",
        "task_struct.real_cred",
        "cred.uid",
        "task_struct.worker_private",
        "kthread.full_name",
        "worker.desc",
        "worker.pool",
        "mm_struct.pgd",
        "module.name",
      ]) {
        assert.ok(keys.includes(k), `${k} in the profile`);
      }
      const mismatches = keys
        .map((k) => ({ k, ours: result.profile[k], btf: btfOffset(db, k) }))
        .filter((m) => m.ours !== m.btf);
      assert.deepEqual(mismatches, [], "member by member against BTF");
    });

    test("no creation was missed and every trap was removed", () => {
      assert.equal(result.forks.firstTotalForks, 0, "there from the first fork");
      assert.equal(result.forks.createsSeen, result.forks.totalForks, "creations seen = total_forks");
      assert.equal(result.traps.remaining, 0);
      assert.equal(result.traps.verified, true);
      assert.deepEqual(result.traps.removed.map((t) => t.what.split(" ")[0]).sort(), [
        "flush_sigqueue",
        "modules",
        "total_forks",
      ]);
    });

    test("ps --no-btf --offsets equals the guest's own /proc", async () => {
      await assertProfilePsMatches(g, profilePath);
    });

    test("libvmi-config and isf from the discovered profile: as the guest's kallsyms and bpftool's BTF say", async () => {
      const btf = new BpftoolBtf(g.image.kernelFiles.vmlinux);
      const noBtf = ["--no-btf", "--offsets", profilePath];
      const [o] = await cliJson<Record<string, string>[]>(["--qmp", g.qmpSocket, "libvmi-config", ...noBtf]);
      const keys = [
        "task_struct.tasks",
        "task_struct.mm",
        "task_struct.pid",
        "task_struct.comm",
        "mm_struct.pgd",
      ];
      assert.deepEqual(
        [o!.linux_tasks, o!.linux_mm, o!.linux_pid, o!.linux_name, o!.linux_pgd].map(Number),
        keys.map((k) => btf.offset(k)),
      );
      const files = g.image.kernelFiles;
      const slide = (await guestSymbol(g.serial, "_text")) - linkedTextAddress(files.vmlinuz, files.release);
      const initTask = await guestSymbol(g.serial, "init_task");
      assert.equal(BigInt(o!.linux_kaslr!), slide);
      assert.equal(BigInt(o!.linux_init_task!) + slide, initTask);

      const isf = await runCli(["--qmp", g.qmpSocket, "isf", ...noBtf], 120_000);
      assert.equal(isf.code, 0, isf.stderr);
      // Parsed as text: the addresses are beyond 2^53.
      assert.equal(BigInt(/"init_task":\{"address":(\d+)/.exec(isf.stdout)![1]!) + slide, initTask);
      const doc = JSON.parse(isf.stdout) as {
        user_types: Record<string, { fields: Record<string, { offset: number }> }>;
      };
      const written = Object.entries(doc.user_types)
        .filter(([s]) => s !== "list_head")
        .flatMap(([s, t]) => Object.entries(t.fields).map(([f, v]) => [`${s}.${f}`, v.offset] as const));
      assert.ok(written.length >= 15, `${written.length} members written`);
      assert.deepEqual(
        written.filter(([k, off]) => btf.offset(k) !== off),
        [],
        "every member at bpftool's offset",
      );
      // What Volatility will lack is said: discovery learns real_parent, never parent or files.
      assert.match(
        isf.stderr,
        /linux\.pslist cannot run: the profile lacks task_struct\.parent, task_struct\.files/,
      );
    });

    test("after convergence the guest runs untrapped: a fork loop stops nothing", async () => {
      const target = await Target.attach(g.qmpSocket);
      try {
        const gdb = await target.gdb();
        const stopped = gdb.continue();
        let early: unknown;
        void stopped.then((s) => {
          early = s;
        });
        const out = await g.serial.command("workload forkloop 200", 120_000);
        assert.match(out, /forkloop 200/);
        assert.equal(early, undefined, "nothing stopped the guest while it forked 200 times");
        await gdb.interrupt();
        const stop = await stopped;
        assert.equal(stop.type, "signal");
        assert.equal(
          stop.type === "signal" ? stop.watch : "x",
          undefined,
          "the stop is our interrupt, not a watchpoint",
        );
      } finally {
        await target.resume();
        await target.close();
      }
    });

    test("--no-btf without --offsets is a usage error", async () => {
      const r = await runCli(["--qmp", g.qmpSocket, "ps", "--no-btf"]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--no-btf needs --offsets/);
      writeFileSync(join(dir, "bad.json"), "[]");
      const bad = await runCli(["--qmp", g.qmpSocket, "ps", "--offsets", join(dir, "bad.json")]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /offsets profile/);
    });
  });
}

describe("vmsight discover --kernel --initrd: a managed boot", () => {
  test("boots the guest itself, converges, writes the profile and stops the guest", async () => {
    const kernelId = KERNELS.includes("6.12") ? "6.12" : KERNELS[0]!;
    const { ensureGuestImage } = await import("../../src/guests/guest-image.js");
    const image = await ensureGuestImage(kernelId);
    const dir = mkdtempSync(join(tmpdir(), "vmsight-discovery-"));
    try {
      const out = join(dir, "p.json");
      const r = await runCli(
        [
          "discover",
          "--kernel",
          image.kernel,
          "--initrd",
          image.initrd,
          "--append",
          image.append,
          "--out",
          out,
        ],
        300_000,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /all awaited members converged/);
      assert.match(r.stderr, /0 missed/);
      assert.match(r.stderr, /stub confirms none remains: yes/);
      const profile = JSON.parse(readFileSync(out, "utf8")) as Record<string, number>;
      const db = new TypeDb(btfFromElfFile(image.kernelFiles.vmlinux));
      assert.equal(profile["task_struct.pid"], db.offsetof("task_struct", "pid"));
      assert.equal(profile["mm_struct.arg_start"], db.offsetof("mm_struct", "arg_start"));
      const usage = await runCli(["discover", "--kernel", image.kernel]);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /needs --kernel and --initrd/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
