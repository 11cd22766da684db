import { MAX_CLI_READ, describeTranslation } from "../commands/machine.js";
import type { Space } from "../lib/types.js";
import { UsageError } from "../util/errors.js";
import { addressArg, intArg, stringValue } from "./args.js";
import { type CliCommand, type CommandContext, needVm } from "./command.js";
import { CONTROL_COMMANDS } from "./control-commands.js";
import { DISCOVERY_COMMANDS } from "./discovery-commands.js";
import { dumpCommand } from "./dump-command.js";
import { EVENT_COMMANDS } from "./event-commands.js";
import { FORENSIC_COMMANDS } from "./forensic-commands.js";
import { ISF_COMMANDS } from "./isf-commands.js";
import { cacheCommand, demoCommand, imagesCommand, runCommand, stopCommand } from "./lifecycle.js";
import { LINUX_COMMANDS } from "./linux-commands.js";
import { hexdump, table, toJson } from "./render.js";
import { serveCommand } from "./serve-command.js";

/** Through a server the vCPU count is not known here: the server checks the number instead. */
const MAX_VCPUS = 4096;

function cpuOption(ctx: CommandContext): number {
  const text = stringValue(ctx.values, "cpu");
  const vcpus = ctx.machine?.vcpuCount() ?? MAX_VCPUS;
  return text === undefined ? 0 : intArg(text, "--cpu", 0, vcpus - 1);
}

/** The virtual address space --cpu and --cr3 name (vCPU 0's by default). */
const virtualSpace = (ctx: CommandContext): Exclude<Space, "physical"> => {
  const cr3 = stringValue(ctx.values, "cr3");
  const cpu = cpuOption(ctx);
  return cr3 === undefined ? { cpu } : { cpu, cr3: addressArg(cr3, "--cr3") };
};

const regs: CliCommand = {
  name: "regs",
  dumpOk: true,
  usage: "regs [--cpu N]",
  summary: "registers of a vCPU (pauses the guest while reading)",
  options: { cpu: { type: "string" } },
  needsTarget: true,
  async run(ctx) {
    const regs = await needVm(ctx).regs(cpuOption(ctx));
    if (ctx.json) ctx.out(toJson(regs));
    else
      ctx.out(
        table(
          Object.entries(regs).map(([name, value]) => ({ name, value })),
          ["name", "value"],
        ),
      );
    return 0;
  },
};

function readArgs(ctx: CommandContext) {
  const { phys, virt } = ctx.values;
  if (phys === virt) throw new UsageError("say which address space: --phys or --virt");
  const [a, l] = ctx.positionals;
  const addr = addressArg(a, "ADDR");
  const length = intArg(l, "LEN", 1, MAX_CLI_READ);
  const cr3 = stringValue(ctx.values, "cr3");
  if (cr3 !== undefined) addressArg(cr3, "--cr3");
  return { space: phys ? ("phys" as const) : ("virt" as const), addr, length };
}

const read: CliCommand = {
  name: "read",
  dumpOk: true,
  usage: "read --phys|--virt ADDR LEN [--cr3 X] [--cpu N] [--raw]",
  summary: "read guest memory as a hex dump, raw bytes, or JSON",
  options: {
    phys: { type: "boolean" },
    virt: { type: "boolean" },
    cr3: { type: "string" },
    cpu: { type: "string" },
    raw: { type: "boolean" },
  },
  needsTarget: true,
  check: (ctx) => void readArgs(ctx),
  async run(ctx) {
    const { space, addr, length } = readArgs(ctx);
    const bytes = await needVm(ctx).read(addr, length, space === "phys" ? "physical" : virtualSpace(ctx));
    if (ctx.values.raw) process.stdout.write(bytes);
    else if (ctx.json) ctx.out(toJson({ space, address: addr, length, bytes: bytes.toString("hex") }));
    else ctx.out(hexdump(bytes, addr));
    return 0;
  },
};

const translate: CliCommand = {
  name: "translate",
  dumpOk: true,
  usage: "translate VADDR [--cr3 X] [--cpu N]",
  summary: "guest-virtual to guest-physical, with page size and rights",
  options: { cr3: { type: "string" }, cpu: { type: "string" } },
  needsTarget: true,
  check: (ctx) => void addressArg(ctx.positionals[0], "VADDR"),
  async run(ctx) {
    const t = await needVm(ctx).translate(addressArg(ctx.positionals[0], "VADDR"), virtualSpace(ctx));
    ctx.out(ctx.json ? toJson(t) : describeTranslation(t));
    return 0;
  },
};

const status: CliCommand = {
  name: "status",
  usage: "status",
  summary: "run state, QEMU process, guest RAM layout and how it is read",
  options: {},
  needsTarget: true,
  async run(ctx) {
    const s = await needVm(ctx).status();
    if (ctx.json) {
      ctx.out(toJson(s));
      return 0;
    }
    ctx.out(
      `guest ${s.status}; QEMU pid ${s.qemuPid}; ${s.vcpus} vCPU(s); ${Number(BigInt(s.ramSize) >> 20n)} MiB RAM`,
    );
    ctx.out(`memory read through ${s.memoryPath}`);
    ctx.out(table(s.ranges, ["start", "end", "name", "writable"]));
    return 0;
  },
};

function control(name: "pause" | "resume"): CliCommand {
  return {
    name,
    usage: name,
    summary: name === "pause" ? "stop the guest's vCPUs" : "let the guest run again",
    options: {},
    needsTarget: true,
    async run(ctx) {
      const vm = needVm(ctx);
      const s = await (name === "pause" ? vm.pause() : vm.resume());
      ctx.out(ctx.json ? toJson(s) : `guest ${s.status}`);
      return 0;
    },
  };
}

export const COMMANDS: readonly CliCommand[] = [
  demoCommand,
  runCommand,
  stopCommand,
  status,
  control("pause"),
  control("resume"),
  regs,
  read,
  translate,
  ...LINUX_COMMANDS,
  ...ISF_COMMANDS,
  ...FORENSIC_COMMANDS,
  ...DISCOVERY_COMMANDS,
  ...EVENT_COMMANDS,
  ...CONTROL_COMMANDS,
  dumpCommand,
  imagesCommand,
  serveCommand,
  cacheCommand,
];
