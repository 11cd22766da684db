/**
 * The kernel's own symbol list as the guest prints it (/proc/kallsyms, read as root over the
 * serial console), and where the kernel was linked (from the build's config in the Debian
 * package): the oracles for the KASLR slide and for a System.map. Nothing here uses vmsight's
 * kallsyms or ELF code.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { OracleFormatError } from "./oracle.js";
import type { SerialConsole } from "./serial.js";

export interface KallsymsLine {
  readonly address: bigint;
  readonly type: string;
  readonly name: string;
  /** The module in brackets, for a module's symbol. */
  readonly module: string | undefined;
}

/** `ffffffff81000000 T _text` or `ffffffffc0a01000 t foo\t[mod]`, as the kernel prints them. */
export function parseKallsymsLine(line: string): KallsymsLine {
  const m = /^([0-9a-f]{16}) (\S) (\S+)(?:\t\[(\S+)\])?$/.exec(line);
  if (!m) throw new OracleFormatError(`not a /proc/kallsyms line: ${JSON.stringify(line.slice(0, 200))}`);
  return { address: BigInt(`0x${m[1]}`), type: m[2]!, name: m[3]!, module: m[4] };
}

/**
 * The whole /proc/kallsyms of the guest. The test guests' shell runs as root with
 * kptr_restrict 0, so the kernel prints real addresses. The serial console carries ~60-80 KB/s
 * under TCG, so the ~7 MB list (6.12: 163k symbols) travels gzipped and in base64: 1.6 MB,
 * ~20 s instead of ~2 min.
 */
export async function readGuestKallsyms(serial: SerialConsole): Promise<string> {
  const b64 = await serial.command("gzip -c /proc/kallsyms | base64", 300_000);
  const text = gunzipSync(Buffer.from(b64.replace(/\s/g, ""), "base64")).toString("latin1");
  guardPrivileged(text);
  return text;
}

/** One symbol of the guest's /proc/kallsyms (the first of that name outside modules). */
export async function guestSymbol(serial: SerialConsole, name: string): Promise<bigint> {
  const out = await serial.command(`grep -m1 ' ${name}$' /proc/kallsyms`);
  guardPrivileged(out);
  return parseKallsymsLine(out.trim()).address;
}

/** With kptr_restrict in force (or not root) the kernel prints every address as zeros. */
function guardPrivileged(text: string): void {
  if (!/^0*[1-9a-f]/m.test(text)) {
    throw new OracleFormatError("/proc/kallsyms shows zero addresses: not read as root, or kptr_restrict=2");
  }
}

/**
 * Where `_text` was linked, from the kernel build's own config in the Debian package: on x86-64
 * the kernel image is mapped at __START_KERNEL_map (0xffffffff80000000, fixed by the
 * architecture: Documentation/arch/x86/x86_64/mm.rst) plus CONFIG_PHYSICAL_START rounded up to
 * CONFIG_PHYSICAL_ALIGN.
 */
export function linkedTextAddress(vmlinuz: string, release: string): bigint {
  const config = readFileSync(join(dirname(vmlinuz), `config-${release}`), "utf8");
  const option = (name: string): bigint => {
    const m = new RegExp(`^${name}=(0x[0-9a-f]+)$`, "m").exec(config);
    if (!m) throw new OracleFormatError(`no ${name} in config-${release}`);
    return BigInt(m[1]!);
  };
  const start = option("CONFIG_PHYSICAL_START");
  const align = option("CONFIG_PHYSICAL_ALIGN");
  return 0xffff_ffff_8000_0000n + ((start + align - 1n) / align) * align;
}

/**
 * A System.map made of the guest's /proc/kallsyms: the kernel's symbols (no module's) moved back
 * to their link-time addresses by `slide`. Per-CPU symbols are offsets, not addresses, and stay.
 */
export function systemMapFromKallsyms(kallsyms: string, slide: bigint): string {
  const lines = kallsyms
    .split("\n")
    .filter((l) => l !== "")
    .map(parseKallsymsLine)
    .filter((s) => s.module === undefined)
    .map((s) => {
      const linked = s.address >= 1n << 63n ? s.address - slide : s.address;
      return `${linked.toString(16).padStart(16, "0")} ${s.type} ${s.name}`;
    });
  return `${lines.join("\n")}\n`;
}
