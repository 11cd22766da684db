/**
 * Event engine benchmark on one 6.12 TCG guest, all in the same run:
 *   1. breakpoint events per second on a hot kernel function (kernel_clone, with the guest
 *      forking non-stop), the handler reading the registers and 64 bytes at RSP: vmsight's
 *      engine against GDB itself (`gdb -batch`, a breakpoint whose commands are `silent`, the
 *      same reads, `continue`) on the same gdbstub — one client at a time, as QEMU requires;
 *      and, from QEMU's own STOP/RESUME event timestamps, how long the guest stays stopped per
 *      event (the tool's overhead; the rest of the time per event is TCG re-translating the
 *      guest's code after the tb_flush QEMU's gdbstub does at every breakpoint stop);
 *   2. the guest's fork rate (`time workload forkloop N`, as the guest measures it) with
 *      `trace proc` running and without; the host's wall clock for the same runs beside it
 *      (under TCG the guest's clock stops while the guest is stopped).
 *   3. the floor any client can reach on this QEMU: a bare gdbstub connection that answers each
 *      stop with `c` at once (no handler, no reads), for both measurements above. Under TCG it
 *      shows how much of the cost is QEMU's own, whatever the client does.
 * Targets: >= 2x GDB's event rate; < 1.5x fork slowdown.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { skippableLength } from "../src/arch/x86/skippable.js";
import { runTrace } from "../src/commands/trace.js";
import { openEventSession } from "../src/events/session.js";
import { gdbSocketPath } from "../src/qemu/qemu-process.js";
import { Target } from "../src/qemu/session.js";
import { QmpClient } from "../src/transport/qmp/client.js";
import type { QmpEvent } from "../src/transport/qmp/codec.js";
import { va } from "../src/util/address.js";
import { type TestGuest, bootTestGuest } from "../test/support/guest.js";

const HITS = Number(process.env.BENCH_HITS ?? 60);
const FORKS = Number(process.env.BENCH_FORKS ?? 1000);
const HOT = "kernel_clone";

/** Milliseconds the guest spent stopped, from QEMU's STOP/RESUME event timestamps. */
class StoppedClock {
  private stoppedAt: number | undefined;
  total = 0;
  on = (e: QmpEvent) => {
    const t = e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000;
    if (e.event === "STOP") this.stoppedAt = t;
    if (e.event === "RESUME" && this.stoppedAt !== undefined) {
      this.total += t - this.stoppedAt;
      this.stoppedAt = undefined;
    }
  };
}

interface Rate {
  rate: number;
  stoppedMs: number;
  skips?: number;
  steps?: number;
}

async function vmsightRate(g: TestGuest): Promise<Rate> {
  const target = await Target.attach(g.qmpSocket);
  const clock = new StoppedClock();
  try {
    const s = await openEventSession(target, { watchdog: false });
    const times: number[] = [];
    let bytes = 0;
    let off: (() => void) | undefined;
    await s.engine.breakpoint(HOT, async (hit) => {
      const regs = await hit.registers();
      bytes += hit.read(regs.get("rsp") ?? 0n, 64).length;
      times.push(performance.now());
      if (times.length === 1) off = target.qmp.onEvent(clock.on);
      return times.length >= HITS ? "stop" : undefined;
    });
    await s.engine.run();
    off?.();
    const { skips, steps } = s.engine.stats;
    await s.close();
    if (bytes !== 64 * HITS) throw new Error("handler did not read its memory");
    return {
      rate: ((times.length - 1) * 1000) / (times.at(-1)! - times[0]!),
      stoppedMs: clock.total / (HITS - 1),
      skips,
      steps,
    };
  } finally {
    await target.close();
  }
}

