/**
 * Issue 14: what vmsight learns about a kernel build is kept, and a later command on the same
 * guest answers from it — and still equals the guest's own /proc.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { attach } from "../../src/lib/index.js";
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

  test("a guest whose kallsyms bytes differ from the kept build's gets no kept symbols", async () => {
    await ps(g);
    const dirPath = process.env.VMSIGHT_CACHE_DIR!;
    const name = readdirSync(dirPath).find((f) => f.endsWith(".json") && !f.endsWith(".layout.json"));
    assert.ok(name, "a kept build");
    const kept = JSON.parse(readFileSync(join(dirPath, name), "utf8")) as Record<string, string | number>;
    // The last byte of the kallsyms tables the entry was learned from, found from the entry's
    // own banner place: what a damaged dump or a rewritten table would differ in.
    const vm = await attach(g.qmpSocket);
    let at = 0n;
    let original: Uint8Array = new Uint8Array(0);
    try {
      const banner = (await vm.linux()).symbols.getAddress("linux_banner");
      const base = banner - BigInt(kept.bannerOffset!);
      at = base + BigInt(kept.kallsymsOffset!) + BigInt(kept.kallsymsSize!) - 1n;
      original = await vm.read(at, 1);
      await vm.write(at, Uint8Array.of(original[0]! ^ 0xff));
    } finally {
      await vm.close();
    }
    try {
      // A miss: the symbols are decoded from the guest again, and here the flipped byte (the end
      // of token_index on 6.1) leaves no valid table, which the run then says.
      const r = await runCli(["--qmp", g.qmpSocket, "ps", "--json"]);
      assert.notEqual(r.code, 0, "not answered from the kept symbols");
      assert.match(r.stderr, /kallsyms: no valid symbol table found/);
    } finally {
      const restore = await attach(g.qmpSocket);
      try {
        await restore.write(at, original);
      } finally {
        await restore.close();
      }
    }
    await eventually(g, async (view) => {
      const again = await ps(g);
      assertPsMatchesView(again.rows, view);
    });
  });
});
