import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { FdPhysicalMemory, type FdRegion, mapFileRegions } from "../../src/memory/fd-memory.js";
import { canMapFiles } from "../../src/memory/mmap.js";
import { CachedPhysicalMemory } from "../../src/memory/page-cache.js";
import { parseFlatView, parseGpa2hva, parseProcMaps } from "../../src/memory/qemu/mtree.js";
import { pa } from "../../src/util/address.js";
import { FaultError } from "../../src/util/errors.js";
import { skipUnless } from "../support/skip.js";

// Recorded from QEMU 7.2 with -m 4G and a memory-backend-file: RAM is split around the PCI hole.
const MTREE_4G = `FlatView #0
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan

FlatView #3
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-00000000000bffff (prio 0, ram): ram0
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 0, rom): pc.bios @0000000000020000
  0000000000100000-00000000bfffffff (prio 0, ram): ram0 @0000000000100000
  00000000fec00000-00000000fec00fff (prio 0, i/o): ioapic
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000013fffffff (prio 0, ram): ram0 @00000000c0000000

FlatView #4
 AS "cpu-smm-0", root: mem-container-smram
  0000000000000000-00000000000bffff (prio 0, ram): ram0
`;

test("the flat view of the memory address space is chosen by name, not by number", () => {
  const ranges = parseFlatView(MTREE_4G);
  assert.equal(ranges.length, 7);
  const high = ranges.at(-1)!;
  assert.equal(high.start, 0x100000000n);
  assert.equal(high.size, 0x40000000n);
  assert.equal(high.region, "ram0");
  assert.equal(high.regionOffset, 0xc0000000n);
  assert.deepEqual(
    ranges.map((r) => r.kind),
    ["ram", "rom", "rom", "ram", "i/o", "rom", "ram"],
  );
});

test("gpa2hva replies: an address, or a sentence saying nothing is there", () => {
  assert.equal(parseGpa2hva("Host virtual address for 0x1000 (pc.ram) is 0x7f706be01000\n"), 0x7f706be01000n);
  assert.equal(parseGpa2hva("No memory is mapped at address 0x10000000\n"), undefined);
});

test("/proc/<pid>/maps lines, with and without a path", () => {
  const maps = parseProcMaps(
    "7f1043e00000-7f1043e40000 rw-p 00000000 00:00 0 \n" +
      "7f1044000000-7f1144000000 rw-s 00000000 00:1a 123                        /dev/shm/vm ram\n",
  );
  assert.equal(maps.length, 2);
  assert.equal(maps[0]!.path, "");
  assert.equal(maps[1]!.perms, "rw-s");
  assert.equal(maps[1]!.path, "/dev/shm/vm ram");
  assert.equal(maps[1]!.end, 0x7f1144000000n);
});

function fileMemory(mapped: boolean): { mem: FdPhysicalMemory; bytes: Buffer; path: string } {
  const dir = mkdtempSync(join(tmpdir(), "fdmem-"));
  const bytes = Buffer.alloc(0x3000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = i & 0xff;
  const path = join(dir, "ram");
  writeFileSync(path, bytes);
  const fd = openSync(path, "r+");
  // Two RAM pieces with a hole between them (like the PCI hole), plus a read-only ROM page.
  const regions: FdRegion[] = [
    { start: pa(0), size: 0x1000n, name: "ram", writable: true, fd, fdOffset: 0n },
    { start: pa(0x2000), size: 0x1000n, name: "ram", writable: true, fd, fdOffset: 0x1000n },
    { start: pa(0x3000), size: 0x1000n, name: "rom", writable: false, fd, fdOffset: 0x2000n },
  ];
  const mem = new FdPhysicalMemory(path, mapped ? mapFileRegions(regions) : regions);
  assert.equal(mem.mapped, mapped);
  return { mem, bytes, path };
}

const MAPPING = skipUnless(
  canMapFiles(),
  "native/build/vmsight-mem.node is not built (scripts/build-native.sh)",
);

for (const mapped of [false, true]) {
  const how = mapped ? "mapped" : "pread";
  const skip = mapped ? MAPPING : false;

  test(`${how}: reads cross regions that are contiguous in guest-physical space`, { skip }, () => {
    const { mem, bytes } = fileMemory(mapped);
    assert.deepEqual(
      mem.read(pa(0x2ff0), 0x20),
      Buffer.concat([bytes.subarray(0x1ff0, 0x2000), bytes.subarray(0x2000, 0x2010)]),
    );
    mem.close();
  });

  test(`${how}: a read into the hole names the first unbacked address`, { skip }, () => {
    const { mem } = fileMemory(mapped);
    assert.throws(
      () => mem.read(pa(0xff0), 0x20),
      (e: unknown) => e instanceof FaultError && e.address === 0x1000n && /no guest RAM/.test(e.message),
    );
    const batch = mem.readMany([
      { addr: pa(0), length: 4 },
      { addr: pa(0x1800), length: 4 },
    ]);
    assert.equal(batch[0]!.ok, true);
    assert.equal(batch[1]!.ok, false);
    mem.close();
  });

  test(`${how}: writes land in the backing file; ROM refuses them`, { skip }, () => {
    const { mem, path } = fileMemory(mapped);
    mem.write(pa(0x2004), Buffer.from("vmsight"));
    assert.equal(mem.read(pa(0x2004), 7).toString(), "vmsight");
    assert.equal(readFileSync(path).subarray(0x1004, 0x100b).toString(), "vmsight");
    assert.throws(() => mem.write(pa(0x3000), Buffer.from([1])), /read-only/);
    mem.close();
    assert.throws(() => mem.read(pa(0), 1), /closed/);
  });
}

test(
  "a mapped file is live both ways, reads are copies, and unaligned offsets map",
  { skip: MAPPING },
  () => {
    const { mem, path } = fileMemory(true);
    const before = mem.read(pa(0x10), 4);
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.from("LIVE"), 0, 4, 0x10); // the guest writes its RAM
    assert.equal(mem.read(pa(0x10), 4).toString(), "LIVE");
    assert.deepEqual([...before], [0x10, 0x11, 0x12, 0x13], "an earlier read is a copy, not a view");
    const odd = mapFileRegions([
      { start: pa(0x9000), size: 0x100n, name: "ram", writable: false, fd, fdOffset: 0x1234n },
    ]);
    assert.ok(odd[0]!.view, "mapped despite the unaligned offset");
    assert.deepEqual([...new FdPhysicalMemory("odd", odd).read(pa(0x9000), 3)], [0x34, 0x35, 0x36]);
    closeSync(fd);
    mem.close();
  },
);

