import { join } from "node:path";
import { describeKill } from "../commands/control.js";
import type { DemoMachine, DemoReport } from "../commands/demo.js";
import { clearKernelCache, describeKernel } from "../commands/linux.js";
import { describeTranslation } from "../commands/machine.js";
import { describeEvent } from "../commands/trace.js";
import { launchGuest } from "../qemu/launch.js";
import { refuseIfServed } from "../server/announce.js";
import { hex } from "../util/address.js";
import { UsageError } from "../util/errors.js";
import { privateDir } from "../util/private-dir.js";
import { stringValue } from "./args.js";
import type { CliCommand, CommandContext } from "./command.js";
import { table, toJson } from "./render.js";

export const runCommand: CliCommand = {
  name: "run",
  usage:
    "run --kernel K --initrd I [--append A] [--memory 512M] [--cpus N] [--paused] [--accel auto|kvm|tcg]",
  summary: "boot a managed guest under QEMU and print how to attach",
  options: {
    kernel: { type: "string" },
    initrd: { type: "string" },
    append: { type: "string" },
    memory: { type: "string" },
    cpus: { type: "string" },
    paused: { type: "boolean" },
    accel: { type: "string" },
    "shared-ram": { type: "boolean" },
  },
  needsTarget: false,
  async run(ctx) {
    const kernel = stringValue(ctx.values, "kernel");
    const initrd = stringValue(ctx.values, "initrd");
    if (!kernel || !initrd)
      throw new UsageError("run needs --kernel and --initrd", `usage: vmsight ${this.usage}`);
    const accel = stringValue(ctx.values, "accel") ?? "auto";
    if (accel !== "auto" && accel !== "kvm" && accel !== "tcg")
      throw new UsageError("--accel must be auto, kvm or tcg");
    const cpus = stringValue(ctx.values, "cpus");
    const append = stringValue(ctx.values, "append");
    const guest = await launchGuest({
      kernel,
      initrd,
      accel,
      detach: true,
      paused: ctx.values.paused === true,
      memory: stringValue(ctx.values, "memory") ?? "512M",
      memoryBackend: ctx.values["shared-ram"] ? "shared-file" : "memfd",
      ...(append === undefined ? {} : { append }),
      ...(cpus === undefined ? {} : { cpus: Number(cpus) }),
    });
    if (ctx.json) {
      ctx.out(toJson(guest));
      return 0;
    }
    ctx.out(
      `guest running under ${guest.accel} (QEMU pid ${guest.pid})${ctx.values.paused ? ", paused before the first instruction" : ""}`,
    );
    ctx.out(`  console log: ${guest.serialLog}`);
    ctx.out(`  attach:      vmsight --qmp ${guest.qmpSocket} status`);
    ctx.out(`  stop:        vmsight --qmp ${guest.qmpSocket} stop`);
    return 0;
  },
};

export const stopCommand: CliCommand = {
  name: "stop",
  usage: "stop",
  summary: "power off the guest (QEMU quits)",
  options: {},
  needsTarget: false,
  async run(ctx) {
    const path = stringValue(ctx.values, "qmp") ?? process.env.VMSIGHT_QMP;
    if (!path) throw new UsageError("stop needs --qmp SOCKET");
    refuseIfServed(path, "stop");
    const { stopGuest } = await import("../commands/guests.js");
    await stopGuest(path);
    ctx.out("guest stopped");
    return 0;
  },
};

export const imagesCommand: CliCommand = {
  name: "images",
  usage: "images build [--rootkit] [KERNEL-ID…]",
  summary:
    "fetch Debian kernels and build the test/demo guest images (cached); --rootkit: the variant with the test rootkit",
  options: { rootkit: { type: "boolean" } },
  needsTarget: false,
  async run(ctx) {
    const [verb, ...ids] = ctx.positionals;
    if (verb !== "build")
      throw new UsageError('the only images verb is "build"', `usage: vmsight ${this.usage}`);
    const { buildImages } = await import("../commands/guests.js");
    const images = await buildImages(ids, ctx.log, ctx.values.rootkit === true ? "rootkit" : undefined);
    for (const i of images) ctx.out(`${i.kernelId}: ${i.release}  kernel ${i.kernel}  initrd ${i.initrd}`);
    return 0;
  },
};

export const cacheCommand: CliCommand = {
  name: "cache",
  usage: "cache clear",
  summary: "forget the kernel builds seen (kept so later commands start fast)",
  options: {},
  needsTarget: false,
  async run(ctx) {
    if (ctx.positionals[0] !== "clear" || ctx.positionals.length !== 1)
      throw new UsageError('the only cache verb is "clear"', `usage: vmsight ${this.usage}`);
    ctx.out(`removed ${clearKernelCache()}`);
    return 0;
  },
};

