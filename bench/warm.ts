/** The warm `ps` loop that bench/semantics.ts and bench/ps-speed.ts both measure. */
import { openKernel } from "../src/commands/linux.js";
import { psRows } from "../src/commands/processes.js";
import { Target } from "../src/qemu/session.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Warm refreshes as a live dashboard would do them: the guest runs between refreshes, so every
 * cache of guest state is dropped (pause/resume do that) and the listing starts cold.
 */
export async function warmRefreshes(
  qmpSocket: string,
  opts: { readonly memory?: "auto" | "process" } = {},
): Promise<{ median: number; source: string }> {
  const target = await Target.attach(qmpSocket, { memory: opts.memory ?? "auto" });
  const warm: number[] = [];
  try {
    const k = await openKernel(target);
    for (let i = 0; i < 20; i++) {
      await target.resume();
      await new Promise((r) => setTimeout(r, 50));
      await target.pause();
      const t0 = performance.now();
      psRows(k);
      warm.push(performance.now() - t0);
    }
    await target.resume();
    return { median: median(warm), source: target.memory.description };
  } finally {
    await target.close();
  }
}
