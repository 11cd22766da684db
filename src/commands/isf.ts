import { readFileSync } from "node:fs";
import { parseBanner } from "../os/linux/banner.js";
import { type KernelInfo, readKernelBtf } from "../os/linux/kernel.js";
import { buildProfileIsf } from "../symbols/isf-profile.js";
import { buildIsf } from "../symbols/isf.js";
import type { SymbolTable } from "../symbols/kallsyms/table.js";
import { hex, va } from "../util/address.js";
import { GuestDataError, VmsightError } from "../util/errors.js";
import { exactJson } from "../util/exact-json.js";

/** `linux_banner` is "Linux version … \n": far shorter than this in every kernel. */
const MAX_BANNER = 1024;

/** The version in vmsight's package.json, which Volatility shows as the file's producer. */
function producerVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8"));
    return typeof pkg.version === "string" ? pkg.version : "unknown";
  } catch {
    return "unknown";
  }
}

/** A symbol file's JSON text, and what a reader of it must know (empty from BTF). */
export interface SymbolFile {
  readonly text: string;
  readonly notes: readonly string[];
}

/**
 * A Volatility 3 symbol file for the guest's kernel. From BTF it is whole. From an offsets
 * profile it is partial (src/symbols/isf-profile.ts): the notes say which members are left out
 * and which Volatility plugins therefore cannot run.
 */
export function symbolFile(k: KernelInfo): SymbolFile {
  // Link-time addresses, as dwarf2json writes them: the file then fits every boot of this
  // build, and Volatility finds each boot's slide itself (from init_task and init_files).
  const symbols = k.symbols.rebase(-k.slide);
  if (k.typeCount === 0) return profileSymbolFile(k, symbols);
  const doc = buildIsf({
    btf: readKernelBtf(k.kernel, k.symbols),
    symbols,
    banner: bannerBytes(k),
    producerVersion: producerVersion(),
  });
  return { text: exactJson(doc), notes: [] };
}

function profileSymbolFile(k: KernelInfo, symbols: SymbolTable): SymbolFile {
  const profile = k.layout.profile;
  if (profile === undefined) {
    throw new VmsightError(
      "E_NO_BTF",
      `a Volatility symbol file needs the kernel's types or an offsets profile`,
      {
        hint: "drop --no-btf on a kernel with BTF, or give --offsets PROFILE (from `vmsight discover`)",
      },
    );
  }
  const isf = buildProfileIsf({
    profile,
    symbols,
    banner: bannerBytes(k),
    producerVersion: producerVersion(),
  });
  const notes = [
    `partial symbol file from ${k.layout.source}: symbols, banner and ${Object.keys(profile).length - isf.untyped.length} members; no struct sizes`,
    ...(isf.untyped.length === 0
      ? []
      : [`left out (vmsight does not know their C types): ${isf.untyped.join(", ")}`]),
    ...isf.lacking.map(
      (l) => `Volatility's ${l.plugin} cannot run: the profile lacks ${l.members.join(", ")}`,
    ),
  ];
  return { text: exactJson(isf.doc), notes };
}

/** The bytes of `linux_banner` up to and including its NUL, as Volatility matches them. */
function bannerBytes(k: KernelInfo): Buffer {
  const at = k.symbols.findAddress("linux_banner");
  if (at === undefined) {
    throw new VmsightError("E_SYMBOL_UNKNOWN", "the kernel has no linux_banner symbol", {
      hint: "Volatility picks a symbol file by the banner it carries; this kernel's symbols lack it",
    });
  }
  const bytes = k.kernel.read(va(at), MAX_BANNER);
  const nul = bytes.indexOf(0);
  if (nul < 0) throw new GuestDataError(`linux_banner at ${hex(at)} has no NUL in ${MAX_BANNER} bytes`);
  return bytes.subarray(0, nul + 1);
}

export interface LibvmiOffsets {
  readonly name: string;
  readonly linux_tasks: number;
  readonly linux_mm: number;
  readonly linux_pid: number;
  readonly linux_name: number;
  readonly linux_pgd: number;
  /** Link-time address of init_task; LibVMI adds linux_kaslr itself. */
  readonly linux_init_task: bigint;
  /** The KASLR slide of this boot. */
  readonly linux_kaslr: bigint;
}

/** The offsets LibVMI reads Linux guests with; works from BTF and from an offsets profile alike. */
export function libvmiOffsets(k: KernelInfo): LibvmiOffsets {
  const at = (struct: string, member: string) => k.layout.offsetof(struct, member);
  return {
    name: parseBanner(k.banner)?.release ?? "linux-guest",
    linux_tasks: at("task_struct", "tasks"),
    linux_mm: at("task_struct", "mm"),
    linux_pid: at("task_struct", "pid"),
    linux_name: at("task_struct", "comm"),
    linux_pgd: at("mm_struct", "pgd"),
    linux_init_task: k.symbols.getAddress("init_task") - k.slide,
    linux_kaslr: k.slide,
  };
}

/**
 * The stanza for /etc/libvmi.conf. `sysmap` is left out on purpose: with the offsets and
 * init_task given LibVMI needs no symbol file, and Debian ships no real System.map.
 */
export function libvmiStanza(o: LibvmiOffsets): string {
  const lines = [
    `    ostype = "Linux";`,
    ...(["linux_tasks", "linux_mm", "linux_pid", "linux_name", "linux_pgd"] as const).map(
      (key) => `    ${key} = ${hex(BigInt(o[key]))};`,
    ),
    `    linux_init_task = ${hex(o.linux_init_task)};`,
    `    linux_kaslr = ${hex(o.linux_kaslr)};`,
  ];
  return [`${o.name} {`, ...lines, "}"].join("\n");
}
