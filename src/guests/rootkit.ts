import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { VmsightError } from "../util/errors.js";
import { cacheRoot } from "./cache.js";
import type { KernelFiles } from "./kernels.js";

/**
 * The test rootkit (guests/rootkit/vmsight_rk.c), built against Debian's headers for a test
 * kernel. Only the "rootkit" variant of a test image carries it; `vmsight check` must flag what
 * it hides.
 */
const BUILDER_VERSION = "vmsight-rootkit 2";
const sourceDir = join(resolve(dirname(fileURLToPath(import.meta.url)), "../../.."), "guests", "rootkit");
const SOURCES = ["vmsight_rk.c", "Kbuild"];

function run(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || r.stdout).trim().split("\n").slice(-5).join(" | ");
    throw new VmsightError("E_IMAGE_BUILD", `${cmd} ${args.join(" ")} failed: ${why}`, {
      hint: "the test rootkit needs make, gcc and Debian's archive (scripts/setup.sh installs them)",
    });
  }
  return r.stdout;
}

/**
 * Fetches (apt-get download) and unpacks the kernel's header packages, once, every package at
 * the version of the first (the kernel's own headers): linux-kbuild-6.1 moves on with security
 * updates while the 6.1.0-50 headers do not.
 */
export function ensureHeaders(kernel: KernelFiles, log: (line: string) => void): string {
  const packages = kernel.spec.headers;
  if (!packages || packages.length === 0) {
    throw new VmsightError("E_IMAGE_BUILD", `kernel ${kernel.spec.id} lists no header packages`, {
      hint: 'add "headers" to its entry in guests/kernels.json',
    });
  }
  const dir = join(cacheRoot(), "headers", packages[0]!);
  const root = join(dir, "root");
  if (!existsSync(join(dir, ".complete"))) {
    log(`fetching ${packages.join(", ")} from Debian's archive`);
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    run("apt-get", ["download", "-q", packages[0]!], tmp);
    const first = readdirSync(tmp).find((f) => f.endsWith(".deb"))!;
    const version = run("dpkg-deb", ["-f", first, "Version"], tmp).trim();
    for (const p of packages.slice(1)) run("apt-get", ["download", "-q", `${p}=${version}`], tmp);
    for (const deb of readdirSync(tmp).filter((f) => f.endsWith(".deb"))) {
      run("dpkg-deb", ["-x", deb, "root"], tmp);
      rmSync(join(tmp, deb));
    }
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
    writeFileSync(join(dir, ".complete"), `${packages.join(" ")} ${version}\n`);
  }
  const build = join(root, "usr", "src", packages[0]!);
  // The arch package's Makefile includes the common one by its installed path, /usr/src/…
  const makefile = join(build, "Makefile");
  const text = readFileSync(makefile, "utf8");
  const fixed = text.replace(/^include \/usr\/src\//m, `include ${join(root, "usr", "src")}/`);
  if (fixed !== text) writeFileSync(makefile, fixed);
  return build;
}

/** `CC` of Debian's headers (gcc-12 for 6.1), and that it is the compiler the kernel was built with. */
function checkCompiler(build: string, log: (line: string) => void): string {
  const vars = readFileSync(join(build, ".kernelvariables"), "utf8");
  const cc = /\bgcc-\d+/.exec(vars)?.[0] ?? "gcc";
  const want = /^CONFIG_CC_VERSION_TEXT="(.*)"$/m.exec(readFileSync(join(build, ".config"), "utf8"))?.[1];
  const have = run(cc, ["--version"]).split("\n")[0] ?? "";
  if (want !== undefined && want !== have) {
    // Debian sets DEBIAN_KERNEL_NO_CC_VERSION_CHECK; a module from another patch level of the
    // same gcc loads fine (vermagic does not name the compiler), so say it and go on.
    log(`note: the kernel was built with "${want}", the module is built with "${have}"`);
  }
  return have;
}

/** Builds (once per distinct set of inputs) the rootkit module for `kernel`; returns its .ko. */
export function ensureRootkitModule(kernel: KernelFiles, log: (line: string) => void = () => {}): string {
  const build = ensureHeaders(kernel, log);
  const compiler = checkCompiler(build, log);
  const h = createHash("sha256");
  for (const part of [BUILDER_VERSION, kernel.release, build, compiler]) h.update(`${part}\0`);
  for (const f of SOURCES) h.update(readFileSync(join(sourceDir, f)));
  const dir = join(cacheRoot(), "rootkit", `${kernel.spec.id}-${h.digest("hex").slice(0, 16)}`);
  const ko = join(dir, "vmsight_rk.ko");
  if (existsSync(ko)) return ko;
  log(`building the test rootkit module against ${build}`);
  // A build directory of this process's own (concurrent builds do not collide); the prefix map
  // keeps its name out of the objects, and so out of the .ko's build-id, and stripping drops the
  // DWARF: the module is byte-identical wherever it is built.
  const work = join(cacheRoot(), "rootkit", `build-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    for (const f of SOURCES) copyFileSync(join(sourceDir, f), join(work, f));
    run("make", ["-s", "-C", build, `M=${work}`, `KCFLAGS=-ffile-prefix-map=${work}=vmsight_rk`, "modules"]);
    run("strip", ["--strip-debug", join(work, "vmsight_rk.ko")]);
    mkdirSync(dir, { recursive: true });
    copyFileSync(join(work, "vmsight_rk.ko"), `${ko}.tmp-${process.pid}`);
    renameSync(`${ko}.tmp-${process.pid}`, ko);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return ko;
}
