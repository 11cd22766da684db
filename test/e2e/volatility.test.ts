/**
 * Symbols for other tools, proven by another tool: Volatility 3 reads a QEMU ELF dump of a test
 * guest with nothing but vmsight's symbol file (`vmsight isf`), and what it lists equals the
 * guest's own /proc (its process list, its modules, and /proc/PID/fd of its user processes), on
 * 6.1 and 6.12, one dump a kernel. Volatility's location comes from VMSIGHT_VOLATILITY (its
 * vol.py); `.ci/run` sets it, elsewhere the test skips without it.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ensureKernel } from "../../src/guests/kernels.js";
import { BpftoolBtf } from "../support/bpftool.js";
import { type CliResult, cliJson, runCli } from "../support/cli.js";
import { transient } from "../support/compare.js";
import { type FdEntry, type ForensicView, parseForensicView } from "../support/forensic-oracle.js";
import { type TestGuest, bootTestGuest, qemuElfDump } from "../support/guest.js";
import { guestSymbol, linkedTextAddress } from "../support/kallsyms-oracle.js";
import type { GuestView } from "../support/oracle.js";
import { skipUnless } from "../support/skip.js";

/**
 * task->comm as the guest's /proc name implies it: /proc names a workqueue worker
 * "kworker/ID+desc" or "-desc" after its work (the desc is not in comm), and a kernel thread by
 * its full name; comm keeps the first 15 bytes.
 */
function taskComm(procName: string): string {
  return procName.replace(/^(kworker\/(?!R-)[^+-]+)[+-].*$/, "$1").slice(0, 15);
}

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1,6.12").split(",");
const VOL = process.env.VMSIGHT_VOLATILITY;

/** The guest's link target as Volatility's lsof spells it: anon inodes by number (see linux.lsof). */
function volatilitySpelling(f: FdEntry): string {
  if (!f.target.startsWith("anon_inode:")) return f.target;
  return `anon_inode:[${BigInt(f.info.get("ino") ?? "-1")}]`;
}

const skip = skipUnless(
  VOL !== undefined && existsSync(VOL),
  "set VMSIGHT_VOLATILITY to Volatility 3's vol.py (../shared/peers/volatility3/vol.py) to run the interop test",
);

/** Pids in one view and not the other, or under another parent, and their viewers. */
function changedBetween(before: GuestView, after: GuestView): Set<number> {
  const parentIn = (v: GuestView) => new Map(v.processes.map((p) => [p.pid, p.ppid]));
  const [a, b] = [parentIn(before), parentIn(after)];
  const out = new Set([...transient(before), ...transient(after)]);
  for (const [pid, ppid] of a) if (b.get(pid) !== ppid) out.add(pid);
  for (const pid of b.keys()) if (!a.has(pid)) out.add(pid);
  return out;
}

interface VolRun {
  readonly rows: Record<string, unknown>[];
  readonly seconds: number;
}

/**
 * vol.py as its README runs it, but with the jsonschema package made unimportable, so that
 * Volatility skips checking the ISF against its schema ("Dependency for validation unavailable":
 * it then takes the file as valid), a check of ~25 s for a 12 MB ISF that the first run of each
 * symbol file has made already. The cache of files found valid is read at import from
 * constants.CACHE_PATH (not --cache-path): pointed at the run's private cache, so that no run
 * reads the global one while the checking run rewrites it. argv: cache, vol.py, its arguments.
 */
const UNCHECKED = [
  "import os, runpy, sys",
  "sys.modules['jsonschema'] = None",
  "sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[2]))",
  "from volatility3.framework import constants",
  "constants.CACHE_PATH = sys.argv[1]",
  "sys.argv = sys.argv[2:]",
  "runpy.run_path(sys.argv[0], run_name='__main__')",
].join("\n");

