import { describeKill, killProcess } from "../commands/control.js";
import { bootDemoGuest, buildImages, waitForGuestReady } from "../commands/guests.js";
import { describeKernel, kernelReport, openKernel } from "../commands/linux.js";
import { describeTranslation, registerRows, statusReport, translateAddress } from "../commands/machine.js";
import { lsmodRows, mapsRows, psRows } from "../commands/processes.js";
import { describeEvent, runTrace } from "../commands/trace.js";
import { detectAccel } from "../qemu/accel.js";
import { launchGuest } from "../qemu/launch.js";
import { SerialConsole } from "../qemu/serial-console.js";
import { Target } from "../qemu/session.js";
import { QmpClient } from "../transport/qmp/client.js";
import { hex } from "../util/address.js";
import { UsageError } from "../util/errors.js";
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
    const qmp = await QmpClient.connect(path);
    await qmp.execute("quit").catch(() => undefined);
    qmp.close();
    ctx.out("guest stopped");
    return 0;
  },
};

export const imagesCommand: CliCommand = {
  name: "images",
  usage: "images build [KERNEL-ID…]",
  summary: "fetch Debian kernels and build the test/demo guest images (cached)",
  options: {},
  needsTarget: false,
  async run(ctx) {
    const [verb, ...ids] = ctx.positionals;
    if (verb !== "build")
      throw new UsageError('the only images verb is "build"', `usage: vmsight ${this.usage}`);
    const images = await buildImages(ids, ctx.log);
    for (const i of images) ctx.out(`${i.kernelId}: ${i.release}  kernel ${i.kernel}  initrd ${i.initrd}`);
    return 0;
  },
};

export const demoCommand: CliCommand = {
  name: "demo",
  usage: "demo [--kernel-id ID] [--keep]",
  summary: "boot the built-in demo guest and show what vmsight sees",
  options: { "kernel-id": { type: "string" }, keep: { type: "boolean" } },
  needsTarget: false,
  async run(ctx) {
    const { accel, reason } = detectAccel();
    ctx.out(`accelerator: ${accel} (${reason})`);
    const { guest } = await bootDemoGuest(stringValue(ctx.values, "kernel-id"), ctx.log);
    try {
      await waitForGuestReady(guest, 180_000, ctx.log);
      ctx.out(`guest up; attaching through nothing but its QMP socket ${guest.qmpSocket}\n`);
      const target = await Target.attach(guest.qmpSocket);
      try {
        await showMachine(ctx, target);
      } finally {
        await target.close();
      }
      if (guest.serialSocket) await showEventsAndKill(ctx, guest.qmpSocket, guest.serialSocket);
    } finally {
      if (ctx.values.keep) ctx.out(`\nguest left running: vmsight --qmp ${guest.qmpSocket} status`);
      else await guest.stop();
    }
    return 0;
  },
};

async function showMachine(ctx: CommandContext, target: Target): Promise<void> {
  const s = await statusReport(target);
  ctx.out(
    `== status\nQEMU pid ${s.qemuPid}, ${s.vcpus} vCPU, ${Number(s.ramSize >> 20n)} MiB, read through ${s.memoryPath}`,
  );
  const wanted = new Set(["rip", "rsp", "cr0", "cr3", "cr4", "efer", "gs_base", "k_gs_base"]);
  const regs = (await registerRows(target, 0)).filter((r) => wanted.has(r.name));
  ctx.out(`\n== vCPU 0 registers (guest paused while reading)\n${table(regs, ["name", "value"])}`);
  const started = performance.now();
  const k = await openKernel(target);
  const ms = Math.round(performance.now() - started);
  ctx.out(
    `\n== kernel, found in guest RAM in ${ms} ms with no symbol files\n${describeKernel(kernelReport(k))}`,
  );
  const banner = k.symbols.getAddress("linux_banner");
  ctx.out(
    `\n== linux_banner through the kernel's page tables\n${describeTranslation(await translateAddress(target, banner, {}))}`,
  );
  const ps = psRows(k);
  ctx.out(`\n== processes (${ps.length}; kernel threads omitted here, \`vmsight ps\` shows all)`);
  ctx.out(
    table(
      ps.filter((p) => p.cmdline !== ""),
      ["pid", "ppid", "uid", "state", "comm", "cmdline"],
    ),
  );
  ctx.out(`\n== modules\n${table(lsmodRows(k), ["name", "base", "size", "state"])}`);
  const worker = ps.find((p) => p.comm === "wl-memwrite");
  if (worker) {
    const rows = mapsRows(k, worker.pid).map((m) => ({ ...m, range: `${hex(m.start)}-${hex(m.end)}` }));
    ctx.out(
      `\n== memory map of ${worker.comm} (pid ${worker.pid})\n${table(rows, ["range", "perms", "offset", "path"])}`,
    );
  }
}

/**
 * Issue 5's part of the demo: process events traced while the guest forks and execs, then a
 * workload process killed from outside, with the guest's own `ps` (over its serial console)
 * before and after as the witness.
 */
async function showEventsAndKill(
  ctx: CommandContext,
  qmpSocket: string,
  serialSocket: string,
): Promise<void> {
  const serial = await SerialConsole.connect(serialSocket);
  try {
    ctx.out("\n== process events for 4 s while the guest runs `workload forkloop 3; ls /`");
    const tracer = await Target.attach(qmpSocket);
    try {
      await runTrace(
        tracer,
        {
          kind: "proc",
          durationS: 4,
          onReady: () => serial.send("workload forkloop 3 >/dev/null; ls / >/dev/null"),
        },
        (e) => ctx.out(describeEvent(e)),
      );
    } finally {
      await tracer.close();
    }
    const guestPs = async () => (await serial.command("ps -o pid,stat,comm | grep -E 'PID|sleep'")).trimEnd();
    ctx.out(`\n== the guest's own ps, before\n${await guestPs()}`);
    const victim = Number((await serial.command("cat /run/vmsight/roles")).match(/\bsleep=(\d+)/)?.[1]);
    ctx.out(
      `\n== kill -9 of pid ${victim} from outside the guest (the kernel's own signal delivery, no agent)`,
    );
    const killer = await Target.attach(qmpSocket);
    try {
      const report = await killProcess(killer, { pid: victim, signal: "KILL", method: "send" });
      for (const line of describeKill(report)) ctx.out(line);
    } finally {
      await killer.close();
    }
    ctx.out(`\n== the guest's own ps, after\n${await guestPs()}`);
  } finally {
    serial.close();
  }
}
