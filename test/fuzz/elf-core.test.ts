import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openElfCore, qemuCpuNotes } from "../../src/memory/elf-core.js";
import { pa } from "../../src/util/address.js";
import { parseElf64 } from "../../src/util/elf.js";
import { buildElfCore } from "../fixtures/dump/elf-core.js";
import { fuzzTargets } from "./harness.js";
import { typed } from "./typed.js";

function seeds(): Uint8Array[] {
  const ram = (n: number, fill: number) => new Uint8Array(n).fill(fill);
  return [
    buildElfCore([{ paddr: 0n, bytes: ram(4096, 0x11) }]),
    buildElfCore(
      [
        { paddr: 0n, bytes: ram(2048, 0x22) },
        { paddr: 0x10_0000n, bytes: ram(1024, 0x33) },
      ],
      [{ cr3: 0x1000n }, { cr3: 0x2000n, rip: 0xffffffff81000000n }],
    ),
  ];
}

let dir: string | undefined;

/** openElfCore reads a file, as the CLI does: the input goes through a temporary one. */
function throughFile(bytes: Uint8Array): void {
  dir ??= mkdtempSync(join(tmpdir(), "vmsight-fuzz-"));
  process.once("exit", () => dir && rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "core.elf");
  writeFileSync(path, bytes);
  const core = openElfCore(path);
  try {
    assert.ok(core.cpus.length <= bytes.length / 12, `${core.cpus.length} CPUs from ${bytes.length} bytes`);
    let total = 0n;
    for (const r of core.memory.ranges()) {
      total += r.size;
      for (const at of [r.start, r.start + r.size - 1n]) typed(() => core.memory.read(pa(at), 1));
      typed(() => core.memory.read(r.start, Number(r.size < 256n ? r.size : 256n)));
    }
    assert.ok(total <= BigInt(bytes.length), `${total} bytes of RAM from a ${bytes.length}-byte file`);
  } finally {
    core.memory.close();
  }
}

fuzzTargets(import.meta.url, [
  { name: "elf-core", seeds, run: throughFile, runs: 3000 },
  {
    name: "elf64",
    seeds,
    run: (bytes) => {
      const elf = parseElf64(bytes);
      for (const s of elf.sections) typed(() => elf.sectionBytes(s.name));
    },
    runs: 3000,
  },
  {
    name: "qemu-cpu-notes",
    seeds: () => seeds().map((core) => core.subarray(64 + 56 * 2)),
    run: (bytes) => {
      const cpus = qemuCpuNotes(Buffer.from(bytes));
      assert.ok(cpus.length <= bytes.length / 12);
    },
    runs: 3000,
  },
]);