/** GDB on the same gdbstub socket, through a tiny stdin/stdout <-> unix-socket bridge. */
async function gdbRate(g: TestGuest, hotAddress: bigint, qemuPid: number): Promise<Rate> {
  const dir = mkdtempSync(join(tmpdir(), "bench-gdb-"));
  const qmp = await QmpClient.connect(g.qmpSocket);
  const clock = new StoppedClock();
  qmp.onEvent(clock.on);
  // A gdb client connecting to a running guest gets QEMU's unsolicited stop reply in the middle
  // of its handshake, which GDB 13 takes for the answer to its next packet: connect to a
  // stopped guest (GDB's `continue` starts it).
  await qmp.execute("stop");
  try {
    const bridge = join(dir, "bridge.cjs");
    writeFileSync(
      bridge,
      "const s=require('net').createConnection(process.argv[2]);process.stdin.pipe(s);s.pipe(process.stdout);s.on('close',()=>process.exit(0));",
    );
    const t0 = join(dir, "t0");
    const t1 = join(dir, "t1");
    const script = join(dir, "cmds.gdb");
    writeFileSync(
      script,
      [
        "set pagination off",
        "set confirm off",
        `target remote | ${process.execPath} ${bridge} ${gdbSocketPath(qemuPid)}`,
        "set $n = 0",
        `break *0x${hotAddress.toString(16)}`,
        "commands",
        "silent",
        "set $n = $n + 1",
        "info registers",
        "x/8gx $rsp",
        "if $n == 1",
        `shell date +%s%N > ${t0}`,
        "end",
        `if $n >= ${HITS}`,
        `shell date +%s%N > ${t1}`,
        "delete",
        "detach",
        "quit",
        "end",
        "continue",
        "end",
        "continue",
        "",
      ].join("\n"),
    );
    const child = spawn("gdb", ["-nx", "-batch", "-x", script], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const code = await new Promise<number | null>((r) => child.on("close", r));
    if (code !== 0) throw new Error(`gdb failed (${code}): ${stderr.slice(-2000)}`);
    const ns = Number(BigInt(readFileSync(t1, "utf8").trim()) - BigInt(readFileSync(t0, "utf8").trim()));
    // The connection's own stop and the final detach are not events: count per hit, roughly.
    return { rate: ((HITS - 1) * 1e9) / ns, stoppedMs: clock.total / HITS };
  } finally {
    await qmp.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function realSeconds(out: string): number {
  const m = /real\s+(\d+)m\s*([\d.]+)s/.exec(out);
  if (!m) throw new Error(`no time in guest output: ${out}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

async function forkLoop(g: TestGuest): Promise<{ guest: number; wall: number }> {
  const t0 = performance.now();
  const out = await g.serial.command(`time workload forkloop ${FORKS}`, 600_000);
  return { guest: realSeconds(out), wall: (performance.now() - t0) / 1000 };
}

async function tracedForkLoop(
  g: TestGuest,
  events?: { create: boolean; exec: boolean; exit: boolean },
): Promise<{ guest: number; wall: number; events: number }> {
  const target = await Target.attach(g.qmpSocket);
  const abort = new AbortController();
  let count = 0;
  let ready!: () => void;
  const armed = new Promise<void>((r) => {
    ready = r;
  });
  const trace = runTrace(
    target,
    { kind: "proc", signal: abort.signal, onReady: () => ready(), ...(events ? { events } : {}) },
    () => count++,
  );
  try {
    await armed;
    const r = await forkLoop(g);
    abort.abort();
    await trace;
    return { ...r, events: count };
  } finally {
    abort.abort();
    await trace.catch(() => {});
    await target.close();
  }
}

/**
 * The floor any gdbstub client can reach: `trap` is armed on a bare connection and each stop is
 * answered with `c` at once (after `atStop`), no handler, no guest reads. What QEMU costs per stop.
 */
async function bareClient<T>(
  g: TestGuest,
  arm: (gdb: Awaited<ReturnType<Target["gdb"]>>) => Promise<() => Promise<void>>,
  atStop: (gdb: Awaited<ReturnType<Target["gdb"]>>) => Promise<void>,
  during: () => Promise<T>,
): Promise<{ result: T; stops: number }> {
  const target = await Target.attach(g.qmpSocket);
  try {
    const gdb = await target.gdb();
    const disarm = await arm(gdb);
    let stops = 0;
    let done = false;
    const loop = (async () => {
      while (!done) {
        await gdb.continue();
        if (done) break;
        stops++;
        await atStop(gdb);
      }
    })();
    const result = await during();
    done = true;
    await gdb.interrupt();
    await loop;
    await disarm();
    await target.resume();
    return { result, stops };
  } finally {
    await target.close();
  }
}

/** Fork loop with a bare watchpoint on nr_threads (the two stops per fork `trace proc` takes). */
async function bareForkLoop(g: TestGuest, nrThreads: bigint): Promise<{ guest: number; wall: number }> {
  const r = await bareClient(
    g,
    async (gdb) => {
      await gdb.insertBreakpoint(2, nrThreads, 4);
      return () => gdb.removeBreakpoint(2, nrThreads, 4);
    },
    async () => {},
    () => forkLoop(g),
  );
  return r.result;
}

/** Breakpoint events per second for a client that only steps RIP past the NOP and continues. */
async function bareRate(g: TestGuest, hot: bigint, skip: number): Promise<number> {
  const times: number[] = [];
  await bareClient(
    g,
    async (gdb) => {
      await gdb.insertBreakpoint(0, hot, 1);
      return () => gdb.removeBreakpoint(0, hot, 1);
    },
    async (gdb) => {
      times.push(performance.now());
      await gdb.writeRegister("rip", hot + BigInt(skip));
    },
    async () => {
      while (times.length < HITS) await new Promise((r) => setTimeout(r, 20));
    },
  );
  return ((times.length - 1) * 1000) / (times.at(-1)! - times[0]!);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const g = await bootTestGuest("6.12");
  try {
    await g.waitReady(180_000);
    const target = await Target.attach(g.qmpSocket);
    const qemuPid = target.pid;
    const s = await openEventSession(target, { watchdog: false });
    const hot = s.kernel.symbols.getAddress(HOT);
    const nrThreads = s.kernel.symbols.getAddress("nr_threads");
    const skip = skippableLength(s.kernel.kernel.read(va(hot), 16));
    if (skip === undefined)
      throw new Error(`${HOT} does not start with a NOP: the bare client cannot skip it`);
    await s.close();
    await target.close();

    // ---- fork rate first, on a quiet guest ----
    const plain: number[] = [];
    const plainWall: number[] = [];
    const traced: number[] = [];
    const tracedWall: number[] = [];
    const createOnly: number[] = [];
    const bare: number[] = [];
    let events = 0;
    await forkLoop(g); // warm up page cache and TCG translations
    for (let i = 0; i < 3; i++) {
      const p = await forkLoop(g);
      plain.push(p.guest);
      plainWall.push(p.wall);
      const t = await tracedForkLoop(g);
      traced.push(t.guest);
      tracedWall.push(t.wall);
      events = t.events;
      createOnly.push((await tracedForkLoop(g, { create: true, exec: false, exit: false })).guest);
      bare.push((await bareForkLoop(g, nrThreads)).guest);
    }
    const slow = median(traced) / median(plain);
    console.log(
      `fork loop (${FORKS} forks, guest clock): ${median(plain).toFixed(3)} s plain, ${median(traced).toFixed(3)} s with trace proc (${events} events) -> ${slow.toFixed(2)}x  [target < 1.5x]`,
    );
    console.log(
      `fork loop with trace proc --events create (one stop per fork): ${median(createOnly).toFixed(3)} s -> ${(median(createOnly) / median(plain)).toFixed(2)}x`,
    );
    console.log(
      `fork loop with a bare gdbstub client (watchpoint on nr_threads, \`c\` at once, no handler): ${median(bare).toFixed(3)} s -> ${(median(bare) / median(plain)).toFixed(2)}x — QEMU's own cost of two stops per fork, the floor for any client`,
    );
    console.log(
      `fork loop (host wall clock, incl. console round trip): ${median(plainWall).toFixed(3)} s plain, ${median(tracedWall).toFixed(3)} s traced -> ${(median(tracedWall) / median(plainWall)).toFixed(2)}x`,
    );

    // ---- breakpoint events per second, vmsight vs gdb ----
    g.serial.send("workload forkloop 0 >/dev/null &");
    await g.serial.waitFor(/# /, 10_000);
    const v = await vmsightRate(g);
    const gdb = await gdbRate(g, hot, qemuPid);
    const floor = await bareRate(g, hot, skip);
    const v2 = await vmsightRate(g); // again, after gdb: the guest's state is comparable both ways
    const rate = (v.rate + v2.rate) / 2;
    const stopped = (v.stoppedMs + v2.stoppedMs) / 2;
    console.log(
      `breakpoint on ${HOT} (registers + 64 bytes a hit, ${HITS} hits): vmsight ${rate.toFixed(1)} events/s (${(v.skips ?? 0) + (v2.skips ?? 0)} NOP step-overs, ${(v.steps ?? 0) + (v2.steps ?? 0)} single-steps), gdb ${gdb.rate.toFixed(1)} events/s -> ${(rate / gdb.rate).toFixed(2)}x  [target >= 2x]`,
    );
    console.log(
      `bare gdbstub client on the same breakpoint (RIP past the NOP, \`c\`, nothing else): ${floor.toFixed(1)} events/s -> ${(floor / gdb.rate).toFixed(2)}x gdb — the ceiling for any client under TCG`,
    );
    console.log(
      `guest stopped per event (QEMU STOP->RESUME): vmsight ${stopped.toFixed(2)} ms, gdb ${gdb.stoppedMs.toFixed(2)} ms -> ${(gdb.stoppedMs / stopped).toFixed(1)}x less; the rest of each event (~${(1000 / rate - stopped).toFixed(0)} ms) is TCG re-translation after QEMU's per-breakpoint tb_flush`,
    );
    g.serial.send("kill %1");
  } finally {
    await g.stop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
