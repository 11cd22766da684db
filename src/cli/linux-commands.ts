import { describeKernel, kernelReport, openKernel } from "../commands/linux.js";
import { type CliCommand, need } from "./command.js";
import { toJson } from "./render.js";

export const kernelCommand: CliCommand = {
  name: "kernel",
  usage: "kernel",
  summary: "kernel version, KASLR slide, randomised bases, paging mode, symbol and type counts",
  options: {},
  needsTarget: true,
  async run(ctx) {
    const report = kernelReport(await openKernel(need(ctx)));
    ctx.out(ctx.json ? toJson([report]) : describeKernel(report));
    return 0;
  },
};

export const LINUX_COMMANDS: readonly CliCommand[] = [kernelCommand];
