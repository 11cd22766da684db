import assert from "node:assert/strict";
import { test } from "node:test";
import { COMMANDS } from "../../src/cli/commands.js";
import { HELP_WIDTH, commandList, helpText } from "../../src/cli/help.js";

const squeeze = (s: string) => s.replace(/\s+/g, " ").trim();

test("vmsight --help fits a 100-column terminal and still holds every usage and summary whole", () => {
  const help = helpText();
  assert.equal(HELP_WIDTH, 100);
  for (const line of help.split("\n")) {
    assert.ok([...line].length <= 100, `${[...line].length} columns: ${line}`);
  }
  const flat = squeeze(help);
  for (const c of COMMANDS) {
    assert.ok(flat.includes(squeeze(c.usage)), `usage of ${c.name}`);
    assert.ok(flat.includes(squeeze(c.summary)), `summary of ${c.name}`);
  }
});

test("help layout: short usages share the summary's line, long ones keep option groups whole", () => {
  const lines = commandList(
    [
      { usage: "ps", summary: "processes" },
      { usage: "run --kernel K [--accel auto|kvm|tcg] [--memory 512M]", summary: "boot a guest" },
    ],
    40,
  );
  assert.deepEqual(lines, [
    "  ps                      processes",
    "  run --kernel K",
    "      [--accel auto|kvm|tcg]",
    "      [--memory 512M]",
    "                          boot a guest",
  ]);
});
