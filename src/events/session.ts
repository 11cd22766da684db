/**
 * An event engine wired to a live Target: gdbstub, the guest's kernel, the SIGKILL watchdog and
 * the run state to restore. One per Target (QEMU serves one gdb client).
 */
import { type KernelInfo, discoverKernel } from "../os/linux/kernel.js";
import { gdbSocketPath } from "../qemu/qemu-process.js";
import type { Target } from "../qemu/session.js";
import { EventEngine } from "./engine.js";
import { LinuxGuest } from "./linux-guest.js";
import { Watchdog } from "./watchdog.js";

export interface EventSessionOptions {
  /** Reuse a kernel already discovered on this target. */
  readonly kernel?: KernelInfo;
  /** Spawn the SIGKILL watchdog (default true). */
  readonly watchdog?: boolean;
  readonly log?: (line: string) => void;
}

export interface EventSession {
  readonly engine: EventEngine;
  readonly guest: LinuxGuest;
  readonly kernel: KernelInfo;
  readonly target: Target;
  /** Whether the guest was running when the session began (close() lets it run again). */
  readonly wasRunning: boolean;
  readonly accel: "tcg" | "kvm";
  close(): Promise<void>;
}

export async function detectKvm(target: Target): Promise<boolean> {
  try {
    const r = await target.qmp.execute<{ enabled: boolean }>("query-kvm");
    return r.enabled;
  } catch {
    return false;
  }
}

export async function openEventSession(
  target: Target,
  opts: EventSessionOptions = {},
): Promise<EventSession> {
  const before = await target.runState();
  const traps = await target.traps(); // connecting the gdb client stops the guest
  let kernel = opts.kernel;
  if (!kernel) {
    const regs = await target.registers(0);
    const get = (n: string) => regs.get(n) ?? 0n;
    kernel = discoverKernel(target.memory, {
      cr0: get("cr0"),
      cr3: get("cr3"),
      cr4: get("cr4"),
      efer: get("efer"),
    });
  }
  const kvm = await detectKvm(target);
  const watchdog =
    opts.watchdog === false
      ? undefined
      : await Watchdog.start({
          gdbPath: gdbSocketPath(target.pid),
          qmpPath: target.qmp.path,
          resume: before.running,
        });
  if (watchdog) await traps.record(watchdog);
  const guest = new LinuxGuest(kernel);
  const engine = new EventEngine({
    traps,
    os: guest,
    // Under KVM a software breakpoint is an int3 in guest memory; debug registers are not.
    breakpointType: kvm ? "hardware" : "software",
    resumeGuest: async () => {
      if (before.running && !(await target.runState()).running) await target.qmp.execute("cont");
    },
    ...(opts.log ? { log: opts.log } : {}),
  });
  return {
    engine,
    guest,
    kernel,
    target,
    wasRunning: before.running,
    accel: kvm ? "kvm" : "tcg",
    async close() {
      try {
        await engine.close();
      } catch (error) {
        watchdog?.abandon(); // it removes what we could not
        throw error;
      }
    },
  };
}
