/**
 * Issue 14: what vmsight learns about a kernel build is kept, and a later command on the same
 * guest answers from it — and still equals the guest's own /proc.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runCli } from "../support/cli.js";
import { type Ps, assertPsMatchesView, eventually } from "../support/compare.js";
import { type TestGuest, bootTestGuest, ramBackendFor } from "../support/guest.js";

const KERNEL = "6.1";

/** The steps one run took, from the line VMSIGHT_TIMINGS=1 prints on stderr. */
function steps(stderr: string): Record<string, number> {
  const line = stderr.split("\n").find((l) => l.startsWith("vmsight-timings "));
  assert.ok(line, `no timings line in stderr: ${stderr}`);
  return JSON.parse(line.slice("vmsight-timings ".length)) as Record<string, number>;
}

async function ps(g: TestGuest): Promise<{ rows: Ps[]; steps: Record<string, number> }> {
  const r = await runCli(["--qmp", g.qmpSocket, "ps", "--json"]);
  assert.equal(r.code, 0, r.stderr);
  return { rows: JSON.parse(r.stdout) as Ps[], steps: steps(r.stderr) };
}

describe(`the kernel build cache on a ${KERNEL} guest`, () => {
  let g: TestGuest;
  const dir = mkdtempSync(join(tmpdir(), "vmsight-kernels-seen-"));
  before(async () => {
    // The CLI runs in child processes that inherit these: a cache of this test's own.
    process.env.VMSIGHT_CACHE_DIR = join(dir, "kernels-seen");
    process.env.VMSIGHT_TIMINGS = "1";
    g = await bootTestGuest(KERNEL, { memoryBackend: ramBackendFor(KERNEL) });
    await g.waitReady(120_000);
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the first ps decodes kallsyms and keeps the build; the second answers from it, equal to /proc", async () => {
    await eventually(g, async (view) => {
      rmSync(process.env.VMSIGHT_CACHE_DIR!, { recursive: true, force: true });
      const first = await ps(g);
      assert.ok("kallsyms" in first.steps, "a cleared cache means kallsyms are decoded");
      assert.ok(readdirSync(process.env.VMSIGHT_CACHE_DIR!).some((f) => f.endsWith(".syms")));
      assertPsMatchesView(first.rows, view);
      const second = await ps(g);
      assert.ok("cache" in second.steps && !("kallsyms" in second.steps) && !("btf" in second.steps));
      assertPsMatchesView(second.rows, view);
    });
  });
});
