/**
 * `vmsight dump` in each format, read back with --dump: ps on every image equals ps of the paused
 * live guest it was taken from, and the guest's own view of its workload. A LiME image without
 * vmsight's sidecar (as LiME itself writes one) reads the same: the kernel is found without
 * registers. Every other reading command runs on each format: lsmod, maps, env and dmesg are
 * compared with the guest's own /proc and dmesg; the rest with the ELF image's output (the three
 * images hold the same paused moment, and the ELF path is compared with the guest in
 * forensics.test.ts and volatility.test.ts).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Target } from "../../src/qemu/session.js";
import { cliJson, runCli } from "../support/cli.js";
import { type Ps, assertPsMatchesView, eventually } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { type GuestView, renderGuestBytes } from "../support/oracle.js";

const FORMATS = ["elf", "lime", "raw"] as const;

/** The guest's lines as vmsight renders guest bytes (a tab is \\x09, say). */
const lines = (text: string) =>
  text
    .replace(/\n$/, "")
    .split("\n")
    .map((l) => renderGuestBytes(Buffer.from(l, "utf8")));

describe("dump in each format reads like the paused live guest", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-dumpfmt-"));
  const image = (f: string) => join(dir, `guest.${f}`);
  let g: TestGuest;
  let view: GuestView;
  let livePs: Ps[];
  let environ: string[];
  let dmesg: string[];
  before(async () => {
    g = await bootTestGuest("6.1");
    await g.waitReady(180_000);
    view = await g.view();
    environ = lines(await g.serial.command(`tr '\\0' '\\n' < /proc/${view.roles.get("sleep")}/environ`));
    dmesg = lines(await g.serial.command("dmesg", 60_000));
    const t = await Target.attach(g.qmpSocket);
    await t.pause();
    await t.close();
    livePs = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    for (const f of FORMATS) {
      const r = await runCli(["--qmp", g.qmpSocket, "dump", "--format", f, image(f)], 300_000);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /dump 100%/, "progress ends at 100%");
    }
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const f of FORMATS) {
    test(`ps on the ${f} image equals the paused guest's, workload included`, async () => {
      const fromImage = await cliJson<Ps[]>(["--dump", image(f), "ps"]);
      assert.deepEqual(fromImage, livePs);
      for (const [role, pid] of view.roles) {
        const theirs = view.processes.find((p) => p.pid === pid)!;
        const ours = fromImage.find((p) => p.pid === pid);
        assert.equal(ours?.comm, theirs.comm, `role ${role}`);
        assert.equal(ours?.state, theirs.state, `role ${role}`);
      }
    });
  }

  test("LiME and raw images without vmsight's sidecar read the same (no registers recorded)", async () => {
    for (const f of ["lime", "raw"]) {
      const sidecar = `${image(f)}.vmsight.json`;
      assert.ok(existsSync(sidecar));
      renameSync(sidecar, `${sidecar}.away`);
      try {
        assert.deepEqual(await cliJson<Ps[]>(["--dump", image(f), "ps"]), livePs, f);
      } finally {
        renameSync(`${sidecar}.away`, sidecar);
      }
    }
  });

  test("check reads images too: nothing on this clean guest", async () => {
    for (const f of FORMATS) assert.deepEqual(await cliJson<unknown[]>(["--dump", image(f), "check"]), [], f);
  });

  /** The reading commands beyond ps and check, as argv after `--dump IMAGE`. */
  const readers = (): string[][] => {
    const sleep = String(view.roles.get("sleep"));
    return [
      ["lsof"],
      ["sockets"],
      ["env", sleep],
      ["mounts", sleep],
      ["ns"],
      ["containers"],
      ["dmesg"],
      ["lsmod"],
      ["maps", String(view.roles.get("memwrite"))],
      ["libvmi-config"],
    ];
  };
  const outputs = new Map<string, unknown>();
  /** --json rows of a command on an image, run once per image and command. */
  async function rows<T = unknown>(f: string, args: readonly string[]): Promise<T> {
    const key = `${f} ${args.join(" ")}`;
    if (!outputs.has(key)) outputs.set(key, await cliJson(["--dump", image(f), ...args]));
    return outputs.get(key) as T;
  }

  test("every reading command gives on LiME and raw what it gives on ELF, and ELF gives rows", async () => {
    // 30 runs, each its own process and none depending on another: two at a time (the guest is
    // paused, so the host's cores are theirs), then compared in the order below.
    const queue = readers().flatMap((args) => FORMATS.map((f) => () => rows(f, args)));
    const lane = async () => {
      for (let run = queue.shift(); run; run = queue.shift()) await run();
    };
    await Promise.all([lane(), lane()]);
    for (const args of readers()) {
      const elf = await rows<unknown[]>("elf", args);
      assert.ok(elf.length > 0, `${args.join(" ")} on the ELF image has rows`);
      for (const f of ["lime", "raw"])
        assert.deepEqual(await rows(f, args), elf, `${args.join(" ")} on ${f}`);
    }
    const isf = await Promise.all(FORMATS.map((f) => runCli(["--dump", image(f), "isf"], 120_000)));
    for (const r of isf) assert.equal(r.code, 0, r.stderr);
    assert.ok(isf[0]!.stdout.length > 1 << 20, "a whole symbol file");
    for (const r of isf.slice(1)) assert.ok(r.stdout === isf[0]!.stdout, "the same symbol file");
  });

  test("lsmod, maps, env and dmesg on every image equal the guest's own", async () => {
    const memwrite = String(view.roles.get("memwrite"));
    for (const f of FORMATS) {
      const mods = await rows<{ name: string; base: string; size: number; state: string }[]>(f, ["lsmod"]);
      assert.deepEqual(
        mods.map((m) => ({ name: m.name, size: m.size, state: m.state, base: BigInt(m.base) })),
        view.modules.map((m) => ({ name: m.name, size: m.size, state: m.state, base: m.address })),
        `lsmod on ${f}`,
      );
      const maps = await rows<{ start: string; end: string; perms: string; path: string }[]>(f, [
        "maps",
        memwrite,
      ]);
      assert.deepEqual(
        maps.map((m) => [BigInt(m.start), BigInt(m.end), m.perms, m.path]),
        view.maps.get(Number(memwrite))!.map((m) => [m.start, m.end, m.perms, m.path]),
        `maps on ${f}`,
      );
      const env = await rows<{ name: string; value: string | null }[]>(f, [
        "env",
        String(view.roles.get("sleep")),
      ]);
      assert.deepEqual(
        env.map((r) => (r.value === null ? r.name : `${r.name}=${r.value}`)),
        environ,
        `env on ${f}`,
      );
      // The log may have grown after the guest printed it: the guest's lines are where it starts.
      const log = await runCli(["--dump", image(f), "dmesg"]);
      assert.deepEqual(log.stdout.split("\n").slice(0, dmesg.length), dmesg, `dmesg on ${f}`);
    }
  });

  /** The guest's CLOCK_BOOTTIME, which stands still while QEMU has it stopped, and when it was read. */
  async function guestClock(): Promise<{ uptime: number; sent: number; answered: number }> {
    const sent = performance.now() / 1000;
    const out = await g.serial.command("cat /proc/uptime");
    return { uptime: Number.parseFloat(out), sent, answered: performance.now() / 1000 };
  }

  test("--live copies while the guest runs and says so", async () => {
    const t = await Target.attach(g.qmpSocket);
    await t.resume();
    await t.close();
    const out = join(dir, "live.lime");
    const before = await guestClock();
    const r = await runCli(["--qmp", g.qmpSocket, "dump", "--live", "--format", "lime", out], 300_000);
    const after = await guestClock();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--live/);
    // The clock test below, the other way round: a guest that ran counted all the time that
    // surely passed (less /proc/uptime's 10 ms steps).
    assert.ok(after.uptime - before.uptime >= after.sent - before.answered - 0.02, "not stopped");
    const ps = await cliJson<Ps[]>(["--dump", out, "ps"]);
    for (const pid of view.roles.values())
      assert.ok(
        ps.some((p) => p.pid === pid),
        `pid ${pid}`,
      );
  });
  // After --live: the guest is running again.
  test("dump of a running guest: paused while QEMU writes, running after, the image one instant of it", async () => {
    const out = join(dir, "running.elf");
    const before = await guestClock();
    const r = await runCli(["--qmp", g.qmpSocket, "dump", out], 300_000);
    const after = await guestClock();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /dump \d+% .*\n(.*\n)*.*dump 100%/, "QEMU's progress, ending at 100%");
    // Whatever the serial round trips took, at least this much host time passed between the
    // reads; a guest that ran throughout would have counted it all.
    const surelyElapsed = after.sent - before.answered;
    const counted = after.uptime - before.uptime;
    assert.ok(
      counted < surelyElapsed,
      `the guest counted ${counted} s of at least ${surelyElapsed} s: it was stopped`,
    );
    // It answers on its console, so it runs; and its clock moves on.
    const later = await guestClock();
    assert.ok(later.uptime > after.uptime, "the guest's clock runs after the dump");
    const ps = await cliJson<Ps[]>(["--dump", out, "ps"]);
    await eventually(g, async (v) => assertPsMatchesView(ps, v));
  });
});
