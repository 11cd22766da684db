import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { VmsightError } from "../util/errors.js";
import { cacheRoot } from "./cache.js";
import { packInitramfs, sourceDateEpoch } from "./initramfs.js";
import { type KernelFiles, ensureKernel } from "./kernels.js";
import { ensureRootkitModule } from "./rootkit.js";

export interface GuestImage {
  readonly kernelId: string;
  /** The bzImage to pass to `-kernel`. */
  readonly kernel: string;
  /** The initramfs (uncompressed newc cpio) to pass to `-initrd`. */
  readonly initrd: string;
  readonly release: string;
  /** Default kernel command line: serial console, quiet, and a panic ends QEMU (with -no-reboot). */
  readonly append: string;
  readonly kernelFiles: KernelFiles;
}

export interface GuestImageOptions {
  /** Where built images go; defaults to cacheRoot()/images. Kernels always come from cacheRoot(). */
  readonly imagesDir?: string;
  /** "rootkit": the image also carries the test rootkit (guests/rootkit), which init loads. */
  readonly variant?: "rootkit";
  /**
   * The image also loads qemu_fw_cfg, through which the kernel hands its VMCOREINFO to QEMU's
   * `-device vmcoreinfo` (what drgn's --qemu mode needs to identify the kernel). A separate
   * image: the default ones keep their module list, so their bytes.
   */
  readonly vmcoreinfo?: boolean;
}

/** The modules a `vmcoreinfo` image adds (qemu_fw_cfg depends on no other module). */
const VMCOREINFO_MODULES = ["drivers/firmware/qemu_fw_cfg"];

/** Bump when the image layout changes in a way the input hash cannot see. */
const BUILDER_VERSION = "vmsight-guest-image 1";
export const DEFAULT_APPEND = "console=ttyS0 quiet loglevel=3 panic=-1";
const BUSYBOX = "/bin/busybox";

const guestsDir = join(resolve(dirname(fileURLToPath(import.meta.url)), "../../.."), "guests");

interface ModuleSource {
  /** Path of the (compressed) file in the kernel package. */
  readonly file: string;
  /** Path inside the guest, always an uncompressed .ko. */
  readonly guestPath: string;
}

/**
 * Builds (once per distinct set of inputs) the initramfs of a test guest for `kernelId`: busybox,
 * the workload, init, vmsight-view and the kernel's listed modules. The cache key hashes every
 * input, so editing guests/ or upgrading busybox or gcc rebuilds, and nothing else does.
 */
export async function ensureGuestImage(
  kernelId: string,
  log: (line: string) => void = () => {},
  opts: GuestImageOptions = {},
): Promise<GuestImage> {
  const kernelFiles = ensureKernel(kernelId, log);
  const wanted = [...kernelFiles.spec.modules, ...(opts.vmcoreinfo ? VMCOREINFO_MODULES : [])];
  const modules = wanted.map((m) => findModule(kernelFiles, m));
  const extra = opts.variant === "rootkit" ? [rootkitSource(kernelFiles, log)] : [];
  const key = inputHash(kernelFiles, [...modules, ...extra]);
  const tags = [...(opts.variant ? [opts.variant] : []), ...(opts.vmcoreinfo ? ["vmcoreinfo"] : [])];
  const name = [kernelFiles.spec.id, ...tags, key].join("-");
  const dir = join(opts.imagesDir ?? join(cacheRoot(), "images"), name);
  const initrd = join(dir, "initrd.cpio");
  if (!existsSync(initrd)) {
    log(`building guest image ${dir}`);
    buildInto(dir, kernelFiles, modules, extra, log);
  }
  return {
    kernelId: kernelFiles.spec.id,
    kernel: kernelFiles.vmlinuz,
    initrd,
    release: kernelFiles.release,
    append: DEFAULT_APPEND,
    kernelFiles,
  };
}

const DECOMPRESSORS: Record<string, string> = { ".ko.xz": "xz", ".ko.zst": "zstd", ".ko.gz": "gzip" };

/** The test rootkit, built for this kernel; init loads it when /etc/vmsight/rootkit names it. */
function rootkitSource(kernel: KernelFiles, log: (line: string) => void): ModuleSource {
  return {
    file: ensureRootkitModule(kernel, log),
    guestPath: `/lib/modules/${kernel.release}/extra/vmsight_rk.ko`,
  };
}

function findModule(kernel: KernelFiles, module: string): ModuleSource {
  const guestPath = `/lib/modules/${kernel.release}/kernel/${module}.ko`;
  for (const suffix of [".ko", ...Object.keys(DECOMPRESSORS)]) {
    const file = join(kernel.modulesDir, "kernel", `${module}${suffix}`);
    if (existsSync(file)) return { file, guestPath };
  }
  throw new VmsightError("E_IMAGE_BUILD", `module ${module} is not in ${kernel.spec.package}`, {
    hint: "fix the kernel's `modules` list in guests/kernels.json",
  });
}

