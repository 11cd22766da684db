/**
 * The drgn peer of bench/ps-speed.ts: drgn's live QEMU mode (`python3 -m drgn --qemu SOCKET`)
 * with the kernel's full DWARF, doing what `vmsight ps` does (bench/peers/drgn-ps.py).
 * Prepared once, under cacheRoot()/peers:
 *  - drgn-<tarball hash>/: drgn built in place from ../shared/peers/drgn-*.tar.gz (or
 *    $VMSIGHT_DRGN_TARBALL), after installing Debian's build dependencies when missing (as root);
 *  - debug/<package>-dbg/vmlinux: the debug vmlinux out of the kernel's -dbg package (855 MB
 *    for 6.1), the package itself deleted once the vmlinux is out.
 * Any failure is one line saying why the peer is skipped; the caller carries on without it.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { cacheRoot } from "../../src/guests/cache.js";
import { runProcess } from "../../test/support/cli.js";

const repoRoot = resolve(import.meta.dirname, "../../..");
const SCRIPT = join(repoRoot, "bench", "peers", "drgn-ps.py");
/** What `git describe` would say of the tarball's commit; setup.py wants it in version.py. */
const DRGN_VERSION = "0.2.0+197.ga2d50fd6";
const BUILD_DEPS = [
  "autoconf",
  "automake",
  "libtool",
  "pkgconf",
  "check",
  "libelf-dev",
  "libdw-dev",
  "gawk",
  "python3-dev",
  "bison",
  "flex",
  "libjson-c-dev",
  "gcc",
  "make",
];

export interface DrgnRun {
  readonly wallMs: number;
  /** Processes (thread-group leaders) listed. */
  readonly tasks: number;
  readonly threads: number;
  readonly cpuMs: number;
  readonly maxRssKb: number;
}

export interface DrgnPeer {
  readonly version: string;
  readonly vmlinux: string;
  /** One `ps` as a user runs it: a new drgn process attached to the QMP socket. */
  ps(qmpSocket: string): Promise<DrgnRun>;
}

class Skip extends Error {}

const say = (line: string) => process.stderr.write(`drgn peer: ${line}\n`);

/**
 * Builds drgn and fetches the debug vmlinux for `kernelPackage` (release `release`) if not
 * cached; returns the peer, or undefined (having said why) when it cannot be had.
 */
export async function prepareDrgn(kernelPackage: string, release: string): Promise<DrgnPeer | undefined> {
  try {
    const dir = await buildDrgn();
    const vmlinux = await debugVmlinux(kernelPackage, release);
    return {
      version: DRGN_VERSION,
      vmlinux,
      ps: (qmp) => runPs(dir, vmlinux, qmp),
    };
  } catch (e) {
    const why = e instanceof Skip ? e.message : `unexpected failure: ${(e as Error).stack ?? e}`;
    say(`skipped: ${why}`);
    return undefined;
  }
}

/** ../shared/peers beside the checkout; for a git worktree, beside the main checkout too. */
function findTarball(): string {
  const fromEnv = process.env.VMSIGHT_DRGN_TARBALL;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Skip(`VMSIGHT_DRGN_TARBALL=${fromEnv} does not exist`);
    return fromEnv;
  }
  const dirs = [join(repoRoot, "..", "shared", "peers")];
  const common = spawnSync("git", ["rev-parse", "--path-format=absolute", "--git-common-dir"], {
    cwd: repoRoot,
    encoding: "utf8",
  });
  if (common.status === 0) dirs.push(join(dirname(dirname(common.stdout.trim())), "shared", "peers"));
  for (const d of dirs) {
    const hit = existsSync(d) ? readdirSync(d).find((f) => /^drgn-.*\.tar\.gz$/.test(f)) : undefined;
    if (hit) return join(d, hit);
  }
  throw new Skip(`no drgn-*.tar.gz in ${dirs.join(" or ")} (set VMSIGHT_DRGN_TARBALL)`);
}

