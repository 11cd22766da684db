import { parseAddress } from "../util/address.js";
import { UsageError } from "../util/errors.js";
import { stringValue } from "./args.js";
import type { CliCommand, CommandContext } from "./command.js";

const USAGE =
  "discover --kernel BZIMAGE --initrd FILE [--append A] [--memory 512M] [--keep] [--out FILE] | " +
  "--qmp SOCKET discover [--vmlinux FILE | --kernel BZIMAGE] [--out FILE] [--slide N] [--timeout SECONDS]";

export interface Plan {
  readonly qmp: string | undefined;
  /** The kernel file given on our command line; with --qmp it may be absent. */
  readonly image: string | undefined;
  readonly initrd: string | undefined;
  readonly slide: bigint | undefined;
  readonly timeoutMs: number;
}

function plan(ctx: CommandContext): Plan {
  const qmp = stringValue(ctx.values, "qmp") ?? process.env.VMSIGHT_QMP;
  const kernel = stringValue(ctx.values, "kernel");
  const vmlinux = stringValue(ctx.values, "vmlinux");
  const initrd = stringValue(ctx.values, "initrd");
  const hint = `usage: vmsight ${USAGE}`;
  if (kernel && vmlinux) throw new UsageError("give either --kernel or --vmlinux, not both", hint);
  const image = vmlinux ?? kernel;
  if (qmp === undefined && (!kernel || !initrd))
    throw new UsageError("discover boots a guest: it needs --kernel and --initrd (or --qmp)", hint);
  const slideText = stringValue(ctx.values, "slide");
  const slide = slideText === undefined ? undefined : parseAddress(slideText);
  if (slideText !== undefined && slide === undefined)
    throw new UsageError(`--slide must be a number, got "${slideText}"`);
  const timeout = Number(stringValue(ctx.values, "timeout") ?? "300");
  if (!Number.isFinite(timeout) || timeout <= 0)
    throw new UsageError("--timeout must be a positive number of seconds");
  return { qmp, image, initrd, slide, timeoutMs: timeout * 1000 };
}

export const discoverCommand: CliCommand = {
  name: "discover",
  usage: USAGE,
  summary: "learn task/mm/module struct offsets while the guest boots (no debug info, no BTF)",
  options: {
    kernel: { type: "string" },
    vmlinux: { type: "string" },
    initrd: { type: "string" },
    append: { type: "string" },
    memory: { type: "string" },
    accel: { type: "string" },
    keep: { type: "boolean" },
    out: { type: "string" },
    slide: { type: "string" },
    timeout: { type: "string" },
  },
  // Attaches itself: with --qmp to a paused guest, otherwise to the guest it launches.
  needsTarget: false,
  check: (ctx) => void plan(ctx),
  async run(ctx) {
    const { runDiscover } = await import("./discovery-run.js");
    return runDiscover(ctx, plan(ctx));
  },
};

export const DISCOVERY_COMMANDS: readonly CliCommand[] = [discoverCommand];
