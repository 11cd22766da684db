import { fileURLToPath } from "node:url";
/** The warm `ps` loop that bench/semantics.ts and bench/ps-speed.ts both measure. */
import { openKernel } from "../src/commands/linux.js";
import { psRows } from "../src/commands/processes.js";
import { Target } from "../src/qemu/session.js";
import { runNode } from "../test/support/cli.js";

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

/**
 * The same in a process of its own, as a program using the library runs it: the bench's own
 * process carries the heap of everything it measured before (peer runs, CLI output), which
 * makes its collections, and so the listing, slower than a user's.
 */
export async function warmRefreshesApart(
  qmpSocket: string,
  opts: { readonly memory?: "auto" | "process" } = {},
): Promise<{ median: number; source: string; rssMb: number }> {
  const r = await runNode(fileURLToPath(import.meta.url), [qmpSocket, opts.memory ?? "auto"], {
    timeoutMs: 300_000,
  });
  if (r.code !== 0) throw new Error(`warm listing failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { median: number; source: string; rssMb: number };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [qmp, memory] = process.argv.slice(2) as [string, "auto" | "process"];
  const w = await warmRefreshes(qmp, { memory });
  console.log(JSON.stringify({ ...w, rssMb: process.resourceUsage().maxRSS / 1024 }));
}
