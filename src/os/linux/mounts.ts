import { type VirtAddr, hex, va } from "../../util/address.js";
import { GuestDataError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { dPathBytes, dentryName, escapePath } from "./dpath.js";
import { readStringBytes } from "./task-name.js";
import { checkKernelPointer, listForEachEntry } from "./walk.js";

/**
 * /proc/<pid>/mountinfo from outside: the mounts of the task's mount namespace
 * (`nsproxy->mnt_ns`), in the kernel's order (the `list` of `mnt_list` nodes up to 6.7, the
 * `mounts` rb-tree of `mnt_node` from 6.8), each shown as `show_mountinfo()`
 * (fs/proc_namespace.c) prints it. A filesystem's own `show_options` cannot run from outside:
 * the super options are what every filesystem shares (ro/rw and the generic SB_ flags).
 */
export interface MountInfo {
  readonly mount: VirtAddr;
  readonly mountId: number;
  readonly parentId: number;
  /** "major:minor" in decimal. */
  readonly dev: string;
  /** The mount's root within its filesystem, escaped as mountinfo escapes it. */
  readonly root: string;
  readonly mountPoint: string;
  /** "rw,nosuid,relatime"... */
  readonly options: string;
  /** Tagged fields: "shared:N", "master:N", "unbindable", space-separated ("" for none). */
  readonly optional: string;
  readonly fsType: string;
  readonly source: string;
  readonly superOptions: string;
}

const MNT_FLAGS: readonly [number, string][] = [
  [0x01, "nosuid"],
  [0x02, "nodev"],
  [0x04, "noexec"],
  [0x08, "noatime"],
  [0x10, "nodiratime"],
  [0x20, "relatime"],
  [0x80, "nosymfollow"],
];
const MNT_READONLY = 0x40;
const MNT_SHARED = 0x1000;
const MNT_UNBINDABLE = 0x2000;
const SB_RDONLY = 0x1;
const SB_FLAGS: readonly [number, string][] = [
  [0x10, "sync"],
  [0x80, "dirsync"],
  [0x40, "mand"],
  [0x2000000, "lazytime"],
];
/** mangle()'s set for mountinfo: space, tab, newline, backslash. */
const MANGLE = " \t\n\\";
const MAX_MOUNTS = 1 << 16;
const MAX_DEPTH = 4096;

function off(ctx: KernelContext, struct: string, path: string): bigint {
  return BigInt(ctx.layout.offsetof(struct, path));
}

function pointer(ctx: KernelContext, at: bigint, what: string): VirtAddr {
  return checkKernelPointer(ctx.kernel.readU64(va(at)), ctx.bounds, what);
}

/** The mount namespace of a task: `task->nsproxy->mnt_ns`. */
export function taskMountNamespace(ctx: KernelContext, task: VirtAddr): VirtAddr {
  const nsproxy = pointer(ctx, task + off(ctx, "task_struct", "nsproxy"), `nsproxy of task ${hex(task)}`);
  return pointer(ctx, nsproxy + off(ctx, "nsproxy", "mnt_ns"), `mnt_ns of nsproxy ${hex(nsproxy)}`);
}

/** The `struct mount`s of a namespace, in the order mountinfo lists them. */
export function namespaceMounts(ctx: KernelContext, ns: VirtAddr): VirtAddr[] {
  const L = ctx.layout;
  // 6.1's mnt_namespace also has a `mounts` member (a count): the rb-tree shows in mount.mnt_node.
  if (L.findOffset("mount", "mnt_node") !== undefined) {
    const root = ctx.kernel.readU64(va(ns + off(ctx, "mnt_namespace", "mounts")));
    const node = off(ctx, "mount", "mnt_node");
    return rbInOrder(ctx, root, `mnt_namespace ${hex(ns)} mounts`).map((n) => va(n - node));
  }
  const head = va(ns + off(ctx, "mnt_namespace", "list"));
  return [...listForEachEntry(ctx, head, "mount", "mnt_list", { max: MAX_MOUNTS })];
}

/** In-order walk of an rb-tree (`rb_right` at 8, `rb_left` at 16 in every `rb_node`), bounded. */
function rbInOrder(ctx: KernelContext, root: bigint, name: string): bigint[] {
  const out: bigint[] = [];
  const seen = new Set<bigint>();
  const stack: bigint[] = [];
  let node = root;
  while (node !== 0n || stack.length > 0) {
    while (node !== 0n) {
      checkKernelPointer(node, ctx.bounds, `${name} node`);
      if (seen.has(node)) throw new GuestDataError(`${name}: node ${hex(node)} is reached twice`);
      if (seen.size >= MAX_MOUNTS || stack.length >= MAX_DEPTH)
        throw new GuestDataError(`${name}: more than ${MAX_MOUNTS} nodes`);
      seen.add(node);
      stack.push(node);
      node = ctx.kernel.readU64(va(node + 16n));
    }
    const top = stack.pop()!;
    out.push(top);
    node = ctx.kernel.readU64(va(top + 8n));
  }
  return out;
}

/** `dentry_path_raw()` of a mount's root within its filesystem ("/" for the filesystem's root). */
function rootWithinFs(ctx: KernelContext, dentry: VirtAddr): Buffer {
  const parentAt = off(ctx, "dentry", "d_parent");
  const parts: Buffer[] = [];
  let d = dentry;
  for (let steps = 0; ; steps++) {
    if (steps >= MAX_DEPTH) throw new GuestDataError(`dentry ${hex(dentry)} is deeper than ${MAX_DEPTH}`);
    const parent = pointer(ctx, d + parentAt, `d_parent of dentry ${hex(d)}`);
    if (parent === d) break;
    parts.push(dentryName(ctx, d), Buffer.from("/"));
    d = parent;
  }
  return parts.length === 0 ? Buffer.from("/") : Buffer.concat(parts.reverse());
}

function cString(ctx: KernelContext, p: bigint, what: string): Buffer {
  return readStringBytes(ctx.kernel, checkKernelPointer(p, ctx.bounds, what), 4096).bytes;
}

const shown = (b: Buffer) => decodeGuestBytes(escapePath(b, MANGLE));

export function readMount(ctx: KernelContext, mount: VirtAddr): MountInfo {
  const k = ctx.kernel;
  const at = (p: string) => va(mount + off(ctx, "mount", p));
  const vfs = va(mount + off(ctx, "mount", "mnt"));
  const mntRoot = pointer(ctx, vfs + off(ctx, "vfsmount", "mnt_root"), `mnt_root of mount ${hex(mount)}`);
  const sb = pointer(ctx, vfs + off(ctx, "vfsmount", "mnt_sb"), `mnt_sb of mount ${hex(mount)}`);
  const mntFlags = k.readU32(va(vfs + off(ctx, "vfsmount", "mnt_flags")));
  const parent = pointer(ctx, at("mnt_parent"), `mnt_parent of mount ${hex(mount)}`);
  const dev = k.readU32(va(sb + off(ctx, "super_block", "s_dev")));
  const sFlags = Number(k.readU64(va(sb + off(ctx, "super_block", "s_flags"))) & 0xffffffffn);
  const type = pointer(ctx, sb + off(ctx, "super_block", "s_type"), `s_type of super_block ${hex(sb)}`);
  let fsType = cString(
    ctx,
    k.readU64(va(type + off(ctx, "file_system_type", "name"))),
    "file_system_type.name",
  );
  const subtypeAt = ctx.layout.findOffset("super_block", "s_subtype");
  const subtype = subtypeAt === undefined ? 0n : k.readU64(va(sb + BigInt(subtypeAt)));
  if (subtype !== 0n) fsType = Buffer.concat([fsType, Buffer.from("."), cString(ctx, subtype, "s_subtype")]);
  const devname = k.readU64(at("mnt_devname"));
  const master = k.readU64(at("mnt_master"));
  const optional = [
    ...((mntFlags & MNT_SHARED) !== 0 ? [`shared:${k.readU32(at("mnt_group_id"))}`] : []),
    ...(master !== 0n
      ? [
          `master:${k.readU32(va(pointer(ctx, at("mnt_master"), "mnt_master") + off(ctx, "mount", "mnt_group_id")))}`,
        ]
      : []),
    ...((mntFlags & MNT_UNBINDABLE) !== 0 ? ["unbindable"] : []),
  ];
  return {
    mount,
    mountId: k.readU32(at("mnt_id")),
    parentId: k.readU32(va(parent + off(ctx, "mount", "mnt_id"))),
    dev: `${dev >>> 20}:${dev & 0xfffff}`,
    root: shown(rootWithinFs(ctx, mntRoot)),
    mountPoint: shown(dPathBytes(ctx, vfs, mntRoot)),
    options: [
      (mntFlags & MNT_READONLY) !== 0 ? "ro" : "rw",
      ...MNT_FLAGS.filter(([bit]) => (mntFlags & bit) !== 0).map(([, name]) => name),
    ].join(","),
    optional: optional.join(" "),
    fsType: shown(fsType),
    source: devname === 0n ? "none" : shown(cString(ctx, devname, `mnt_devname of mount ${hex(mount)}`)),
    superOptions: [
      (sFlags & SB_RDONLY) !== 0 ? "ro" : "rw",
      ...SB_FLAGS.filter(([bit]) => (sFlags & bit) !== 0).map(([, name]) => name),
    ].join(","),
  };
}

/** The mountinfo line of a row, without the filesystem's own super options. */
export function formatMountInfo(m: Omit<MountInfo, "mount">): string {
  const optional = m.optional === "" ? "" : ` ${m.optional}`;
  return `${m.mountId} ${m.parentId} ${m.dev} ${m.root} ${m.mountPoint} ${m.options}${optional} - ${m.fsType} ${m.source} ${m.superOptions}`;
}