export const demoCommand: CliCommand = {
  name: "demo",
  usage: "demo [--kernel-id ID] [--keep] | demo --serve [--listen HOST:PORT]",
  summary: "boot the built-in demo guest and show what vmsight sees (--serve: in the live dashboard)",
  options: {
    "kernel-id": { type: "string" },
    keep: { type: "boolean" },
    serve: { type: "boolean" },
    listen: { type: "string" },
  },
  needsTarget: false,
  async run(ctx) {
    const kernelId = stringValue(ctx.values, "kernel-id");
    if (ctx.values.serve === true) return serveDemo(ctx, kernelId);
    // Loaded on use, like every rarely used command's code: `ps` starts faster without it.
    const { runDemo } = await import("../commands/demo.js");
    const report = await runDemo(
      { ...(kernelId === undefined ? {} : { kernelId }), keep: ctx.values.keep === true },
      ctx.log,
    );
    ctx.out(ctx.json ? toJson(report) : renderDemo(report));
    return 0;
  },
};

/** Boots the demo guest and serves it (as "demo") with the dashboard until Ctrl-C, then stops it. */
async function serveDemo(ctx: CommandContext, kernelId: string | undefined): Promise<number> {
  const { bootDemoGuest, waitForGuestReady } = await import("../commands/guests.js");
  const { serve } = await import("../server/serve.js");
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  process.once("SIGTERM", () => stop.abort());
  const { guest } = await bootDemoGuest(kernelId, ctx.log);
  try {
    await waitForGuestReady(guest, 180_000, ctx.log);
    ctx.log("demo guest up; open the dashboard URL below (Ctrl-C stops the server and the guest)");
    await serve({
      vms: [`demo=${guest.qmpSocket}`],
      scan: [],
      // Its own socket: a `vmsight serve` already running keeps its own.
      socket: join(privateDir(), `demo-serve-${process.pid}.sock`),
      listen: stringValue(ctx.values, "listen") ?? "127.0.0.1:0",
      out: ctx.out,
      log: ctx.log,
      signal: stop.signal,
    });
  } finally {
    await guest.stop();
  }
  return 0;
}

function renderDemo(r: DemoReport): string {
  const parts = [
    `accelerator: ${r.accel.accel} (${r.accel.reason})`,
    `guest up; attached through nothing but its QMP socket ${r.qmpSocket}\n`,
    renderMachine(r.machine),
  ];
  if (r.kill) {
    parts.push(
      `\n== process events for ${r.traceSeconds} s while the guest runs \`${r.traceCommand}\``,
      ...r.events.map(describeEvent),
      `\n== the guest's own ps, before\n${r.kill.guestPsBefore}`,
      `\n== kill -9 of pid ${r.kill.victim} from outside the guest (the kernel's own signal delivery, no agent)`,
      ...describeKill(r.kill.report),
      `\n== the guest's own ps, after\n${r.kill.guestPsAfter}`,
    );
  }
  if (r.kept) parts.push(`\nguest left running: vmsight --qmp ${r.qmpSocket} status`);
  return parts.join("\n");
}

function renderMachine(m: DemoMachine): string {
  const s = m.status;
  const parts = [
    `== status\nQEMU pid ${s.qemuPid}, ${s.vcpus} vCPU, ${Number(s.ramSize >> 20n)} MiB, read through ${s.memoryPath}`,
    `\n== vCPU 0 registers (guest paused while reading)\n${table(m.registers, ["name", "value"])}`,
    `\n== kernel, found in guest RAM in ${m.kernelMs} ms with no symbol files\n${describeKernel(m.kernel)}`,
    `\n== linux_banner through the kernel's page tables\n${describeTranslation(m.banner)}`,
    `\n== processes (${m.processes.length}; kernel threads omitted here, \`vmsight ps\` shows all)`,
    table(
      m.processes.filter((p) => p.cmdline !== ""),
      ["pid", "ppid", "uid", "state", "comm", "cmdline"],
    ),
    `\n== modules\n${table(m.modules, ["name", "base", "size", "state"])}`,
  ];
  if (m.worker) {
    const rows = m.worker.maps.map((x) => ({ ...x, range: `${hex(x.start)}-${hex(x.end)}` }));
    parts.push(
      `\n== memory map of ${m.worker.comm} (pid ${m.worker.pid})\n${table(rows, ["range", "perms", "offset", "path"])}`,
    );
  }
  return parts.join("\n");
}
