import { type VirtAddr, hex, va } from "../../util/address.js";
import { GuestDataError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { readStringBytes } from "./task-name.js";
import { checkKernelPointer } from "./walk.js";

/**
 * A task's namespaces as the links in /proc/<pid>/ns show them (`ns_common.inum` of each), and
 * its cgroup v2 path as /proc/<pid>/cgroup's "0::" line shows it (`task->cgroups->dfl_cgrp`,
 * named by its kernfs node up to the hierarchy's root, for a reader in the initial cgroup
 * namespace).
 */
export interface TaskNamespaces {
  readonly cgroup: number;
  readonly ipc: number;
  readonly mnt: number;
  readonly net: number;
  /** The task's own PID namespace (`pid` in /proc/PID/ns). */
  readonly pid: number;
  readonly pidForChildren: number;
  readonly time: number | undefined;
  readonly timeForChildren: number | undefined;
  readonly user: number;
  readonly uts: number;
}

const MAX_CGROUP_DEPTH = 256;

function off(ctx: KernelContext, struct: string, path: string): bigint {
  return BigInt(ctx.layout.offsetof(struct, path));
}

function pointer(ctx: KernelContext, at: bigint, what: string): VirtAddr {
  return checkKernelPointer(ctx.kernel.readU64(va(at)), ctx.bounds, what);
}

/** `ns.inum` of the namespace `struct`, pointed at from `holder + holderOffset`. */
function inum(
  ctx: KernelContext,
  holder: bigint,
  holderOffset: bigint,
  struct: string,
  what: string,
): number {
  const ns = pointer(ctx, holder + holderOffset, what);
  return ctx.kernel.readU32(va(ns + off(ctx, struct, "ns.inum")));
}

export function taskNamespaces(ctx: KernelContext, task: VirtAddr): TaskNamespaces {
  const nsproxy = pointer(ctx, task + off(ctx, "task_struct", "nsproxy"), `nsproxy of task ${hex(task)}`);
  const p = (member: string, struct: string) =>
    inum(ctx, nsproxy, off(ctx, "nsproxy", member), struct, `nsproxy.${member} of task ${hex(task)}`);
  const maybe = (member: string, struct: string) =>
    ctx.layout.findOffset("nsproxy", member) === undefined ? undefined : p(member, struct);
  const cred = pointer(ctx, task + off(ctx, "task_struct", "real_cred"), `real_cred of task ${hex(task)}`);
  return {
    cgroup: p("cgroup_ns", "cgroup_namespace"),
    ipc: p("ipc_ns", "ipc_namespace"),
    mnt: p("mnt_ns", "mnt_namespace"),
    net: p("net_ns", "net"),
    pid: activePidNamespace(ctx, task),
    pidForChildren: p("pid_ns_for_children", "pid_namespace"),
    time: maybe("time_ns", "time_namespace"),
    timeForChildren: maybe("time_ns_for_children", "time_namespace"),
    user: inum(ctx, cred, off(ctx, "cred", "user_ns"), "user_namespace", `user_ns of task ${hex(task)}`),
    uts: p("uts_ns", "uts_namespace"),
  };
}

/** `task_active_pid_ns()`: the namespace of the deepest level of `task->thread_pid`. */
function activePidNamespace(ctx: KernelContext, task: VirtAddr): number {
  const pid = pointer(ctx, task + off(ctx, "task_struct", "thread_pid"), `thread_pid of task ${hex(task)}`);
  const level = ctx.kernel.readU32(va(pid + off(ctx, "pid", "level")));
  if (level > 32) throw new GuestDataError(`struct pid ${hex(pid)} has level ${level} (at most 32)`);
  const upid = ctx.layout.findSize("upid") ?? 16;
  const at = pid + off(ctx, "pid", "numbers") + BigInt(level * upid) + off(ctx, "upid", "ns");
  return inum(ctx, at, 0n, "pid_namespace", `pid namespace of task ${hex(task)}`);
}

/** The cgroup v2 path of a task ("/" for the root cgroup), as its "0::" cgroup line shows it. */
export function taskCgroupPath(ctx: KernelContext, task: VirtAddr): string {
  const cset = pointer(ctx, task + off(ctx, "task_struct", "cgroups"), `cgroups of task ${hex(task)}`);
  const cgrp = pointer(ctx, cset + off(ctx, "css_set", "dfl_cgrp"), `dfl_cgrp of css_set ${hex(cset)}`);
  const parentName = ctx.layout.findOffset("kernfs_node", "parent") !== undefined ? "parent" : "__parent";
  const parentAt = off(ctx, "kernfs_node", parentName);
  const nameAt = off(ctx, "kernfs_node", "name");
  let kn: bigint = pointer(ctx, cgrp + off(ctx, "cgroup", "kn"), `kn of cgroup ${hex(cgrp)}`);
  const parts: Buffer[] = [];
  for (let depth = 0; ; depth++) {
    if (depth > MAX_CGROUP_DEPTH)
      throw new GuestDataError(`cgroup ${hex(cgrp)} is nested deeper than ${MAX_CGROUP_DEPTH}`);
    const parent = ctx.kernel.readU64(va(kn + parentAt));
    if (parent === 0n) break; // the hierarchy's root: its name is not part of the path
    const name = pointer(ctx, kn + nameAt, `name of kernfs_node ${hex(kn)}`);
    parts.push(readStringBytes(ctx.kernel, name, 256).bytes);
    kn = checkKernelPointer(parent, ctx.bounds, `parent of kernfs_node ${hex(kn)}`);
  }
  return `/${parts
    .reverse()
    .map((p) => decodeGuestBytes(p))
    .join("/")}`;
}
