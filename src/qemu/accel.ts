import { constants, accessSync, existsSync, readdirSync } from "node:fs";
import { VmsightError } from "../util/errors.js";

export type Accel = "kvm" | "tcg";
export type AccelPreference = "auto" | Accel;

export interface AccelChoice {
  readonly accel: Accel;
  /** One sentence a user can act on: why this accelerator and not the other. */
  readonly reason: string;
}

/** What detection looks at; injectable so the decision can be tested without this host. */
export interface AccelProbe {
  /** /dev/kvm exists. */
  readonly devKvm: boolean;
  /** /dev/kvm can be opened read-write by us. */
  readonly devKvmUsable: boolean;
  /** Names of loaded kvm* modules (from /sys/module). */
  readonly kvmModules: readonly string[];
}

export function probeHost(): AccelProbe {
  const devKvm = existsSync("/dev/kvm");
  let devKvmUsable = false;
  if (devKvm) {
    try {
      accessSync("/dev/kvm", constants.R_OK | constants.W_OK);
      devKvmUsable = true;
    } catch {
      devKvmUsable = false;
    }
  }
  let kvmModules: string[] = [];
  try {
    kvmModules = readdirSync("/sys/module").filter((m) => m.startsWith("kvm"));
  } catch {
    kvmModules = [];
  }
  return { devKvm, devKvmUsable, kvmModules };
}

export function parseAccelPreference(value: string, source: string): AccelPreference {
  if (value === "auto" || value === "kvm" || value === "tcg") return value;
  throw new VmsightError("E_ACCEL", `${source}="${value}" is not an accelerator`, {
    hint: "use auto, kvm or tcg",
  });
}

/**
 * Picks KVM only when a real hardware KVM module (kvm_intel or kvm_amd) backs /dev/kvm. Other
 * /dev/kvm providers exist: the paravirtual kvm_pvm of some cloud sandboxes accepts
 * `-accel kvm`, but an ordinary kernel then hangs right after decompression, so it gets TCG.
 * An explicit preference (argument, else VMSIGHT_ACCEL) wins over detection.
 */
export function detectAccel(
  prefer: AccelPreference = envPreference(),
  probe: AccelProbe = probeHost(),
): AccelChoice {
  if (prefer !== "auto") return { accel: prefer, reason: `${prefer} requested explicitly` };
  if (!probe.devKvm) return { accel: "tcg", reason: "/dev/kvm does not exist" };
  const hardware = probe.kvmModules.filter((m) => m === "kvm_intel" || m === "kvm_amd");
  if (hardware.length === 0) {
    const others = probe.kvmModules.filter((m) => m !== "kvm");
    const found = others.length > 0 ? ` (loaded: ${others.join(", ")})` : "";
    const why = "a paravirtual KVM such as kvm_pvm hangs ordinary kernels, so vmsight uses TCG";
    return {
      accel: "tcg",
      reason: `/dev/kvm exists but neither kvm_intel nor kvm_amd is loaded${found}; ${why}`,
    };
  }
  if (!probe.devKvmUsable) {
    return {
      accel: "tcg",
      reason: `${hardware[0]} is loaded but /dev/kvm is not readable and writable by us`,
    };
  }
  return { accel: "kvm", reason: `${hardware[0]} is loaded and /dev/kvm is usable` };
}

function envPreference(): AccelPreference {
  const env = process.env.VMSIGHT_ACCEL;
  return env ? parseAccelPreference(env, "VMSIGHT_ACCEL") : "auto";
}
