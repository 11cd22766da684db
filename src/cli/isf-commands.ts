import { writeFileSync } from "node:fs";
import { libvmiOffsets, libvmiStanza, symbolFile } from "../commands/isf.js";
import { openKernel } from "../commands/linux.js";
import { VmsightError } from "../util/errors.js";
import { stringValue } from "./args.js";
import { type CliCommand, needMachine } from "./command.js";
import { KERNEL_OPTIONS, checkKernelOptions, kernelOptions } from "./linux-commands.js";
import { toJson } from "./render.js";

/**
 * The CLI exits as soon as a command returns, and a pipe takes 64 KiB at a time: a symbol file
 * (megabytes) must be flushed before the command returns, or `vmsight isf | …` gets a prefix.
 */
function writeAll(text: string): Promise<void> {
  return new Promise((done, fail) => {
    process.stdout.write(text, (error) => (error ? fail(error) : done()));
  });
}

/** Symbols for other tools: Volatility 3's symbol file, LibVMI's offsets. */
const isfCommand: CliCommand = {
  name: "isf",
  usage: "isf [--out FILE]",
  summary:
    "a Volatility 3 symbol file (ISF JSON) from the guest's BTF, kallsyms and banner (partial from --offsets)",
  options: { ...KERNEL_OPTIONS, out: { type: "string" } },
  needsTarget: true,
  local: true,
  dumpOk: true,
  check: checkKernelOptions,
  async run(ctx) {
    const { text, notes } = symbolFile(await openKernel(needMachine(ctx), kernelOptions(ctx.values)));
    for (const note of notes) ctx.log(note);
    const out = stringValue(ctx.values, "out");
    if (out === undefined) {
      await writeAll(`${text}\n`);
      return 0;
    }
    try {
      writeFileSync(out, text);
    } catch (error) {
      throw new VmsightError("E_USAGE", `cannot write ${out} (${(error as NodeJS.ErrnoException).code})`);
    }
    ctx.log(`wrote ${out} (${text.length} bytes)`);
    return 0;
  },
};

const libvmiCommand: CliCommand = {
  name: "libvmi-config",
  usage: "libvmi-config",
  summary: "the guest's stanza for /etc/libvmi.conf (offsets, init_task, KASLR slide)",
  options: KERNEL_OPTIONS,
  needsTarget: true,
  local: true,
  dumpOk: true,
  check: checkKernelOptions,
  async run(ctx) {
    const offsets = libvmiOffsets(await openKernel(needMachine(ctx), kernelOptions(ctx.values)));
    ctx.out(ctx.json ? toJson([offsets]) : libvmiStanza(offsets));
    return 0;
  },
};

export const ISF_COMMANDS: readonly CliCommand[] = [isfCommand, libvmiCommand];
