import assert from "node:assert/strict";
import { test } from "node:test";
import { writeImage } from "../../src/commands/dump-image.js";
import type { Target } from "../../src/qemu/session.js";
import { VmsightError } from "../../src/util/errors.js";

/** A QEMU that answers query-dump with `states` in turn, recording what it was asked. */
function fakeQemu(states: readonly [status: string, completed: number][]) {
  const asked: [string, unknown][] = [];
  let polls = 0;
  const target = {
    memory: { source: { ranges: () => [{ start: 0n, size: 100n, writable: true }] } },
    qmp: {
      execute: async (command: string, args?: unknown) => {
        asked.push([command, args]);
        if (command !== "query-dump") return {};
        const [status, completed] = states[Math.min(polls++, states.length - 1)]!;
        return { status, completed, total: 100 };
      },
    },
  } as unknown as Target;
  return { target, asked };
}

test("an ELF dump runs detached and reports QEMU's progress from query-dump, ending at 100%", async () => {
  const { target, asked } = fakeQemu([
    ["active", 0],
    ["active", 40],
    ["completed", 100],
  ]);
  const seen: [bigint, bigint][] = [];
  await writeImage(target, "elf", "/tmp/x.elf", { progress: (done, total) => seen.push([done, total]) });
  assert.deepEqual(asked[0], [
    "dump-guest-memory",
    { paging: false, protocol: "file:/tmp/x.elf", detach: true },
  ]);
  assert.deepEqual(seen, [
    [0n, 100n],
    [40n, 100n],
    [100n, 100n],
  ]);
});

test("a dump QEMU reports failed is E_DUMP with a hint", async () => {
  const { target } = fakeQemu([
    ["active", 10],
    ["failed", 30],
  ]);
  await assert.rejects(
    writeImage(target, "elf", "/tmp/x.elf"),
    (e) => e instanceof VmsightError && e.code === "E_DUMP" && /30 of 100 bytes/.test(e.message) && !!e.hint,
  );
});
