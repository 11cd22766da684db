import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Monitor } from "../memory/qemu/layout.js";
import { VmsightError } from "../util/errors.js";
import { privateDir } from "../util/private-dir.js";

/**
 * The QEMU process behind a QMP socket, found from QMP alone: each vCPU's host thread id
 * (`query-cpus-fast`) names its thread group, which is QEMU's PID. No command-line scraping.
 */
export async function findQemuPid(monitor: Monitor): Promise<{ pid: number; vcpuThreads: number[] }> {
  const cpus = await monitor.execute<{ "thread-id": number; "cpu-index": number }[]>("query-cpus-fast");
  const vcpuThreads = [...cpus].sort((a, b) => a["cpu-index"] - b["cpu-index"]).map((c) => c["thread-id"]);
  const first = vcpuThreads[0];
  if (first === undefined) throw new VmsightError("E_QEMU_PROCESS", "QEMU reports no vCPUs");
  let status: string;
  try {
    status = readFileSync(`/proc/${first}/status`, "utf8");
  } catch (error) {
    throw new VmsightError("E_QEMU_PROCESS", `QEMU's vCPU thread ${first} is not visible from this host`, {
      hint: "vmsight must run on the same host (and PID namespace) as QEMU to read guest RAM",
      cause: error,
    });
  }
  const tgid = /^Tgid:\s*(\d+)/m.exec(status)?.[1];
  if (!tgid) throw new VmsightError("E_QEMU_PROCESS", `no Tgid in /proc/${first}/status`);
  return { pid: Number(tgid), vcpuThreads };
}

/**
 * Where this QEMU's gdbstub socket lives. It is derived from the PID and the process start time,
 * so a later vmsight run finds the stub an earlier one started (QEMU refuses a second
 * `gdbserver` on the same path), and a new QEMU that reuses the PID gets a new name. The name is
 * predictable, so it lives in vmsight's private directory, where nobody else can plant one.
 */
export function gdbSocketPath(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const afterComm = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const startTime = afterComm[19] ?? "0";
  return join(privateDir(), `gdb-${pid}-${startTime}.sock`);
}
