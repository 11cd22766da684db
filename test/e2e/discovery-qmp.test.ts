import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, rmSync, unlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureGuestImage } from "../../src/guests/guest-image.js";
import { QmpClient } from "../../src/transport/qmp/client.js";
import { runCli } from "../support/cli.js";
import { assertProfilePsMatches } from "../support/compare.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";

/**
 * Issue 9 item 3: `vmsight --qmp SOCK discover` with no file option. The guest is started
 * paused from a copy of its bzImage. Kept, the copy is QEMU's -kernel and discover reads it from
 * QEMU's command line; deleted once QEMU has loaded it, the path on QEMU's command line leads
 * nowhere and discover must read the kernel's own tables from guest RAM while it boots. Either
 * way the profile must be complete and `ps --no-btf --offsets` must equal the guest's /proc.
 */
const KERNELS = (process.env.VMSIGHT_DISCOVERY_QMP_KERNELS ?? "6.12,6.1").split(",");
// QEMU's own -kernel file is the source in discovery.test.ts (6.1, 6.12, 6.1-rt); here the
// file is gone, so the kernel must be read from guest RAM.
const MODES = [
  {
    name: "guest RAM (QEMU's -kernel file deleted)",
    deleteKernel: true,
    source: "guest RAM",
    log: /is not usable here \(ENOENT[^)]*\); reading it from guest RAM/,
  },
] as const;

interface DiscoverJson {
  converged: boolean;
  kernelSource: string;
  kernelFile?: string;
  slide: string;
  slideFoundMs: number;
  profile: Record<string, number>;
  traps: { remaining: number; verified: boolean };
  forks: { firstTotalForks: number; createsSeen: number; totalForks: number };
}

for (const kernelId of KERNELS) {
  for (const mode of MODES) {
    describe(`discover --qmp with no file option on ${kernelId}: kernel from ${mode.name}`, () => {
      let g: TestGuest;
      let dir: string;
      let kernelCopy: string;
      let profilePath: string;
      let result: DiscoverJson;
      let stderr: string;
      before(async () => {
        dir = mkdtempSync(join(tmpdir(), "vmsight-discovery-qmp-"));
        profilePath = join(dir, "profile.json");
        kernelCopy = join(dir, "bzImage");
        copyFileSync((await ensureGuestImage(kernelId)).kernel, kernelCopy);
        g = await bootTestGuest(kernelId, { paused: true, kernel: kernelCopy });
        if (mode.deleteKernel) {
          // QEMU's QMP socket exists before the machine does: a QMP answer means the machine,
          // and so the kernel file, is loaded. From then on only QEMU's command line names it.
          const qmp = await QmpClient.connect(g.qmpSocket);
          await qmp.execute("query-status");
          await qmp.close();
          unlinkSync(kernelCopy);
        }
        const r = await runCli(
          ["--qmp", g.qmpSocket, "discover", "--out", profilePath, "--timeout", "240", "--json"],
          300_000,
        );
        stderr = r.stderr;
        assert.equal(r.code, 0, `discover failed:\n${r.stderr}`);
        result = JSON.parse(r.stdout) as DiscoverJson;
        await g.waitReady(180_000);
      });
      after(async () => {
        await g?.stop();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      test("says where the kernel came from and converges from the first fork", () => {
        assert.match(stderr, mode.log);
        assert.equal(result.kernelSource, mode.source);
        if (!mode.deleteKernel) assert.equal(result.kernelFile, kernelCopy);
        assert.equal(result.converged, true);
        assert.equal(result.forks.firstTotalForks, 0, "traps armed before the first fork");
        assert.equal(result.forks.createsSeen, result.forks.totalForks, "creations seen = total_forks");
        assert.equal(result.traps.remaining, 0);
        assert.equal(result.traps.verified, true);
        for (const k of ["task_struct.tasks", "task_struct.pid", "task_struct.comm", "task_struct.pending"])
          assert.ok(k in result.profile, `${k} in the profile`);
      });

      test("ps --no-btf --offsets equals the guest's own /proc", async () => {
        await assertProfilePsMatches(g, profilePath);
      });
    });
  }
}