function inputHash(kernel: KernelFiles, modules: readonly ModuleSource[]): string {
  const h = createHash("sha256");
  const add = (label: string, data: string | Buffer): void => {
    h.update(`${label}\0${data.length}\0`);
    h.update(data);
  };
  add("builder", BUILDER_VERSION);
  add("release", kernel.release);
  add("epoch", String(sourceDateEpoch()));
  for (const f of ["init", "vmsight-view", "workload/workload.c"]) add(f, readFileSync(join(guestsDir, f)));
  add("busybox", readFileSync(checkStaticBusybox()));
  add("gcc", compilerIdentity());
  for (const m of modules) add(m.guestPath, readFileSync(m.file));
  return h.digest("hex").slice(0, 16);
}

/** The compiler and the static libc it links decide the workload's bytes. */
function compilerIdentity(): string {
  const version = run("gcc", ["--version"]).toString().split("\n")[0] ?? "";
  const libc = run("gcc", ["-print-file-name=libc.a"]).toString().trim();
  if (!existsSync(libc)) {
    throw new VmsightError("E_IMAGE_BUILD", "gcc has no static libc (libc.a)", {
      hint: "install Debian's libc6-dev",
    });
  }
  return `${version}\n${createHash("sha256").update(readFileSync(libc)).digest("hex")}`;
}

/** A dynamically linked busybox would die in an initramfs without a libc: refuse it up front. */
function checkStaticBusybox(): string {
  if (!existsSync(BUSYBOX)) {
    throw new VmsightError("E_IMAGE_BUILD", `${BUSYBOX} not found`, {
      hint: "install Debian's busybox-static",
    });
  }
  if (hasInterpreter(readFileSync(BUSYBOX))) {
    throw new VmsightError("E_IMAGE_BUILD", `${BUSYBOX} is dynamically linked`, {
      hint: "install busybox-static instead of busybox",
    });
  }
  return BUSYBOX;
}

/** True when a 64-bit little-endian ELF file has a PT_INTERP program header. */
export function hasInterpreter(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > elf.length) return false;
    if (elf.readUInt32LE(at) === 3) return true;
  }
  return false;
}

function buildInto(
  dir: string,
  kernel: KernelFiles,
  modules: readonly ModuleSource[],
  extra: readonly ModuleSource[],
  log: (line: string) => void,
): void {
  // Build beside the final directory and rename at the end: a concurrent or interrupted build
  // never leaves a half-written initrd where the cache lookup would accept it.
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  const root = join(tmp, "root");
  mkdirSync(root, { recursive: true });
  try {
    stageTree(root, modules, log);
    for (const m of extra) stageModule(root, m);
    if (extra[0]) writeFileSync(join(root, "etc/vmsight/rootkit"), `${extra[0].guestPath}\n`);
    log("packing initramfs (newc cpio)");
    packInitramfs(root, join(tmp, "initrd.cpio"));
    writeFileSync(join(tmp, "release"), `${kernel.release}\n`);
    rmSync(root, { recursive: true, force: true });
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Someone else finished the same build first; theirs is byte-identical.
      if (!existsSync(join(dir, "initrd.cpio"))) throw e;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function stageTree(root: string, modules: readonly ModuleSource[], log: (line: string) => void): void {
  for (const d of [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "root",
    "etc/vmsight",
  ]) {
    mkdirSync(join(root, d), { recursive: true });
  }
  copyFileSync(BUSYBOX, join(root, "bin/busybox"));
  for (const applet of run(BUSYBOX, ["--list-full"]).toString().split("\n")) {
    // bin/busybox is the binary itself; linuxrc only serves old-style initrd boots.
    if (applet === "" || applet === "bin/busybox" || applet === "linuxrc") continue;
    const link = join(root, applet);
    if (!existsSync(link)) symlinkSync("/bin/busybox", link);
  }
  copyFileSync(join(guestsDir, "init"), join(root, "init"));
  copyFileSync(join(guestsDir, "vmsight-view"), join(root, "bin/vmsight-view"));
  log("compiling the workload (gcc -static)");
  run("gcc", [
    "-static",
    "-O2",
    "-pthread",
    "-o",
    join(root, "bin/workload"),
    join(guestsDir, "workload/workload.c"),
  ]);
  // The exec bits must not depend on how the repository was checked out.
  for (const exe of ["init", "bin/vmsight-view", "bin/workload"]) chmodSync(join(root, exe), 0o755);
  for (const m of modules) stageModule(root, m);
  writeFileSync(join(root, "etc/vmsight/modules"), modules.map((m) => `${m.guestPath}\n`).join(""));
}

/** The guest's busybox insmod may lack xz/zstd support, so modules go in uncompressed. */
function stageModule(root: string, m: ModuleSource): void {
  const out = join(root, m.guestPath);
  mkdirSync(dirname(out), { recursive: true });
  const suffix = Object.keys(DECOMPRESSORS).find((s) => m.file.endsWith(s));
  if (suffix === undefined) {
    copyFileSync(m.file, out);
    return;
  }
  writeFileSync(out, run(DECOMPRESSORS[suffix]!, ["-dc", m.file]));
}

function run(cmd: string, args: string[]): Buffer {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 28 });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : r.stderr.toString().trim().split("\n").slice(-5).join(" | ");
    throw new VmsightError("E_IMAGE_BUILD", `${cmd} ${args.join(" ")} failed: ${why}`);
  }
  return r.stdout;
}