/**
 * Runs jobs `lanes` at a time, in the order given; each job learns its lane (a lane runs one job
 * at a time, so what a lane owns, a cache directory, no two jobs use at once). Each promise has a
 * handler from the start, so one that fails before a test awaits it (or that no test awaits,
 * the test being skipped) does not end the file as an unhandled rejection; awaiting it throws.
 */
function runInLanes<K extends string, T>(
  lanes: number,
  jobs: readonly (readonly [K, (lane: number) => Promise<T>])[],
): Map<K, Promise<T>> {
  const queue: ((lane: number) => Promise<void>)[] = [];
  const out = new Map<K, Promise<T>>();
  for (const [key, job] of jobs) {
    const p = new Promise<T>((done, fail) => {
      queue.push((lane) => Promise.resolve(lane).then(job).then(done, fail));
    });
    p.catch(() => {});
    out.set(key, p);
  }
  const lane = async (id: number) => {
    for (let next = queue.shift(); next; next = queue.shift()) await next(id);
  };
  for (let id = 0; id < lanes; id++) void lane(id);
  return out;
}

for (const kernelId of KERNELS)
  describe(`Volatility 3 reads a ${kernelId} guest's dump with vmsight's symbol file`, { skip }, () => {
    const dir = mkdtempSync(join(tmpdir(), "vmsight-vol-"));
    const dump = join(dir, "guest.elf");
    const symbols = join(dir, "symbols");
    const isfFile = join(symbols, "linux", "guest.json");
    let g: TestGuest;
    let view: GuestView;
    /** Processes whose presence at the dump's instant the guest's views cannot tell (see before()). */
    let unsettled: Set<number>;
    let forensic: ForensicView;

    /** Volatility's runs, started once the dump is written; each test awaits its own. */
    let runs: Map<string, Promise<VolRun>>;
    /** `vmsight isf` from the offsets profile (what the profile test checks), for its pslist run. */
    let partialIsf: Promise<CliResult>;
    let btf: BpftoolBtf;
    const partial = join(dir, "symbols-profile");
    const profile = join(dir, "profile.json");
    const stopRuns = new AbortController();

    /**
     * Runs one plugin the way the README of the peer says, with a cache private to its lane and
     * symbol directory; `checked` keeps Volatility's check of the ISF against its schema.
     */
    function volatility(
      plugin: string,
      opts: { readonly symbolDir: string; readonly lane: number; readonly checked: boolean },
    ): Promise<VolRun> {
      const cache = join(dir, `cache-${opts.symbolDir === symbols ? "btf" : "profile"}-${opts.lane}`);
      mkdirSync(cache, { recursive: true });
      const args = ["-q", "--offline", "--cache-path", cache, "-f", dump, "-s", opts.symbolDir];
      const python = opts.checked ? [VOL!] : ["-c", UNCHECKED, cache, VOL!];
      const t0 = performance.now();
      return new Promise((done, fail) => {
        execFile(
          "python3",
          [...python, ...args, "-r", "json", plugin],
          { maxBuffer: 64 << 20, timeout: 300_000, signal: stopRuns.signal },
          (error, stdout, stderr) => {
            if (error) return fail(new Error(`vol.py ${plugin} failed (${error.message}): ${stderr}`));
            const seconds = (performance.now() - t0) / 1000;
            // A plain line so the run time is seen beside the results (timing is not asserted).
            const check = opts.checked ? "" : " (its schema not checked again)";
            console.log(`# volatility ${plugin} with vmsight's ISF${check}: ${seconds.toFixed(2)} s`);
            done({ rows: JSON.parse(stdout) as Record<string, unknown>[], seconds });
          },
        );
      });
    }

    before(async () => {
      g = await bootTestGuest(kernelId);
      await g.waitReady(180_000);
      mkdirSync(join(symbols, "linux"), { recursive: true });
      // vmsight reads the symbols over QMP while the guest prints its forensic view on its
      // console: neither waits for the other, and the symbols do not change as processes do.
      const [isf, forensicText] = await Promise.all([
        runCli(["--qmp", g.qmpSocket, "isf", "--out", join(symbols, "linux", "guest.json")], 120_000),
        g.serial.command("vmsight-view forensics", 180_000),
      ]);
      assert.equal(isf.code, 0, isf.stderr);
      forensic = parseForensicView(forensicText);
      // The dump is one instant between two views of the guest: kernel workers that came or went
      // between them (the guest runs on) may or may not be in it; everything else must be.
      view = await g.view();
      // Volatility reads paging: false dumps (the physical layout); paging: true finds no banner.
      await qemuElfDump(g.qmpSocket, dump, { timeoutMs: 120_000, pause: "around" });
      unsettled = changedBetween(view, await g.view());
      // Each run is a Python process of one core that holds the ISF; they run two at a time, so
      // the ~25 s schema check of the first overlaps the other plugins on a 2-core host. The
      // first is pslist as the peer's README runs it, which checks vmsight's ISF against
      // Volatility's schema (once a kernel: the check is worth keeping, the rest need not repeat
      // it for the same file).
      const lanes = Math.max(2, Math.min(3, availableParallelism()));
      const plugin = (name: string) => (lane: number) =>
        volatility(name, { symbolDir: symbols, lane, checked: name === "linux.pslist" });
      runs = runInLanes(lanes, [
        ["linux.pslist", plugin("linux.pslist")],
        ["linux.pstree", plugin("linux.pstree")],
        ["linux.lsmod", plugin("linux.lsmod")],
        ["linux.lsof", plugin("linux.lsof")],
        ["linux.sockstat", plugin("linux.sockstat")],
        [
          "profile linux.pslist",
          async (lane) => {
            await partialIsf;
            return volatility("linux.pslist", { symbolDir: partial, lane, checked: false });
          },
        ],
      ]);
      // Once the runs have started (bpftool's dump is read synchronously), and before the tests
      // (the guest's QMP socket takes one client at a time); its test asserts on what it gave.
      partialIsf = new Promise((r) => setTimeout(r, 0)).then(writePartialIsf);
      await partialIsf.catch(() => {});
    });
    after(async () => {
      stopRuns.abort();
      await Promise.allSettled([...(runs?.values() ?? []), partialIsf]);
      await g?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    /** What discovery learns for processes, and the two members pslist also needs that it does not. */
    const PROFILE_KEYS = [
      ...["tasks", "pid", "tgid", "comm", "mm", "real_parent", "flags", "parent", "files"].map(
        (m) => `task_struct.${m}`,
      ),
      "mm_struct.pgd",
    ];

    /** An offsets profile from bpftool's offsets, and `vmsight isf` from it into `partial`. */
    async function writePartialIsf(): Promise<CliResult> {
      btf = new BpftoolBtf(ensureKernel(kernelId).vmlinux);
      writeFileSync(profile, JSON.stringify(Object.fromEntries(PROFILE_KEYS.map((k) => [k, btf.offset(k)]))));
      mkdirSync(join(partial, "linux"), { recursive: true });
      const out = join(partial, "linux", "guest.json");
      return runCli(["--qmp", g.qmpSocket, "isf", "--no-btf", "--offsets", profile, "--out", out], 120_000);
    }

    /** Volatility's pslist rows against the guest's /proc: pid, ppid and task->comm. */
    function assertPslistMatchesGuest(rows: Record<string, unknown>[]): void {
      const skipPids = new Set([...transient(view), ...unsettled]);
      const theirs = view.processes.filter((p) => !skipPids.has(p.pid));
      const byPid = new Map(theirs.map((p) => [p.pid, p]));
      const mine = rows
        .map((r) => ({ pid: Number(r.PID), ppid: Number(r.PPID), comm: String(r.COMM), state: "" }))
        .filter((r) => !skipPids.has(r.pid))
        .sort((a, b) => a.pid - b.pid);
      assert.deepEqual(
        mine.map((r) => [r.pid, r.ppid]),
        theirs.map((p) => [p.pid, p.ppid]).sort((a, b) => a[0]! - b[0]!),
      );
      for (const r of mine) {
        const p = byPid.get(r.pid)!;
        // Volatility renders comm's bytes its own way; the workload's UTF-8 and invalid names are
        // vmsight's own tests' business, so names are compared where the guest's are ASCII.
        if (!/^[\x20-\x7e]*$/.test(p.comm)) continue;
        assert.equal(r.comm, taskComm(p.comm), `pid ${r.pid}`);
      }
      assert.ok(
        mine.some((r) => r.comm === "averyveryverylo"),
        "the workload whose name comm cuts",
      );
    }

    test("linux.pslist: the guest's processes, pid, ppid and task->comm", async () => {
      assertPslistMatchesGuest((await runs.get("linux.pslist")!).rows);
    });

    test("linux.pstree: the same processes under the same parents", async () => {
      const { rows } = await runs.get("linux.pstree")!;
      const flat: [number, number][] = [];
      const walk = (nodes: Record<string, unknown>[], parent: number | undefined) => {
        for (const n of nodes) {
          const pid = Number(n.PID);
          if (parent !== undefined) assert.equal(Number(n.PPID), parent, `pid ${pid} under ${parent}`);
          flat.push([pid, Number(n.PPID)]);
          walk((n.__children as Record<string, unknown>[]) ?? [], pid);
        }
      };
      walk(rows, undefined);
      const skipPids = new Set([...transient(view), ...unsettled]);
      const expected = view.processes.filter((p) => !skipPids.has(p.pid)).map((p) => [p.pid, p.ppid]);
      assert.deepEqual(
        flat.filter(([pid]) => !skipPids.has(pid)).sort((a, b) => a[0] - b[0]),
        expected.sort((a, b) => a[0]! - b[0]!),
      );
    });

    test("linux.lsmod: the modules of /proc/modules", async () => {
      const { rows } = await runs.get("linux.lsmod")!;
      assert.deepEqual(rows.map((r) => String(r.Name)).sort(), view.modules.map((m) => m.name).sort());
    });

    test("linux.lsof: every fd of the guest's user processes, as their /proc/PID/fd shows it", async () => {
      const { rows } = await runs.get("linux.lsof")!;
      assert.ok(forensic.net, "the guest started the net workload");
      // Paths compare as they are but for one mapping: Volatility 2.11 spells pipes and sockets
      // the way readlink(/proc/PID/fd/N) does ("pipe:[ino]", "socket:[ino]"), while an anon
      // inode, which the kernel names "anon_inode:" + the dentry name ("anon_inode:[eventfd]"),
      // it names by the inode number ("anon_inode:[9718]", its anon_inodefs_dname branch): the
      // guest's fdinfo ino stands in for the name. Any other difference is a finding, reported
      // with both spellings.
      const mismatches: string[] = [];
      for (const [pid, fds] of forensic.fds) {
        if (pid === forensic.viewerPid) continue;
        const theirs = fds.map((f) => `${f.fd} ${volatilitySpelling(f)}`);
        // Volatility lists each thread's table; the threads of a process share it (TID = PID row).
        const mine = rows
          .filter((r) => Number(r.PID) === pid && Number(r.TID ?? pid) === pid)
          .map((r) => `${Number(r.FD)} ${String(r.Path)}`)
          .sort((a, b) => Number.parseInt(a, 10) - Number.parseInt(b, 10));
        if (JSON.stringify(mine) !== JSON.stringify(theirs))
          mismatches.push(`pid ${pid}: volatility ${JSON.stringify(mine)} /proc ${JSON.stringify(theirs)}`);
      }
      assert.deepEqual(mismatches, []);
      // The workload's kinds of file are among them: a file, a pipe and sockets.
      for (const pid of [forensic.net.parent, forensic.net.child]) {
        const paths = rows.filter((r) => Number(r.PID) === pid).map((r) => String(r.Path));
        for (const kind of [/^\//, /^pipe:\[\d+\]$/, /^socket:\[\d+\]$/])
          assert.ok(
            paths.some((p) => kind.test(p)),
            `pid ${pid} has a ${kind}: ${paths.join(", ")}`,
          );
      }
      const pids = new Set([...view.processes.map((p) => p.pid), ...unsettled]);
      for (const r of rows) assert.ok(pids.has(Number(r.PID)), `lsof pid ${r.PID} is a process of the guest`);
    });

    test("linux.sockstat: the socket fds of the guest's user processes, as /proc/PID/fd has them", async () => {
      const { rows } = await runs.get("linux.sockstat")!;
      const key = (pid: number, fd: number) => `${pid} ${fd}`;
      const theirs = [...forensic.fds]
        .filter(([pid]) => pid !== forensic.viewerPid)
        .flatMap(([pid, fds]) =>
          fds.filter((f) => f.target.startsWith("socket:[")).map((f) => key(pid, f.fd)),
        );
      const listed = new Set(forensic.fds.keys());
      const mine = rows
        .filter((r) => Number(r.TID) === Number(r.PID) && listed.has(Number(r.PID)))
        .map((r) => key(Number(r.PID), Number(r.FD)));
      const order = (xs: string[]) => [...xs].sort();
      assert.deepEqual(order(mine), order(theirs));
      const families = new Set(
        rows.filter((r) => Number(r.PID) === forensic.net!.parent).map((r) => String(r.Family)),
      );
      for (const f of ["AF_INET", "AF_INET6", "AF_UNIX"])
        assert.ok(families.has(f), `wl-net has an ${f} socket`);
    });

    test("the ISF from the dump is byte for byte the one from the live guest", async () => {
      const r = await runCli(["--dump", dump, "isf"], 120_000);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout === `${readFileSync(isfFile, "utf8")}\n`, "same symbol file");
    });

    test("libvmi-config: init_task and the KASLR slide as the guest's own /proc/kallsyms has them", async () => {
      const [o] = await cliJson<Record<string, string>[]>(["--qmp", g.qmpSocket, "libvmi-config"]);
      const files = ensureKernel(kernelId);
      const slide = (await guestSymbol(g.serial, "_text")) - linkedTextAddress(files.vmlinuz, files.release);
      assert.equal(BigInt(o!.linux_kaslr!), slide);
      assert.equal(BigInt(o!.linux_init_task!) + slide, await guestSymbol(g.serial, "init_task"));
      assert.equal(o!.name, view.release);
    });

    test("from an offsets profile (bpftool's offsets): libvmi-config gives them, isf lets Volatility run linux.pslist", async () => {
      // Written in before() (the same command, the same profile), so that Volatility's run on it
      // could start with the others.
      const isf = await partialIsf;
      const noBtf = ["--no-btf", "--offsets", profile];
      const [o] = await cliJson<Record<string, string>[]>(["--qmp", g.qmpSocket, "libvmi-config", ...noBtf]);
      assert.deepEqual(
        [o!.linux_tasks, o!.linux_mm, o!.linux_pid, o!.linux_name, o!.linux_pgd].map(Number),
        ["task_struct.tasks", "task_struct.mm", "task_struct.pid", "task_struct.comm", "mm_struct.pgd"].map(
          (k) => btf.offset(k),
        ),
      );
      assert.equal(isf.code, 0, isf.stderr);
      assert.match(isf.stderr, /partial symbol file/);
      assert.doesNotMatch(isf.stderr, /linux\.pslist/);
      assert.match(isf.stderr, /linux\.lsof cannot run/);
      assertPslistMatchesGuest((await runs.get("profile linux.pslist")!).rows);
    });
  });
