import { type RawTrap, TrapCore } from "../qemu/traps.js";
/**
 * What the watchdog does when vmsight died without saying goodbye: QEMU 7.2 keeps gdbstub
 * breakpoints, watchpoints and the stopped state after its gdb client disappears, so a vmsight
 * killed with SIGKILL would leave a guest that freezes at the next trap hit (or is already
 * frozen). Connect as a fresh gdb client, remove every recorded trap, detach (QEMU's `D` also
 * drops any trap left and continues), and make sure through QMP that the guest runs.
 */
import { GdbClient } from "../transport/gdb/client.js";
import { QmpClient } from "../transport/qmp/client.js";

export interface CleanupPlan {
  readonly gdbPath: string;
  readonly qmpPath: string;
  /** Let the guest run afterwards (it was running when vmsight attached). */
  readonly resume: boolean;
  readonly traps: readonly RawTrap[];
  /** How long to keep trying to connect (the dead client's sockets close asynchronously). */
  readonly connectMs?: number;
  readonly log?: (line: string) => void;
}

export interface CleanupResult {
  removed: number;
  failed: number;
  detached: boolean;
  resumedByQmp: boolean;
}

async function retry<T>(
  what: string,
  ms: number,
  fn: () => Promise<T>,
  log: (l: string) => void,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      log(`${what}: ${(error as Error).message}; retrying`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/**
 * QEMU's `D` removes every gdb breakpoint and watchpoint and lets the guest run. With the
 * multiprocess extension negotiated (our client does) it wants `D;<pid>`, else E22.
 */
async function detach(gdb: GdbClient, log: (line: string) => void): Promise<boolean> {
  for (const packet of ["D;1", "D"]) {
    const reply = (await gdb.request(packet)).toString("latin1");
    if (reply === "OK") return true;
    log(`${packet}: ${reply || "unsupported"}`);
  }
  return false;
}

export async function cleanupTraps(plan: CleanupPlan): Promise<CleanupResult> {
  const log = plan.log ?? (() => {});
  const ms = plan.connectMs ?? 10_000;
  const result: CleanupResult = { removed: 0, failed: 0, detached: false, resumedByQmp: false };
  const gdb = await retry(
    "gdbstub",
    ms,
    () => GdbClient.connect({ path: plan.gdbPath }, { timeoutMs: 3000 }),
    log,
  );
  try {
    const core = new TrapCore(gdb);
    for (const t of plan.traps) {
      try {
        await core.removeStray(t);
        result.removed++;
      } catch (error) {
        result.failed++;
        log(`z${t.type},${t.addr.toString(16)}: ${(error as Error).message}`);
      }
    }
    if (plan.resume) result.detached = await detach(gdb, log);
  } finally {
    await gdb.close();
  }
  if (!plan.resume) return result;
  const qmp = await retry("qmp", ms, () => QmpClient.connect(plan.qmpPath, { timeoutMs: 3000 }), log);
  try {
    const s = await qmp.execute<{ running: boolean }>("query-status");
    if (!s.running) {
      await qmp.execute("cont");
      result.resumedByQmp = true;
    }
  } finally {
    await qmp.close();
  }
  return result;
}
