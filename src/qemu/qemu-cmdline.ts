import { closeSync, openSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";

/**
 * The kernel file QEMU was told to boot directly, from its argument vector. QEMU 7.2 accepts
 * `-kernel PATH`, `--kernel PATH` and the machine property (`-machine …,kernel=PATH`, `-M`), all
 * of which set the same property: the last one wins. `-kernel=PATH` is not an option QEMU knows
 * (it exits with "invalid option"), so it is not read as one. In `-machine` values a comma is
 * written `,,`.
 */
export function kernelFromQemuArgs(argv: readonly string[]): string | undefined {
  let kernel: string | undefined;
  for (let i = 1; i < argv.length; i++) {
    const opt = optionName(argv[i]!);
    // A word that is no option is a disk image (QEMU's `qemu-system-x86_64 disk.img`).
    if (opt === undefined || NO_ARGUMENT.has(opt)) continue;
    const value = argv[++i];
    if (value === undefined) break;
    if (opt === "kernel") kernel = value;
    else if (opt === "machine" || opt === "M") kernel = machineProperty(value, "kernel") ?? kernel;
  }
  return kernel;
}

/**
 * QEMU's options that take no argument (qemu-options.hx entries without HAS_ARG, 7.2 and
 * older). Every other option consumes the next word whatever it looks like, as QEMU does: in
 * `-append -kernel` the second word is the command line, not an option.
 */
const NO_ARGUMENT = new Set([
  "S",
  "s",
  "alt-grab",
  "async-teardown",
  "audio-help",
  "ctrl-grab",
  "curses",
  "daemonize",
  "enable-fips",
  "enable-kvm",
  "enable-sync-profile",
  "full-screen",
  "h",
  "help",
  "mem-prealloc",
  "no-acpi",
  "no-fd-bootchk",
  "no-frame",
  "no-hpet",
  "no-kvm",
  "no-quit",
  "no-reboot",
  "no-shutdown",
  "no-user-config",
  "nodefaults",
  "nographic",
  "old-param",
  "only-migratable",
  "portrait",
  "preconfig",
  "sdl",
  "semihosting",
  "singlestep",
  "snapshot",
  "usb",
  "version",
  "win2k-hack",
  "xen-attach",
  "xen-domid-restrict",
]);

/** `-foo` and `--foo` are the same option to QEMU. */
function optionName(arg: string): string | undefined {
  if (!arg.startsWith("-") || arg === "-" || arg === "--") return undefined;
  return arg.startsWith("--") ? arg.slice(2) : arg.slice(1);
}

/** A key of a QEMU keyval string (`type,key=value,...`, `,,` for a literal comma), last one wins. */
export function machineProperty(value: string, key: string): string | undefined {
  let found: string | undefined;
  for (const item of splitKeyval(value)) {
    const eq = item.indexOf("=");
    if (eq > 0 && item.slice(0, eq) === key) found = item.slice(eq + 1);
  }
  return found;
}

function splitKeyval(value: string): string[] {
  const items: string[] = [];
  let cur = "";
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c !== ",") cur += c;
    else if (value[i + 1] === ",") {
      cur += ",";
      i++;
    } else {
      items.push(cur);
      cur = "";
    }
  }
  items.push(cur);
  return items;
}

/** What QEMU's command line says about a directly booted kernel, and whether we can read it. */
export type QemuKernel =
  | { readonly kind: "none" }
  | { readonly kind: "usable"; readonly path: string }
  | { readonly kind: "unusable"; readonly path: string; readonly why: string };

/**
 * The `-kernel` file of the QEMU process `pid`, resolved against QEMU's working directory. It is
 * usable only when it is a regular file this process can read: QEMU loaded it at startup, and it
 * may have been deleted, replaced by a directory, or be unreadable to us since.
 */
export function qemuKernelFile(pid: number): QemuKernel {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0");
  } catch (error) {
    return { kind: "unusable", path: "?", why: `cannot read /proc/${pid}/cmdline (${reason(error)})` };
  }
  const given = kernelFromQemuArgs(argv);
  if (given === undefined) return { kind: "none" };
  let path = given;
  if (!isAbsolute(given)) {
    try {
      path = resolve(readlinkSync(`/proc/${pid}/cwd`), given);
    } catch (error) {
      return { kind: "unusable", path: given, why: `QEMU's working directory is unknown (${reason(error)})` };
    }
  }
  try {
    const st = statSync(path);
    if (!st.isFile()) return { kind: "unusable", path, why: "not a regular file" };
    closeSync(openSync(path, "r"));
  } catch (error) {
    return { kind: "unusable", path, why: reason(error) };
  }
  return { kind: "usable", path };
}

function reason(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  return e.code ? `${e.code}: ${e.message.replace(/^[A-Z]+: /, "")}` : String(e.message ?? error);
}
