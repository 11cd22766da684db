/**
 * Issue 13's bench: `vmsight lsof` and `vmsight sockets` (the CLI as a user runs it, --json, a new
 * process each run) on a 6.1 guest holding ~1,000 open files and ~500 sockets (`workload hold`),
 * live and on a QEMU ELF dump of it, against Volatility 3's `linux.lsof` and `linux.sockstat` on
 * the same dump with vmsight's symbol file (`vmsight isf`). Prints wall-time medians, the ratios,
 * and the counts each tool reports beside the guest's own (/proc/PID/fd and /proc/net/*, counted
 * in the guest), so a fast tool that lists less is seen. The counts differ for known reasons:
 * the guest's count includes the counting pipeline's own fds; sockstat counts socket fds (a
 * socket two processes share counts twice) where /proc/net/* lists sockets once, and only five
 * of its families; /proc/net/* also lists sockets no process holds, which `sockets` leaves out
 * (the guest's count of held sockets is the one to match).
 * Volatility comes from VMSIGHT_VOLATILITY (its vol.py); without it only vmsight is measured.
 * VMSIGHT_BENCH_RUNS sets the vmsight runs (default 5). Volatility runs each plugin twice: its
 * first run on a symbol file builds Volatility's own cache of it (most of that run's time), the
 * second is what a user pays from then on; the ratio is taken on the second.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../test/support/cli.js";
import { type TestGuest, bootTestGuest, qemuElfDump } from "../test/support/guest.js";

const FILES = 1000;
const SOCKETS = 500;
const RUNS = Number(process.env.VMSIGHT_BENCH_RUNS ?? 5);
const VOL = process.env.VMSIGHT_VOLATILITY;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const log = (l: string) => process.stderr.write(`${l}\n`);

interface Timed {
  readonly ms: number;
  readonly rows: Record<string, unknown>[];
}

async function vmsight(args: readonly string[]): Promise<Timed> {
  const t0 = performance.now();
  const r = await runCli([...args, "--json"], 600_000);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`vmsight ${args.join(" ")} failed: ${r.stderr}`);
  return { ms, rows: JSON.parse(r.stdout) as Record<string, unknown>[] };
}

/** Median wall time of RUNS runs, and the rows of the last. */
async function repeated(args: readonly string[]): Promise<Timed> {
  const runs: Timed[] = [];
  for (let i = 0; i < RUNS; i++) runs.push(await vmsight(args));
  return { ms: median(runs.map((r) => r.ms)), rows: runs[runs.length - 1]!.rows };
}

function volatility(dir: string, dump: string, plugin: string): Promise<Timed | string> {
  const args = [
    VOL!,
    "-q",
    "--offline",
    "--cache-path",
    join(dir, "cache"),
    "-f",
    dump,
    "-s",
    join(dir, "symbols"),
  ];
  const t0 = performance.now();
  return new Promise((done) => {
    execFile(
      "python3",
      [...args, "-r", "json", plugin],
      { maxBuffer: 1 << 30, timeout: 1_800_000 },
      (e, out, err) => {
        if (e) done(`failed: ${err.trim().split("\n").pop() ?? e.message}`);
        else done({ ms: performance.now() - t0, rows: JSON.parse(out) as Record<string, unknown>[] });
      },
    );
  });
}

/** The guest's own counts: fds of every process, the holder's fds and sockets, /proc/net lines. */
async function guestCounts(g: TestGuest, holder: number): Promise<Record<string, number>> {
  const n = async (cmd: string) => Number((await g.serial.command(cmd, 120_000)).trim().split("\n").pop());
  // The counting pipeline's own processes add a few fds; they are gone before vmsight looks.
  return {
    fds: await n("ls /proc/[0-9]*/fd/ 2>/dev/null | grep -c '^[0-9][0-9]*$'"),
    holderFds: await n(`ls /proc/${holder}/fd/ | grep -c .`),
    holderSockets: await n(`ls -l /proc/${holder}/fd/ | grep -c socket:`),
    // What `sockets` lists: the sockets some process holds, of every family, each once.
    held: await n("ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -o 'socket:\\[[0-9]*\\]' | sort -u | grep -c ."),
    procNet: await n(
      "cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 /proc/net/unix | grep -vc -e local_address -e RefCount",
    ),
  };
}

