/**
 * Cold start (process start to `ps` output on a fresh attach, symbols and types included) and a
 * warm `ps` refresh, on a guest running 1,000+ tasks. The peer in the same run is the guest's own
 * busybox `ps`, timed inside the guest. Targets: cold under 1 s, warm under 20 ms.
 */
import { runCli } from "../test/support/cli.js";
import { bootTestGuest } from "../test/support/guest.js";
import { warmRefreshes } from "./warm.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const SLEEPERS = "i=0; while [ $i -lt 1000 ]; do sleep 100000 & i=$((i+1)); done; true";

async function main(): Promise<void> {
  const log = (l: string) => process.stderr.write(`${l}\n`);
  // QEMU's default anonymous RAM first: read with pread on /proc/<pid>/mem.
  const g = await bootTestGuest("6.12", { log, memoryBackend: "anonymous" });
  try {
    await g.waitReady(180_000);
    await g.serial.command(SLEEPERS, 120_000);
    const cold: number[] = [];
    let tasks = 0;
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const r = await runCli(["--qmp", g.qmpSocket, "ps", "--json"]);
      cold.push(performance.now() - t0);
      tasks = (JSON.parse(r.stdout) as unknown[]).length;
    }
    const warm = await warmRefreshes(g.qmpSocket);
    // busybox `time` prints "real\t0m 0.12s" on stderr.
    const out = await g.serial.command("time ps 2>&1 >/dev/null", 60_000);
    const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(out);
    const guestPs = m ? (Number(m[1]) * 60 + Number(m[2])) * 1000 : Number.NaN;
    console.log(`tasks listed                        ${tasks}`);
    console.log(`cold start to ps output (median/3)  ${median(cold).toFixed(0)} ms   (target < 1000 ms)`);
    console.log(
      `warm ps refresh (median/20)         ${warm.median.toFixed(1)} ms   (target < 20 ms; ${warm.source})`,
    );
    console.log(
      `guest's own busybox ps (inside)     ${guestPs} ms   ratio warm vmsight / guest ps: ${(warm.median / guestPs).toFixed(3)}x`,
    );
  } finally {
    await g.stop();
  }
  // The same guest with its RAM in a shared memfd, as `vmsight run` starts guests: mapped, when
  // the native reader is built, so reads are memory accesses.
  const shared = await bootTestGuest("6.12", { log, memoryBackend: "memfd" });
  try {
    await shared.waitReady(180_000);
    await shared.serial.command(SLEEPERS, 120_000);
    const warm = await warmRefreshes(shared.qmpSocket);
    console.log(
      `warm ps refresh (median/20)         ${warm.median.toFixed(1)} ms   (target < 20 ms; ${warm.source})`,
    );
  } finally {
    await shared.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
