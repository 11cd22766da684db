import { hex } from "../util/address.js";
import type { BootDiscoveryResult } from "./boot-trap.js";
import { BEST_EFFORT } from "./members.js";

/** What `discover` prints about a run: per member, the events it took, and the evidence. */
export interface MemberReport {
  readonly member: string;
  readonly offset: number | undefined;
  readonly candidates: number;
  /** Index of the event after which it had one candidate (events needed = this + 1). */
  readonly eventsNeeded: number | undefined;
  readonly narrowingEvents: number;
  readonly removedBy: Readonly<Record<string, number>>;
  readonly note: string | undefined;
  /** Left candidates (first 16) when it did not converge. */
  readonly left: readonly number[];
  readonly required: boolean;
}

export function memberReports(r: BootDiscoveryResult): MemberReport[] {
  return r.members.map((m) => ({
    member: m.key,
    offset: m.candidates.length === 1 ? m.candidates[0] : undefined,
    candidates: m.candidates.length,
    eventsNeeded: m.history.convergedAt === undefined ? undefined : m.history.convergedAt + 1,
    narrowingEvents: m.history.narrowing,
    removedBy: m.history.removedBy,
    note: m.note,
    left: m.candidates.length === 1 ? [] : m.candidates.slice(0, 16),
    required: !BEST_EFFORT.has(m.key),
  }));
}

/** The human summary, one line per fact. */
export function describeDiscovery(r: BootDiscoveryResult): string[] {
  const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  const lines = [
    r.converged
      ? "all awaited members converged"
      : r.partial
        ? `PARTIAL: the process members converged, not every module member (${r.stopReason}); the profile holds what converged`
        : `discovery did NOT converge (${r.stopReason})`,
    `KASLR slide ${hex(r.slide)}, known ${s(r.slideFoundMs)} after boot started`,
    `events used: ${r.events.total} (${r.events.creates} creations, ${r.events.releases} releases, ${r.events.modules} module loads, ${r.events.quiet} quiet look(s))`,
    `guest time to ${r.converged ? "convergence" : "the end of discovery"}: ${s(r.elapsedMs)} after boot started; stopped in our handlers ${s(r.stoppedMs)}`,
    `traps removed: ${r.traps.removed.map((t) => `${t.what} (${t.hits} hits)`).join(", ")}; ${r.traps.remaining} left; ` +
      `stub confirms none remains: ${r.traps.verified ? "yes" : "NO"}; ${r.traps.spuriousStops} stop(s) were no event`,
  ];
  const f = r.forks;
  if (f.firstTotalForks !== undefined) {
    const missed = f.totalForks === undefined ? "?" : String(f.totalForks - f.createsSeen);
    lines.push(
      `creations seen ${f.createsSeen}, kernel total_forks ${f.totalForks ?? "?"} (first creation seen at total_forks=${f.firstTotalForks}): ${missed} missed; newest pid ${f.highestPid}`,
    );
  }
  for (const m of memberReports(r)) {
    // Module members are found relative to the `list` node (the profile holds them absolute).
    const rel = m.member.startsWith("module.") ? " from list" : "";
    if (m.offset !== undefined) {
      lines.push(
        `  ${m.member.padEnd(28)} ${String(m.offset).padStart(5)}${rel}  after ${m.eventsNeeded ?? 0} event(s)${m.note ? `  (${m.note})` : ""}`,
      );
    } else {
      const evidence = Object.entries(m.removedBy)
        .map(([rule, n]) => `${rule}: -${n}`)
        .join("; ");
      lines.push(
        `  ${m.member.padEnd(28)} ${m.candidates} candidates left${m.required ? "" : " (best effort)"}: ${m.left.join(", ")}${m.candidates > m.left.length ? ", …" : ""} [${evidence}]`,
      );
    }
  }
  for (const why of r.failures) lines.push(`  ${why}`);
  return lines;
}
