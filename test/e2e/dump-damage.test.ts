/**
 * A real QEMU ELF dump, damaged the ways files get damaged (cut short, pages overwritten): the
 * reading commands end in a result or in one clear line naming the file, never in a stack trace
 * or the internal-error exit status.
 */
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Target } from "../../src/qemu/session.js";
import { PT_LOAD, parseElf64 } from "../../src/util/elf.js";
import { assertCleanError, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";

describe("damaged copies of a real dump", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-damage-"));
  const dump = join(dir, "guest.elf");
  let g: TestGuest | undefined;
  before(async () => {
    g = await bootTestGuest("6.12");
    await g.waitReady(180_000);
    const t = await Target.attach(g.qmpSocket);
    await t.qmp.execute(
      "dump-guest-memory",
      { paging: false, protocol: `file:${dump}` },
      { timeoutMs: 120_000 },
    );
    await t.close();
    await g.stop();
    g = undefined;
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Ends in rows (exit 0) or in a clean error that names the file (exit 1). */
  async function endsCleanly(path: string, command: string): Promise<number | null> {
    const r = await runCli(["--dump", path, command, "--json"]);
    if (r.code === 0) {
      assert.ok(Array.isArray(JSON.parse(r.stdout)), `${command}: rows`);
      return 0;
    }
    assertCleanError(r);
    assert.equal(r.code, 1, `${command}: ${r.stderr}`);
    assert.ok(r.stderr.includes(path), `${command} names the file: ${r.stderr}`);
    return r.code;
  }

  test("cut short: every reading command says the file is truncated", async () => {
    const whole = readFileSync(dump);
    const cut = join(dir, "cut.elf");
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    for (const command of ["ps", "kernel", "lsmod"]) {
      assert.equal(await endsCleanly(cut, command), 1);
    }
    const r = await runCli(["--dump", cut, "ps"]);
    assert.match(r.stderr, /past the end of the \d+-byte file/);
  });

  test("pages overwritten with noise, sparse and dense", async (t) => {
    const whole = readFileSync(dump);
    const elf = parseElf64(whole);
    const ram = elf.segments.filter((s) => s.type === PT_LOAD && s.fileSize > 0);
    let x = 0x9e3779b9;
    const noise = Buffer.alloc(4096);
    for (const [name, every] of [
      ["sparse", 64],
      ["dense", 3],
    ] as const) {
      const path = join(dir, `${name}.elf`);
      writeFileSync(path, whole);
      const fd = openSync(path, "r+");
      for (const s of ram) {
        for (let off = 0; off + 4096 <= s.fileSize; off += 4096 * every) {
          for (let i = 0; i < 4096; i++) {
            x = (Math.imul(x, 1103515245) + 12345) >>> 0;
            noise[i] = x >>> 24;
          }
          writeSync(fd, noise, 0, 4096, s.offset + off);
        }
      }
      closeSync(fd);
      for (const command of ["ps", "kernel", "lsmod", "pstree"]) {
        t.diagnostic(`${name} ${command}: exit ${await endsCleanly(path, command)}`);
      }
    }
  });
});
