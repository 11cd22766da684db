import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { before, describe, test } from "node:test";
import { readRelocatedKernel, waitForRelocatedKallsyms } from "../../src/discovery/kernel-in-ram.js";
import type { ResidentRam } from "../../src/discovery/resident.js";
import { ensureKernel } from "../../src/guests/kernels.js";
import { BufferPhysicalMemory } from "../../src/memory/buffer.js";
import { layoutElfImage } from "../../src/symbols/kallsyms/elf-image.js";
import { type KallsymsLayout, recoverKallsymsWithLayout } from "../../src/symbols/kallsyms/recover.js";
import type { SymbolTable } from "../../src/symbols/kallsyms/table.js";
import { pa } from "../../src/util/address.js";
import { parseElf64 } from "../../src/util/elf.js";
import { VmsightError } from "../../src/util/errors.js";

/**
 * The RAM path of boot discovery on a replay of what the decompressor leaves in RAM, built from
 * a real Debian kernel: its image at one place unrelocated (the raw ELF copy), then moved 2 MiB
 * lower with kallsyms_relative_base relocated by a slide. The expected symbols are the image
 * file's own tables, decoded here from the file.
 */
const RAM = 96 << 20;
const RAW = 0x2200000;
const FINAL = 0x2000000;
const SLIDE = 0x6600000n;
/** A guest that never ends and whose pauses are not observed here. */
const run = { ended: false, whilePaused: async <T>(fn: () => T) => fn() };

// One kernel: decoding its tables is the slow part of this file. The e2e test runs the RAM path
// on 6.1 and 6.12 guests.
for (const id of ["6.12"]) {
  describe(`kernel from guest RAM (${id})`, () => {
    let image: Uint8Array;
    let base: bigint;
    let table: SymbolTable;
    let layout: KallsymsLayout;
    before(() => {
      const bytes = readFileSync(ensureKernel(id).vmlinux);
      ({ image, base } = layoutElfImage(parseElf64(bytes), bytes));
      ({ table, layout } = recoverKallsymsWithLayout(image, base));
    });
    const ramWith = (copies: { at: number; slide: bigint }[]): ResidentRam => {
      const mem = new BufferPhysicalMemory();
      const ram = mem.map(0, RAM);
      for (const c of copies) {
        Buffer.from(image).copy(ram, c.at);
        const rb = c.at + Number(layout.relativeBaseAddr! - base);
        ram.writeBigUInt64LE(layout.relativeBase! + c.slide, rb);
      }
      return { memory: mem, runs: () => [{ start: 0n, size: RAM }] };
    };
    const wait = (ram: ResidentRam, slide?: bigint) =>
      waitForRelocatedKallsyms(ram, {
        log: () => {},
        timeoutMs: 300,
        run,
        ...(slide === undefined ? {} : { slide }),
      });

    test("an unrelocated copy is never taken for the kernel, unless --slide 0 says nothing moves", async () => {
      const ram = ramWith([{ at: RAW, slide: 0n }]);
      await assert.rejects(wait(ram), (e: unknown) => {
        assert.ok(e instanceof VmsightError);
        assert.equal(e.code, "E_NO_SLIDE");
        assert.match(e.message, /never relocated/);
        return true;
      });
      assert.equal((await wait(ram, 0n)).slide, 0n);
    });

    test("the relocated copy gives the slide, the file's symbols and its place in RAM", async () => {
      const ram = ramWith([
        { at: RAW, slide: 0n },
        { at: FINAL, slide: SLIDE },
      ]);
      const copy = await wait(ram);
      assert.equal(copy.slide, SLIDE);
      assert.equal(copy.tokenTable, BigInt(FINAL) + (layout.tokenTableAddr - base));
      const k = readRelocatedKernel(ram, copy, () => {});
      assert.equal(k.base, base);
      for (const name of ["total_forks", "modules", "init_task", "flush_sigqueue", "linux_banner"])
        assert.equal(k.symbols.findAddress(name), table.findAddress(name), name);
      assert.equal(k.symbols.symbols.length, table.symbols.length);
      const at = Number(table.findAddress("flush_sigqueue")! - base);
      assert.ok(Buffer.from(k.image.subarray(at, at + 64)).equals(image.subarray(at, at + 64)));
      // Another slide than the one asked for is not this kernel.
      await assert.rejects(wait(ram, SLIDE + 0x200000n), /never relocated/);
      // Tables that changed since they were seen (the guest ran on) are not trusted.
      const rb = BigInt(FINAL) + (layout.relativeBaseAddr! - base);
      ram.memory.write(pa(rb), Buffer.alloc(8));
      assert.throws(() => readRelocatedKernel(ram, copy, () => {}), /changed between two reads/);
    });

    test("tables that do not decode yet are tried again at the next poll, not only at the next full scan", async () => {
      // The decompressor is caught mid-copy: the token table is there, the names are not yet.
      const ram = ramWith([{ at: FINAL, slide: SLIDE }]);
      const names = FINAL + Number(layout.namesAddr - base);
      const written = Buffer.from(
        image.subarray(Number(layout.namesAddr - base), Number(layout.markersAddr - base)),
      );
      ram.memory.write(pa(names), Buffer.alloc(written.length));
      let fullScans = 0;
      const memory = ram.memory;
      const counting: ResidentRam = {
        runs: ram.runs,
        memory: Object.assign(Object.create(memory), {
          // Only the full scan reads with readInto, from the start of RAM up.
          readInto: (addr: bigint, into: Uint8Array) => {
            if (addr === 0n) fullScans++;
            memory.readInto(pa(addr), into);
          },
        }),
      };
      let pauses = 0;
      const writing = {
        ended: false,
        whilePaused: async <T>(fn: () => T) => {
          const r = fn();
          // The guest runs on between polls and finishes the copy.
          if (++pauses === 1) memory.write(pa(names), written);
          return r;
        },
      };
      const copy = await waitForRelocatedKallsyms(counting, {
        log: () => {},
        timeoutMs: 5_000,
        run: writing,
      });
      assert.equal(copy.slide, SLIDE);
      assert.equal(pauses, 2, "decoded at the second try");
      assert.equal(fullScans, 1, "the second try came before any second full scan");
    });
  });
}
