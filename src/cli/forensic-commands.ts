import { formatDmesgLine } from "../commands/forensics.js";
import { formatMountInfo } from "../os/linux/mounts.js";
import { intArg } from "./args.js";
import type { CliCommand, CommandContext } from "./command.js";
import { linuxCommand, pidArg } from "./linux-commands.js";
import { table } from "./render.js";

/** PID when one is given (lsof, mounts), else undefined: all processes. */
const optionalPid = (ctx: CommandContext) =>
  ctx.positionals[0] === undefined ? undefined : intArg(ctx.positionals[0], "PID", 1, 4_194_304);

/** A 64-bit row value ("0x…" on the wire) in decimal, as /proc prints positions and inodes. */
const dec = (v: string | bigint) => BigInt(v).toString(10);

export const FORENSIC_COMMANDS: readonly CliCommand[] = [
  linuxCommand(
    {
      name: "lsof",
      usage: "lsof [PID]",
      summary:
        "open files of one process or all: fd, type, flags, pos, mnt_id, ino, path (/proc/PID/fd, fdinfo)",
      check: (ctx) => void optionalPid(ctx),
    },
    (vm, ctx) => vm.lsof(optionalPid(ctx)),
    ["pid", "comm", "fd", "type", "flags", "pos", "mntId", "ino", "path"],
    (rows) =>
      table(
        rows.map((r) => ({ ...r, pos: dec(r.pos), ino: dec(r.ino) })),
        ["pid", "comm", "fd", "type", "flags", "pos", "mntId", "ino", "path"],
      ),
  ),
  linuxCommand(
    {
      name: "env",
      usage: "env PID",
      summary: "a process's environment, as /proc/PID/environ (one NAME=value a line)",
      check: (ctx) => void pidArg(ctx),
    },
    (vm, ctx) => vm.env(pidArg(ctx)),
    ["name", "value"],
    (rows) => rows.map((r) => (r.value === null ? r.name : `${r.name}=${r.value}`)).join("\n"),
  ),
  linuxCommand(
    {
      name: "mounts",
      usage: "mounts [PID]",
      summary:
        "the mounts a process (default 1) sees, as /proc/PID/mountinfo (no filesystem-specific options)",
      check: (ctx) => void optionalPid(ctx),
    },
    (vm, ctx) => vm.mounts(optionalPid(ctx)),
    [
      "mountId",
      "parentId",
      "dev",
      "root",
      "mountPoint",
      "options",
      "optional",
      "fsType",
      "source",
      "superOptions",
    ],
    (rows) => rows.map(formatMountInfo).join("\n"),
  ),
  linuxCommand(
    {
      name: "sockets",
      usage: "sockets",
      summary:
        "sockets the processes hold: proto, local and remote address, state, inode, pids (/proc/net/*)",
    },
    (vm) => vm.sockets(),
    ["proto", "local", "remote", "state", "inode", "pids"],
    (rows) =>
      table(
        rows.map((r) => ({ ...r, inode: dec(r.inode), pids: r.pids.join(",") })),
        ["proto", "local", "remote", "state", "inode", "pids"],
      ),
  ),
  linuxCommand(
    { name: "ns", usage: "ns", summary: "each process's namespace ids (/proc/PID/ns/*) and cgroup path" },
    (vm) => vm.ns(),
    ["pid", "comm", "mnt", "net", "pidNs", "uts", "ipc", "user", "cgroup", "time", "cgroupPath"],
  ),
  linuxCommand(
    {
      name: "containers",
      usage: "containers",
      summary: "processes grouped by namespace set and cgroup path, the host's group first",
    },
    (vm) => vm.containers(),
    ["cgroupPath", "mnt", "net", "pidNs", "uts", "ipc", "user", "cgroup", "time", "pids"],
    (rows) =>
      table(
        rows.map((r) => ({ ...r, pids: r.pids.join(",") })),
        ["cgroupPath", "mnt", "net", "pidNs", "uts", "ipc", "user", "cgroup", "time", "pids"],
      ),
  ),
  linuxCommand(
    {
      name: "dmesg",
      usage: "dmesg",
      summary: "the kernel log, from its printk ring buffer (as the guest's dmesg)",
    },
    (vm) => vm.dmesg(),
    ["seq", "time", "level", "text"],
    (rows) => rows.map(formatDmesgLine).join("\n"),
  ),
];