async function buildDrgn(): Promise<string> {
  const tarball = findTarball();
  const hash = createHash("sha256").update(readFileSync(tarball)).digest("hex").slice(0, 12);
  const dir = join(cacheRoot(), "peers", `drgn-${hash}`);
  if (existsSync(join(dir, ".complete"))) return dir;
  ensureBuildDeps();
  say(`building drgn (once) from ${tarball} into ${dir}; 1-2 minutes…`);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    await exec("tar", ["-xzf", tarball, "-C", tmp, "--strip-components=1"], tmp);
    writeFileSync(join(tmp, "drgn", "internal", "version.py"), `__version__ = "${DRGN_VERSION}"\n`);
    const started = Date.now();
    const ticker = setInterval(() => say(`still building drgn (${elapsed(started)})…`), 30_000);
    try {
      await exec("python3", ["setup.py", "build_ext", "-i"], tmp, join(tmp, "build.log"));
    } finally {
      clearInterval(ticker);
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    writeFileSync(join(dir, ".complete"), `${tarball}\n`);
    say(`built drgn in ${elapsed(started)}`);
    return dir;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function ensureBuildDeps(): void {
  const missing = BUILD_DEPS.filter((p) => {
    const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", p], { encoding: "utf8" });
    return r.status !== 0 || !r.stdout.includes("install ok installed");
  });
  if (missing.length === 0) return;
  const command = `apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  if (process.getuid?.() !== 0) {
    throw new Skip(`drgn's build needs Debian packages: run \`${command}\` as root`);
  }
  say(`installing drgn's build dependencies: ${missing.join(" ")}…`);
  const r = spawnSync("apt-get", command.split(" ").slice(1), {
    encoding: "utf8",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (r.status !== 0) {
    throw new Skip(`\`${command}\` failed: ${lastLines(r.stderr || r.stdout || String(r.error))}`);
  }
}

async function debugVmlinux(kernelPackage: string, release: string): Promise<string> {
  const pkg = `${kernelPackage}-dbg`;
  const dir = join(cacheRoot(), "peers", "debug", pkg);
  const vmlinux = join(dir, "vmlinux");
  if (existsSync(vmlinux)) return vmlinux;
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const size = spawnSync("apt-cache", ["show", "--no-all-versions", pkg], { encoding: "utf8" });
    const bytes = Number(/^Size: (\d+)$/m.exec(size.stdout ?? "")?.[1] ?? Number.NaN);
    const total = Number.isFinite(bytes) ? `${mb(bytes)} MB` : "size unknown";
    say(`downloading ${pkg} (${total}; once) for its debug vmlinux…`);
    const started = Date.now();
    const ticker = setInterval(() => {
      const have = readdirSync(tmp).reduce((n, f) => n + statSync(join(tmp, f)).size, 0);
      say(`  ${mb(have)} of ${total} after ${elapsed(started)}`);
    }, 20_000);
    try {
      await exec("apt-get", ["download", "-q", pkg], tmp);
    } finally {
      clearInterval(ticker);
    }
    const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Skip(`apt-get download ${pkg} produced no .deb`);
    say(`downloaded in ${elapsed(started)}; extracting vmlinux-${release}…`);
    const member = `./usr/lib/debug/boot/vmlinux-${release}`;
    await exec("sh", ["-c", `dpkg-deb --fsys-tarfile "$1" | tar -xf - "$2"`, "sh", deb, member], tmp);
    rmSync(join(tmp, deb));
    mkdirSync(dir, { recursive: true });
    renameSync(join(tmp, member), vmlinux);
    return vmlinux;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function runPs(dir: string, vmlinux: string, qmp: string): Promise<DrgnRun> {
  const t0 = performance.now();
  const r = await runProcess("python3", ["-m", "drgn", "-q", "--qemu", qmp, "-s", vmlinux, SCRIPT], {
    env: { PYTHONPATH: dir },
    timeoutMs: 300_000,
  });
  const wallMs = performance.now() - t0;
  const m = /^drgn-ps tasks=(\d+) threads=(\d+) bytes=\d+ cpu_ms=(\d+) maxrss_kb=(\d+)$/m.exec(r.stdout);
  if (r.code !== 0 || !m) {
    throw new Error(`drgn ps failed (exit ${r.code}): ${lastLines(r.stderr || r.stdout)}`);
  }
  const [tasks, threads, cpuMs, maxRssKb] = m.slice(1).map(Number) as [number, number, number, number];
  return { wallMs, tasks, threads, cpuMs, maxRssKb };
}

/** Runs a command to its end; its output goes to `logFile` (kept on failure) or is captured. */
async function exec(cmd: string, args: readonly string[], cwd: string, logFile?: string): Promise<void> {
  const r = await runProcess(cmd, args, { cwd, timeoutMs: 3_600_000 }).catch((e: Error) => {
    throw new Skip(`${cmd} ${args.join(" ")} failed: ${e.message}`);
  });
  if (logFile) writeFileSync(logFile, r.stdout + r.stderr);
  if (r.code !== 0) throw new Skip(`${cmd} ${args.join(" ")} failed: ${lastLines(r.stderr || r.stdout)}`);
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(0);
const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(0)} s`;
const lastLines = (text: string) => text.trim().split("\n").slice(-3).join(" | ");
