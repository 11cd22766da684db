import { readFileSync, writeFileSync } from "node:fs";
import { type BootDiscoveryResult, discoverAtBoot } from "../discovery/boot-trap.js";
import { type KernelImage, kernelImageFromFile } from "../discovery/kernel-image.js";
import { describeDiscovery, memberReports } from "../discovery/report.js";
import { parseAccelPreference } from "../qemu/accel.js";
import { launchGuest } from "../qemu/launch.js";
import { qemuKernelFile } from "../qemu/qemu-cmdline.js";
import { Target } from "../qemu/session.js";
import { refuseIfServed } from "../server/announce.js";
import { VmsightError } from "../util/errors.js";
import { stringValue } from "./args.js";
import type { CommandContext } from "./command.js";
import type { Plan } from "./discovery-commands.js";
import { toJson } from "./render.js";

function loadImage(path: string): KernelImage {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new VmsightError("E_USAGE", `cannot read kernel image ${path}: ${(error as Error).message}`);
  }
  return kernelImageFromFile(bytes);
}

/** Where the kernel's symbols come from, as the JSON report names it. */
interface KernelSource {
  readonly kernelSource: "option" | "qemu -kernel" | "guest RAM";
  readonly kernelFile?: string;
}

/**
 * The kernel of a guest we attach to: the file the user named, else the one on QEMU's own
 * command line (-kernel), else none (undefined image): discovery then reads it from guest RAM.
 */
function kernelFor(
  target: Target,
  p: Plan,
  ctx: CommandContext,
): { image?: KernelImage; source: KernelSource } {
  if (p.image !== undefined) {
    ctx.log(`kernel: ${p.image} (given on the command line)`);
    return { image: loadImage(p.image), source: { kernelSource: "option", kernelFile: p.image } };
  }
  const ram = { kernelSource: "guest RAM" } as const;
  const q = qemuKernelFile(target.pid);
  if (q.kind === "none") {
    ctx.log(
      "kernel: QEMU has no -kernel (firmware or disk boot); reading it from guest RAM once decompressed",
    );
    return { source: ram };
  }
  if (q.kind === "unusable") {
    ctx.log(
      `kernel: QEMU's -kernel ${q.path} is not usable here (${q.why}); reading it from guest RAM instead`,
    );
    return { source: ram };
  }
  try {
    const image = loadImage(q.path);
    ctx.log(`kernel: ${q.path} (QEMU's -kernel)`);
    return { image, source: { kernelSource: "qemu -kernel", kernelFile: q.path } };
  } catch (error) {
    ctx.log(
      `kernel: QEMU's -kernel ${q.path} is not a Linux kernel we can read (${(error as Error).message}); reading it from guest RAM instead`,
    );
    return { source: ram };
  }
}

async function discoverOn(target: Target, p: Plan, image: KernelImage | undefined, ctx: CommandContext) {
  return discoverAtBoot(target, {
    ...(image === undefined ? {} : { image }),
    log: (line) => ctx.log(line),
    timeoutMs: p.timeoutMs,
    ...(p.slide === undefined ? {} : { slide: p.slide }),
  });
}

function report(ctx: CommandContext, r: BootDiscoveryResult, out: string | undefined, extra: object): number {
  const profile = `${JSON.stringify(r.profile, null, 2)}\n`;
  if (out) writeFileSync(out, profile);
  if (ctx.json) {
    ctx.out(
      toJson({
        converged: r.converged,
        partial: r.partial,
        stopReason: r.stopReason,
        profile: r.profile,
        members: memberReports(r),
        slide: r.slide,
        slideFoundMs: r.slideFoundMs,
        events: r.events,
        elapsedMs: r.elapsedMs,
        stoppedMs: r.stoppedMs,
        traps: r.traps,
        forks: r.forks,
        failures: r.failures,
        ...extra,
      }),
    );
  } else {
    for (const line of describeDiscovery(r)) ctx.log(line);
    if (!out) ctx.out(profile.trimEnd());
    else ctx.log(`profile written to ${out}`);
  }
  // A partial profile (process members only) is what `ps --offsets` needs: not a failure.
  return r.converged || r.partial ? 0 : 1;
}

/** The discover command's work, loaded only when it runs (it pulls in the whole of discovery/). */
export async function runDiscover(ctx: CommandContext, p: Plan): Promise<number> {
  const out = stringValue(ctx.values, "out");
  if (p.qmp !== undefined) {
    refuseIfServed(p.qmp, "discover");
    const target = await Target.attach(p.qmp);
    try {
      const { image, source } = kernelFor(target, p, ctx);
      return report(ctx, await discoverOn(target, p, image, ctx), out, source);
    } finally {
      await target.close();
    }
  }
  const kernelPath = p.image!;
  const image = loadImage(kernelPath);
  const keep = ctx.values.keep === true;
  const append = stringValue(ctx.values, "append");
  const guest = await launchGuest({
    kernel: kernelPath,
    initrd: p.initrd!,
    paused: true,
    qmpOnly: true,
    detach: keep,
    accel: parseAccelPreference(
      stringValue(ctx.values, "accel") ?? process.env.VMSIGHT_ACCEL ?? "auto",
      "--accel",
    ),
    memory: stringValue(ctx.values, "memory") ?? "512M",
    ...(append === undefined ? {} : { append }),
  });
  let target: Target | undefined;
  try {
    target = await Target.attach(guest.qmpSocket);
    const r = await discoverOn(target, p, image, ctx);
    await target.close();
    target = undefined;
    if (keep) ctx.log(`guest left running: vmsight --qmp ${guest.qmpSocket} ps --no-btf --offsets FILE`);
    const source: KernelSource = { kernelSource: "option", kernelFile: kernelPath };
    return report(
      ctx,
      r,
      out,
      keep ? { ...source, qmpSocket: guest.qmpSocket, serialLog: guest.serialLog } : source,
    );
  } finally {
    await target?.close();
    if (!keep) await guest.stop();
  }
}