test("the page cache steps aside for mapped memory", { skip: MAPPING }, () => {
  const { mem, path } = fileMemory(true);
  const cached = new CachedPhysicalMemory(mem);
  assert.equal(cached.read(pa(0x20), 1)[0], 0x20);
  assert.equal(cached.read(pa(0x20), 1)[0], 0x20);
  const fd = openSync(path, "r+");
  writeSync(fd, Buffer.from([0xaa]), 0, 1, 0x20);
  closeSync(fd);
  // No invalidate(): a mapped source is never stale, so the cache must not have kept the page.
  assert.equal(cached.read(pa(0x20), 1)[0], 0xaa);
  assert.equal(cached.hits + cached.misses, 0);
  mem.close();
});

test("pread: a batch equals reads one by one, and a request past backed memory fails in its slot", () => {
  const { mem, bytes } = fileMemory(false);
  const requests = [0x10, 0xff8, 0x2000, 0x2ffc, 0x3ffc].map((a) => ({ addr: pa(a), length: 8 }));
  const batch = mem.readMany(requests);
  for (const [i, r] of requests.slice(0, 3).entries()) {
    const want = mem.read(r.addr, r.length);
    assert.deepEqual(batch[i], { ok: true, data: want });
  }
  assert.deepEqual((batch[2] as { data: Buffer }).data, bytes.subarray(0x1000, 0x1008));
  // 0x2ffc+8 crosses into the ROM region: read alone, across the two.
  assert.deepEqual((batch[3] as { data: Buffer }).data, mem.read(pa(0x2ffc), 8));
  // Runs off the last region: its slot says so, the others stand.
  assert.equal(batch[4]!.ok, false);
  mem.close();
});

for (const mapped of [false, true]) {
  test(
    `${mapped ? "mapped" : "pread"}: packed reads equal reads one by one; a hole or a crossing read is handled alone`,
    { skip: mapped ? MAPPING : false },
    () => {
      const { mem } = fileMemory(mapped);
      // In RAM, in the hole, crossing from RAM into ROM, in ROM, past the end.
      const at = [0x10, 0x1800, 0x2ffc, 0x3008, 0x3ffc, 0x0ff8];
      const { out, ok } = mem.readPacked(Float64Array.from(at), 8);
      assert.deepEqual([...ok], [1, 0, 1, 1, 0, 1]);
      at.forEach((a, k) => {
        if (ok[k] === 1) assert.deepEqual(out.subarray(k * 8, k * 8 + 8), mem.read(pa(a), 8), `read ${k}`);
      });
      // Through a page cache: the same bytes, and nothing kept.
      const cached = new CachedPhysicalMemory(mem);
      assert.deepEqual(cached.readPacked(Float64Array.from(at), 8), { out, ok });
      assert.equal(cached.hits + cached.misses, 0);
      mem.close();
    },
  );
}

test(
  "process memory: a batch through process_vm_readv equals /proc/<pid>/mem, a hole fails in its slot",
  { skip: MAPPING },
  () => {
    // This process's own first mapping (the node binary) as "guest RAM" at physical 0.
    const first = parseProcMaps(readFileSync("/proc/self/maps", "utf8"))[0]!;
    const fd = openSync("/proc/self/mem", "r");
    const size = first.end - first.start;
    const region = {
      start: pa(0),
      size: size + 0x1000n,
      name: "ram",
      writable: false,
      fdOffset: first.start,
    };
    const viaProcess = new FdPhysicalMemory("self", [{ ...region, fd, pid: process.pid }]);
    const viaFile = new FdPhysicalMemory("self", [{ ...region, fd }]);
    const requests = [0n, 0x40n, size - 8n, size + 0x10n].map((a) => ({ addr: pa(a), length: 8 }));
    const batch = viaProcess.readMany(requests);
    for (const i of [0, 1, 2])
      assert.deepEqual(batch[i], { ok: true, data: viaFile.read(requests[i]!.addr, 8) });
    // Past the mapping (unless the next one starts right there): either way it matches the pread.
    const alone = viaFile.readMany([requests[3]!])[0]!;
    assert.equal(batch[3]!.ok, alone.ok);
    const packed = viaProcess.readPacked(
      Float64Array.from(requests, (r) => Number(r.addr)),
      8,
    );
    for (const i of [0, 1, 2])
      assert.deepEqual(packed.out.subarray(i * 8, i * 8 + 8), viaFile.read(requests[i]!.addr, 8));
    assert.equal(packed.ok[3], alone.ok ? 1 : 0);
    closeSync(fd);
  },
);
