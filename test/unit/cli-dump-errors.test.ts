import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { buildElfCore } from "../fixtures/dump/elf-core.js";
import { assertCleanError, runCli } from "../support/cli.js";

const RAM = 1 << 20;

describe("vmsight --dump on damaged files: one line naming the file and the fault, and a hint", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-bad-dump-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const core = buildElfCore([{ paddr: 0n, bytes: new Uint8Array(RAM).fill(0x5a) }], [{ cr3: 0x1000n }]);
  const file = (name: string, bytes: Uint8Array) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };

  async function fails(path: string, what: RegExp): Promise<void> {
    const r = await runCli(["--dump", path, "ps"]);
    assertCleanError(r);
    assert.equal(r.code, 1, "a bad dump is not an internal error (70) nor a usage error (2)");
    const [line, hint] = r.stderr.trimEnd().split("\n");
    assert.ok(line!.includes(path), `names the file: ${line}`);
    assert.match(line!, what);
    assert.match(hint ?? "", /hint: /);
  }

  test("the intact crafted core opens (its registers read back)", async () => {
    const r = await runCli(["--dump", file("intact.elf", core), "regs", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).cr3, "0x1000");
  });

  test("truncated in the middle of guest RAM", async () => {
    await fails(
      file("half.elf", core.subarray(0, core.length - RAM / 2)),
      /past the end of the \d+-byte file/,
    );
  });

  test("truncated inside the ELF header, and empty", async () => {
    await fails(file("head.elf", core.subarray(0, 40)), /shorter than an ELF header/);
    await fails(file("empty.elf", new Uint8Array(0)), /0 bytes, shorter than an ELF header/);
  });

  test("a corrupted magic number", async () => {
    const bad = Buffer.from(core);
    bad.write("XLF", 1, "latin1");
    await fails(file("magic.elf", bad), /not a 64-bit little-endian ELF/);
  });

  test("corrupted program headers and notes", async () => {
    const phoff = Buffer.from(core);
    phoff.writeBigUInt64LE(1n << 40n, 32);
    await fails(file("phoff.elf", phoff), /program headers lie past the end/);
    // The PT_NOTE's size, then the first note's name size, set to near 2^32.
    const notes = Buffer.from(core);
    notes.writeBigUInt64LE(0xffff_fff0n, 64 + 32);
    await fails(file("note-size.elf", notes), /shorter than its headers say/);
    const name = Buffer.from(core);
    name.writeUInt32LE(0xffff_fffd, core.readUInt32LE(64 + 8));
    await fails(file("note-name.elf", name), /note runs past its segment/);
  });

  test("well-formed, but guest RAM that holds no kernel", async () => {
    await fails(file("no-kernel.elf", core), /kernel/);
  });
});
