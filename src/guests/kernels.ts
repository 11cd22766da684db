import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { extractVmlinux } from "../os/linux/bzimage.js";
import { VmsightError } from "../util/errors.js";
import { cacheRoot } from "./cache.js";

export interface KernelSpec {
  readonly id: string;
  readonly package: string;
  /** Module paths under lib/modules/<release>/kernel, without the .ko suffix. */
  readonly modules: readonly string[];
  readonly optional?: boolean;
  /** Debian packages to build modules against it (headers, common headers, kbuild), if listed. */
  readonly headers?: readonly string[];
}

export interface KernelFiles {
  readonly spec: KernelSpec;
  /** `uname -r` of this kernel. */
  readonly release: string;
  readonly vmlinuz: string;
  /** The decompressed ELF image (stripped: no symbol table, but .BTF and the kallsyms tables). */
  readonly vmlinux: string;
  readonly modulesDir: string;
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export function kernelCatalog(): { default: string; kernels: KernelSpec[] } {
  const path = join(repoRoot, "guests", "kernels.json");
  return JSON.parse(readFileSync(path, "utf8")) as { default: string; kernels: KernelSpec[] };
}

export function kernelSpec(id: string): KernelSpec {
  const catalog = kernelCatalog();
  const spec = catalog.kernels.find((k) => k.id === id || k.package === id);
  if (!spec) {
    const known = catalog.kernels.map((k) => k.id).join(", ");
    throw new VmsightError("E_KERNEL_UNKNOWN", `no kernel "${id}" in guests/kernels.json`, {
      hint: `known kernels: ${known}`,
    });
  }
  return spec;
}

function run(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8" });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || r.stdout).trim().split("\n").slice(-3).join(" ");
    throw new VmsightError("E_KERNEL_FETCH", `${cmd} ${args.join(" ")} failed: ${why}`, {
      hint: "kernels come from Debian's archive: check `apt-get update` and the network",
    });
  }
}

/** Fetches (apt-get download) and unpacks (dpkg-deb -x) a Debian kernel package, once. */
export function ensureKernel(id: string, log: (line: string) => void = () => {}): KernelFiles {
  const spec = kernelSpec(id);
  const dir = join(cacheRoot(), "kernels", spec.package);
  const root = join(dir, "root");
  if (!existsSync(join(dir, ".complete"))) {
    log(`fetching ${spec.package} from Debian's archive`);
    rmSync(dir, { recursive: true, force: true });
    const tmp = `${dir}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    run("apt-get", ["download", "-q", spec.package], tmp);
    const deb = readdirSync(tmp).find((f) => f.endsWith(".deb"));
    if (!deb) throw new VmsightError("E_KERNEL_FETCH", `apt-get download ${spec.package} produced no .deb`);
    run("dpkg-deb", ["-x", deb, "root"], tmp);
    rmSync(join(tmp, deb));
    renameSync(tmp, dir);
    writeFileSync(join(dir, ".complete"), `${spec.package}\n`);
  }
  const release = readdirSync(join(root, "lib", "modules"))[0];
  if (!release) throw new VmsightError("E_KERNEL_FETCH", `${spec.package} has no lib/modules/<release>`);
  const vmlinuz = join(root, "boot", `vmlinuz-${release}`);
  const vmlinux = join(dir, "vmlinux");
  if (!existsSync(vmlinux)) {
    log(`decompressing vmlinux from ${vmlinuz}`);
    writeFileSync(`${vmlinux}.tmp`, extractVmlinux(readFileSync(vmlinuz)));
    renameSync(`${vmlinux}.tmp`, vmlinux);
  }
  return { spec, release, vmlinuz, vmlinux, modulesDir: join(root, "lib", "modules", release) };
}
