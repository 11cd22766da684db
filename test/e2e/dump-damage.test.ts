/**
 * A real QEMU ELF dump, damaged the ways files get damaged (cut short, pages overwritten): the
 * reading commands end in a result or in one clear line naming the file, never in a stack trace
 * or the internal-error exit status.
 */
import assert from "node:assert/strict";
import {
  closeSync,
  copyFileSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ElfSegment, PT_LOAD, parseElf64 } from "../../src/util/elf.js";
import { assertCleanError, cliJson, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest, qemuElfDump } from "../support/guest.js";

describe("damaged copies of a real dump", () => {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-damage-"));
  const dump = join(dir, "guest.elf");
  let g: TestGuest | undefined;
  /** The dump's RAM: where each damaged copy gets its noise. */
  let ram: ElfSegment[];
  before(async () => {
    g = await bootTestGuest("6.12");
    await g.waitReady(180_000);
    await qemuElfDump(g.qmpSocket, dump, { timeoutMs: 120_000 });
    await g.stop();
    g = undefined;
    ram = parseElf64(readFileSync(dump)).segments.filter((s) => s.type === PT_LOAD && s.fileSize > 0);
  });
  after(async () => {
    await g?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Ends in rows (exit 0) or in a clean error that names the file (exit 1). */
  async function endsCleanly(path: string, command: string): Promise<string> {
    const r = await runCli(["--dump", path, command, "--json"]);
    if (r.code === 0) {
      assert.ok(Array.isArray(JSON.parse(r.stdout)), `${command}: rows`);
      return "rows";
    }
    assertCleanError(r);
    assert.equal(r.code, 1, `${command}: ${r.stderr}`);
    assert.ok(r.stderr.includes(path), `${command} names the file: ${r.stderr}`);
    return r.stderr.split("\n")[0]!;
  }

  test("cut short: every reading command says the file is truncated", async () => {
    const cut = join(dir, "cut.elf");
    copyFileSync(dump, cut);
    truncateSync(cut, statSync(dump).size >> 1);
    for (const command of ["ps", "kernel", "lsmod"]) {
      assert.match(await endsCleanly(cut, command), /^vmsight: /);
    }
    const r = await runCli(["--dump", cut, "ps"]);
    assert.match(r.stderr, /past the end of the \d+-byte file/);
  });

  /**
   * A copy of the dump with one page in `every` overwritten with noise, except in [keepFrom, keepTo).
   * Copied by the kernel (copy_file_range), not read into and written out of this process: ~0.3 s
   * instead of 2-3 s for the 512 MiB, the same bytes.
   */
  function damaged(name: string, every: number, keep: [bigint, bigint] = [0n, 0n]): string {
    const path = join(dir, `${name}.elf`);
    copyFileSync(dump, path);
    const fd = openSync(path, "r+");
    let x = 0x9e3779b9;
    const noise = Buffer.alloc(4096);
    for (const s of ram) {
      for (let off = 0; off + 4096 <= s.fileSize; off += 4096 * every) {
        const phys = s.paddr + BigInt(off);
        if (phys >= keep[0] && phys < keep[1]) continue;
        for (let i = 0; i < 4096; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          noise[i] = x >>> 24;
        }
        writeSync(fd, noise, 0, 4096, s.offset + off);
      }
    }
    closeSync(fd);
    return path;
  }

  const COMMANDS = ["ps", "kernel", "lsmod", "pstree", "pids"];

  test("pages overwritten with noise, from sparse to dense", async (t) => {
    for (const [name, every] of [
      ["sparse", 4096],
      ["light", 512],
      ["medium", 64],
      ["dense", 3],
    ] as const) {
      const path = damaged(name, every);
      for (const command of COMMANDS) t.diagnostic(`${name} ${command}: ${await endsCleanly(path, command)}`);
      rmSync(path); // 512 MiB each
    }
  });

  test("noise everywhere but the kernel image: the walkers meet damaged tasks and page tables", async (t) => {
    const [k] = await cliJson<{ text: string; physBase: string }[]>(["--dump", dump, "kernel"]);
    // A negative phys_base prints as "-0x5c00000", which BigInt() does not read.
    const signed = (h: string) => (h.startsWith("-") ? -BigInt(h.slice(1)) : BigInt(h));
    // __START_KERNEL_map maps the image at phys_base; keep 96 MiB from _text (text, data, BTF, bss).
    const text = BigInt(k!.text) - 0xffffffff80000000n + signed(k!.physBase);
    for (const every of [64, 8, 2]) {
      const path = damaged(`outside-${every}`, every, [text, text + (96n << 20n)]);
      for (const command of COMMANDS)
        t.diagnostic(`1 page in ${every} ${command}: ${await endsCleanly(path, command)}`);
      rmSync(path);
    }
  });
});
