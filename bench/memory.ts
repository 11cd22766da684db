/**
 * Guest RAM and gdbstub benchmarks, each against a peer measured in the same run, as a ratio.
 * Boots the demo guest (TCG here), then:
 *  - guest RAM reads, 2 MiB sequential and 4 KiB random, against `dd` reading the same range of
 *    the QEMU process's /proc/<pid>/mem (dd cannot seek randomly, so its 4 KiB figure is
 *    sequential 4 KiB blocks: a generous peer);
 *  - the median round trip of one gdbstub register read (`p` for cr3).
 */
import { spawnSync } from "node:child_process";
import { bootDemoGuest, waitForGuestReady } from "../src/commands/guests.js";
import { Target } from "../src/qemu/session.js";
import { pa } from "../src/util/address.js";

const MiB = 1 << 20;
const SPAN = 256 * MiB;

function seconds(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function ddSeconds(pid: number, hva: bigint, blockSize: number, count: number): number {
  const args = [
    `if=/proc/${pid}/mem`,
    "of=/dev/null",
    `bs=${blockSize}`,
    `count=${count}`,
    `skip=${hva}`,
    "iflag=skip_bytes",
  ];
  const r = spawnSync("dd", args, { encoding: "utf8" });
  const m = /, ([\d.e+-]+) s,/.exec(r.stderr);
  if (!m) throw new Error(`dd failed: ${r.stderr}`);
  return Number(m[1]);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const { guest } = await bootDemoGuest(undefined, log);
  try {
    await waitForGuestReady(guest, 180_000, log);
    const target = await Target.attach(guest.qmpSocket, { memory: "process" });
    try {
      const region = target.layout.regions.find((r) => r.writable && r.size >= BigInt(SPAN) + 0x1000000n)!;
      const base = region.start + 0x1000000n;
      const hva = region.hva + 0x1000000n;
      // Bulk reads measure the source itself; the page cache serves small walks, not this.
      const mem = target.memory.source;

      const chunk = Buffer.allocUnsafe(2 * MiB);
      const page = Buffer.allocUnsafe(4096);
      const seqOurs = seconds(() => {
        for (let off = 0; off < SPAN; off += 2 * MiB) mem.readInto(pa(base + BigInt(off)), chunk);
      });
      const seqDd = ddSeconds(target.pid, hva, 2 * MiB, SPAN / (2 * MiB));
      const pages = SPAN / 4096;
      const order = Array.from({ length: pages }, (_, i) => i).sort(() => Math.random() - 0.5);
      const rndOurs = seconds(() => {
        for (const p of order) mem.readInto(pa(base + BigInt(p * 4096)), page);
      });
      const rndDd = ddSeconds(target.pid, hva, 4096, pages);

      const gdb = await target.gdb();
      const rtts: number[] = [];
      for (let i = 0; i < 500; i++) {
        const t0 = process.hrtime.bigint();
        await gdb.readRegister("cr3");
        rtts.push(Number(process.hrtime.bigint() - t0) / 1e3);
      }
      const mbps = (s: number) => (SPAN / MiB / s).toFixed(0);
      console.log("benchmark                          vmsight        peer (dd)      ratio");
      console.log(
        `RAM read, 2 MiB sequential         ${mbps(seqOurs).padStart(6)} MiB/s   ${mbps(seqDd).padStart(6)} MiB/s   ${(seqDd / seqOurs).toFixed(2)}x`,
      );
      console.log(
        `RAM read, 4 KiB random (dd: seq)   ${mbps(rndOurs).padStart(6)} MiB/s   ${mbps(rndDd).padStart(6)} MiB/s   ${(rndDd / rndOurs).toFixed(2)}x`,
      );
      console.log(
        `gdbstub register read (p cr3)      median ${median(rtts).toFixed(1)} µs over ${rtts.length} (target < 100 µs)`,
      );
    } finally {
      await target.close();
    }
  } finally {
    await guest.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
