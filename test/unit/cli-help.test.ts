import assert from "node:assert/strict";
import { test } from "node:test";
import { COMMANDS } from "../../src/cli/commands.js";
import { HELP_WIDTH, commandList, helpText } from "../../src/cli/help.js";
import { runCli } from "../support/cli.js";

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

test("COMMAND --help prints that command's usage and runs nothing (demo would boot a guest)", async () => {
  for (const name of ["demo", "serve", "kill", "trace"]) {
    const r = await runCli([name, "--help"], 20_000);
    assert.equal(r.code, 0, `${name} --help: ${r.stderr}`);
    const command = COMMANDS.find((c) => c.name === name)!;
    assert.ok(r.stdout.startsWith(`usage: vmsight ${command.usage}\n`), r.stdout);
    assert.equal(r.stderr, "");
  }
});
