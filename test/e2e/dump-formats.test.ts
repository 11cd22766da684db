/**
 * `vmsight dump` in each format, read back with --dump: ps on every image equals ps of the paused
 * live guest it was taken from, and the guest's own view of its workload. A LiME image without
 * vmsight's sidecar (as LiME itself writes one) reads the same: the kernel is found without
 * registers.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Target } from "../../src/qemu/session.js";
import { cliJson, runCli } from "../support/cli.js";
import type { Ps } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import type { GuestView } from "../support/oracle.js";

const FORMATS = ["elf", "lime", "raw"] as const;

describe("dump in each format reads like the paused live guest", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-dumpfmt-"));
  const image = (f: string) => join(dir, `guest.${f}`);
  let g: TestGuest;
  let view: GuestView;
  let livePs: Ps[];
  before(async () => {
    g = await bootTestGuest("6.1");
    await g.waitReady(180_000);
    view = await g.view();
    const t = await Target.attach(g.qmpSocket);
    await t.pause();
    await t.close();
    livePs = await cliJson<Ps[]>(["--qmp", g.qmpSocket, "ps"]);
    for (const f of FORMATS) {
      const r = await runCli(["--qmp", g.qmpSocket, "dump", "--format", f, image(f)], 300_000);
      assert.equal(r.code, 0, r.stderr);
      if (f !== "elf") assert.match(r.stderr, /dump 100%/, "progress ends at 100%");
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

  test("--live copies while the guest runs and says so", async () => {
    const t = await Target.attach(g.qmpSocket);
    await t.resume();
    await t.close();
    const out = join(dir, "live.lime");
    const r = await runCli(["--qmp", g.qmpSocket, "dump", "--live", "--format", "lime", out], 300_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /--live/);
    const ps = await cliJson<Ps[]>(["--dump", out, "ps"]);
    for (const pid of view.roles.values())
      assert.ok(
        ps.some((p) => p.pid === pid),
        `pid ${pid}`,
      );
  });
});
