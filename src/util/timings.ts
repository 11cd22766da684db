/**
 * Cheap per-step timing for one command run, printed to stderr at exit when VMSIGHT_TIMINGS=1
 * (bench/ps-speed.ts reads it). Each mark records the time since the previous one, so the steps
 * add up to the run; when timing is off a mark is one comparison.
 */
const enabled = process.env.VMSIGHT_TIMINGS === "1";
const steps: [string, number, number][] = [];
let last = 0;

export function timingsEnabled(): boolean {
  return enabled;
}

/** Ends the step `name` here: the time since the previous mark (or process start) is its cost. */
export function markStep(name: string): void {
  if (!enabled) return;
  const now = performance.now();
  steps.push([name, now - last, process.resourceUsage().maxRSS]);
  last = now;
}

/**
 * One line: `vmsight-timings {"startup":…,"attach":…,…,"total":…,"maxRssKb":…,"cpuMs":…,
 * "peakRssMb":{"startup":…,…}}`: peakRssMb is the peak RSS when each step ended, which says
 * which step raised it.
 */
export function timingsLine(): string {
  const out: Record<string, number | Record<string, number>> = {};
  const peaks: Record<string, number> = {};
  for (const [name, ms, rssKb] of steps) {
    out[name] = Math.round((((out[name] as number | undefined) ?? 0) + ms) * 10) / 10;
    peaks[name] = Math.round(rssKb / 1024);
  }
  out.total = Math.round(performance.now() * 10) / 10;
  out.maxRssKb = process.resourceUsage().maxRSS;
  // CPU time beside wall time: on a shared, busy machine wall time measures the neighbours too.
  const cpu = process.cpuUsage();
  out.cpuMs = Math.round((cpu.user + cpu.system) / 100) / 10;
  out.peakRssMb = peaks;
  return `vmsight-timings ${JSON.stringify(out)}`;
}

if (enabled) process.once("exit", () => process.stderr.write(`${timingsLine()}\n`));
