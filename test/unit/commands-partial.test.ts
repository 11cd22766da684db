/**
 * One unreadable process, VMA or module must not take a listing down: the row stays, with what
 * could be read and a warning saying what could not.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { psRows, threadRows } from "../../src/commands/processes.js";
import { ARG_AREA, CraftedKernel, CraftedTasks, PF_KTHREAD } from "../support/crafted-kernel.js";

function guest() {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  t.addProcess({ pid: 1, comm: "init", argv: ["/sbin/init"] });
  return { ck, t, ctx: ck.context() };
}

test("ps: a process whose mm is unmapped keeps its row, with an empty command line and a warning", () => {
  const { ck, t, ctx } = guest();
  t.addTask({ pid: 7, comm: "broken", mm: ck.unmapped });
  t.addProcess({ pid: 9, comm: Buffer.from("café"), argv: ["café", "x"] });
  const rows = psRows(ctx);
  assert.deepEqual(
    rows.map((r) => [r.pid, r.comm, r.cmdline]),
    [
      [1, "init", "/sbin/init"],
      [7, "broken", ""],
      [9, "café", "café x"],
    ],
  );
  assert.equal(rows[0]!.warnings, undefined, "a sound row has no warnings key");
  assert.equal(rows[2]!.warnings, undefined);
  assert.match(rows[1]!.warnings?.join("\n") ?? "", /command line unreadable: .*0x/);
});

test("ps: page tables that cannot be walked, or an argv page swapped out, are warnings too", () => {
  const { t, ctx } = guest();
  const badPgd = t.addMm({
    pgd: 0x4141n,
    argStart: ARG_AREA,
    argEnd: ARG_AREA + 4n,
    envStart: 0n,
    envEnd: 0n,
  });
  t.addTask({ pid: 5, comm: "nopgd", mm: badPgd });
  const p = t.addProcess({ pid: 6, comm: "swapped", argv: ["swapped"] });
  p.user.unmap(ARG_AREA);
  const rows = psRows(ctx);
  assert.deepEqual(
    rows.map((r) => r.pid),
    [1, 5, 6],
  );
  assert.match(rows[1]!.warnings?.[0] ?? "", /command line unreadable: .*pgd/);
  assert.match(rows[2]!.warnings?.[0] ?? "", /command line cut at 0x7ffd0000f000/);
  assert.equal(rows[2]!.cmdline, "");
});

test("threads: a task's own warnings reach its row", () => {
  const { ck, t, ctx } = guest();
  t.addTask({ pid: 8, comm: "nocred", mm: 0n, cred: ck.unmapped });
  const rows = threadRows(ctx);
  const row = rows.find((r) => r.tid === 8);
  assert.ok(row);
  assert.match(row.warnings?.[0] ?? "", /cred at .* is unreadable/);
  assert.equal(rows.find((r) => r.tid === 1)?.warnings, undefined);
});

test("a kernel thread's full name is cut at the kernel's 63 bytes, then decoded", () => {
  const { ck, t, ctx } = guest();
  const full = Buffer.from(`k${"工".repeat(30)}`);
  t.addTask({
    pid: 3,
    comm: full.subarray(0, 15),
    flags: PF_KTHREAD,
    kthread: { fullName: ck.allocString(full) },
  });
  const row = psRows(ctx).find((r) => r.pid === 3);
  assert.equal(row?.comm, `k${"工".repeat(20)}\\xe5\\xb7`);
});
