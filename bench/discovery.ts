/**
 * Boot-time offset discovery: what it costs the guest, and what it needs. In the same run and
 * alternately, the test guest boots paused and is let go (a) untouched and (b) under
 * `discoverAtBoot`; each is timed from `cont` to the init script's VMSIGHT-READY line. Prints
 * the median of each, their ratio (target < 1.10), and the trap events each member needed.
 */
import { readFileSync } from "node:fs";
import { type BootDiscoveryResult, discoverAtBoot } from "../src/discovery/boot-trap.js";
import { kernelImageFromFile } from "../src/discovery/kernel-image.js";
import { memberReports } from "../src/discovery/report.js";
import { ensureGuestImage } from "../src/guests/guest-image.js";
import { launchGuest } from "../src/qemu/launch.js";
import { Target } from "../src/qemu/session.js";
import { READY_PATTERN } from "../test/support/guest.js";
import { waitForFile } from "../test/support/serial.js";

const KERNELS = (process.env.VMSIGHT_BENCH_KERNELS ?? "6.12,6.1").split(",");
const ROUNDS = Number(process.env.VMSIGHT_BENCH_ROUNDS ?? "5");
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function bootOnce(
  kernelId: string,
  discover: boolean,
): Promise<{ readyMs: number; result: BootDiscoveryResult | undefined }> {
  const image = await ensureGuestImage(kernelId);
  const kimage = discover ? kernelImageFromFile(readFileSync(image.kernelFiles.vmlinux)) : undefined;
  const guest = await launchGuest({
    kernel: image.kernel,
    initrd: image.initrd,
    append: image.append,
    paused: true,
    qmpOnly: true,
    accel: "tcg",
  });
  const target = await Target.attach(guest.qmpSocket);
  try {
    const t0 = performance.now();
    const ready = waitForFile(guest.serialLog, READY_PATTERN, 180_000).then(() => performance.now() - t0);
    let result: BootDiscoveryResult | undefined;
    if (kimage) result = await discoverAtBoot(target, { image: kimage });
    else await target.resume();
    return { readyMs: await ready, result };
  } finally {
    await target.close();
    await guest.stop();
  }
}

async function main(): Promise<void> {
  for (const kernelId of KERNELS) {
    const plain: number[] = [];
    const traced: number[] = [];
    let last: BootDiscoveryResult | undefined;
    for (let i = 0; i < ROUNDS; i++) {
      plain.push((await bootOnce(kernelId, false)).readyMs);
      const d = await bootOnce(kernelId, true);
      traced.push(d.readyMs);
      last = d.result;
      if (!d.result?.converged) {
        // Say why, so that a rare miss can be diagnosed from the benchmark's output alone.
        const open = (d.result?.members ?? []).filter((m) => m.candidates.length !== 1).map((m) => m.key);
        console.log(
          `${kernelId}: round ${i + 1} did not converge: ${d.result?.failures.join("; ") || "no failure recorded"}; open: ${open.join(", ")}`,
        );
      }
    }
    const p = median(plain);
    const t = median(traced);
    console.log(`\n${kernelId}: boot to VMSIGHT-READY, median of ${ROUNDS}`);
    console.log(
      `  untouched        ${(p / 1000).toFixed(2)} s   (${plain.map((x) => (x / 1000).toFixed(2)).join(", ")})`,
    );
    console.log(
      `  with discovery   ${(t / 1000).toFixed(2)} s   (${traced.map((x) => (x / 1000).toFixed(2)).join(", ")})`,
    );
    console.log(`  ratio            ${(t / p).toFixed(3)}   (target < 1.10)`);
    if (!last) continue;
    console.log(
      `  last discovery: slide known at ${(last.slideFoundMs / 1000).toFixed(2)} s, converged at ${(last.elapsedMs / 1000).toFixed(2)} s, ` +
        `${last.events.total} events (${last.events.creates} creations, ${last.events.releases} releases, ${last.events.modules} module loads), ` +
        `guest stopped ${last.stoppedMs.toFixed(0)} ms in handlers; creations seen ${last.forks.createsSeen} = total_forks ${last.forks.totalForks}`,
    );
    console.log("  trap events needed per member:");
    for (const m of memberReports(last)) {
      const needed =
        m.eventsNeeded === undefined ? `not converged (${m.candidates} left)` : String(m.eventsNeeded);
      console.log(`    ${m.member.padEnd(28)} ${needed}${m.note ? "  (resolved by declaration order)" : ""}`);
    }
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