async function startHolder(g: TestGuest): Promise<number> {
  await g.serial.command(`workload hold ${FILES} ${SOCKETS} >/tmp/hold.out 2>&1 & echo $! >/tmp/hold.pid`);
  for (let i = 0; i < 120; i++) {
    const out = await g.serial.command("cat /tmp/hold.out; cat /tmp/hold.pid");
    if (/held \d+ \d+/.test(out)) return Number(out.trim().split("\n").pop());
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error("workload hold did not report");
}

/** Volatility reads paging: false dumps only (FIELD-NOTES). */
const dumpGuest = (qmp: string, dump: string) =>
  qemuElfDump(qmp, dump, { timeoutMs: 300_000, pause: "around" });

const row = (label: string, ms: number | undefined, count: string, ratio = "") =>
  `${label.padEnd(34)} ${ms === undefined ? "    —" : ms.toFixed(0).padStart(7)} ms  ${count.padEnd(34)} ${ratio}`;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "vmsight-bench-forensics-"));
  const dump = join(dir, "guest.elf");
  const g = await bootTestGuest("6.1", { log, memory: "1G" });
  try {
    await g.waitReady(300_000);
    const holder = await startHolder(g);
    const own = await guestCounts(g, holder);
    const live = ["--qmp", g.qmpSocket];
    const lsofLive = await repeated([...live, "lsof"]);
    const sockLive = await repeated([...live, "sockets"]);
    mkdirSync(join(dir, "symbols", "linux"), { recursive: true });
    mkdirSync(join(dir, "cache"));
    const isf = await runCli([...live, "isf", "--out", join(dir, "symbols", "linux", "guest.json")], 300_000);
    if (isf.code !== 0) throw new Error(`isf failed: ${isf.stderr}`);
    await dumpGuest(g.qmpSocket, dump);
    const lsofDump = await repeated(["--dump", dump, "lsof"]);
    const sockDump = await repeated(["--dump", dump, "sockets"]);
    const haveVol = VOL !== undefined && existsSync(VOL);
    const volFirst = haveVol ? await volatility(dir, dump, "linux.lsof") : "VMSIGHT_VOLATILITY not set";
    const volLsof = haveVol ? await volatility(dir, dump, "linux.lsof") : volFirst;
    const volSock = haveVol ? await volatility(dir, dump, "linux.sockstat") : volFirst;

    const ofHolder = (rows: Record<string, unknown>[], key: string) =>
      rows.filter((r) => Number(r[key]) === holder).length;
    const lsofCount = (t: Timed, key: string) =>
      `${t.rows.length} fds, ${ofHolder(t.rows, key)} of the holder`;
    const ratio = (v: Timed | string, ours: Timed) =>
      typeof v === "string" ? "" : `Volatility / vmsight (dump) = ${(v.ms / ours.ms).toFixed(1)}x`;
    console.log(
      `\n6.1 guest, workload hold ${FILES} ${SOCKETS} (pid ${holder}); vmsight: median of ${RUNS} CLI runs, Volatility: single runs`,
    );
    console.log(
      `guest's own: ${own.fds} fds in /proc/*/fd, holder ${own.holderFds} fds of which ${own.holderSockets} sockets, ${own.procNet} sockets in /proc/net/{tcp,tcp6,udp,udp6,unix}, ${own.held} held by processes`,
    );
    console.log(row("vmsight lsof (live)", lsofLive.ms, lsofCount(lsofLive, "pid")));
    console.log(row("vmsight lsof (dump)", lsofDump.ms, lsofCount(lsofDump, "pid")));
    if (typeof volLsof === "string") console.log(row("volatility linux.lsof (dump)", undefined, volLsof));
    else {
      const threads = volLsof.rows.filter((r) => Number(r.TID) === Number(r.PID));
      const count = `${threads.length} fds, ${ofHolder(threads, "PID")} of the holder`;
      if (typeof volFirst !== "string")
        console.log(row("volatility linux.lsof (dump, 1st)", volFirst.ms, "(builds its symbol cache)"));
      console.log(row("volatility linux.lsof (dump, 2nd)", volLsof.ms, count, ratio(volLsof, lsofDump)));
    }
    console.log(row("vmsight sockets (live)", sockLive.ms, `${sockLive.rows.length} sockets`));
    console.log(row("vmsight sockets (dump)", sockDump.ms, `${sockDump.rows.length} sockets`));
    if (typeof volSock === "string") console.log(row("volatility linux.sockstat (dump)", undefined, volSock));
    else {
      const threads = volSock.rows.filter((r) => Number(r.TID) === Number(r.PID));
      const count = `${threads.length} socket fds, ${ofHolder(threads, "PID")} of the holder`;
      console.log(row("volatility linux.sockstat (dump)", volSock.ms, count, ratio(volSock, sockDump)));
    }
  } finally {
    await g.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
