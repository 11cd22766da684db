import { type VirtAddr, hex, va } from "../../util/address.js";
import { GuestDataError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { checkKernelPointer } from "./walk.js";

/**
 * `d_path()` (fs/d_path.c) from outside: the name of a (vfsmount, dentry) pair, built by
 * walking `d_parent` up to each mount's root and crossing to the parent mount at
 * `mnt_mountpoint`. Same logic in 6.1 and 6.12; what changed between them (dentry members
 * moved, `d_subdirs` became `d_children`) is absorbed by the layout.
 */
export interface DPathOptions {
  /**
   * The reader's root (`current->fs->root`), as a `struct vfsmount *` and a dentry. Default:
   * walk to the root of the mount tree, which is what a reader that is not chrooted sees.
   */
  readonly root?: { readonly mnt: VirtAddr; readonly dentry: VirtAddr };
  /** Most dentries and mounts crossed before the walk counts as a loop. */
  readonly maxSteps?: number;
  /** Longest path accepted, in bytes (the kernel's seq_file grows its buffer, so no PATH_MAX). */
  readonly maxLength?: number;
}

const DELETED = Buffer.from(" (deleted)");

interface Offsets {
  readonly dParent: bigint;
  readonly dNameLen: bigint;
  readonly dNameName: bigint;
  readonly dHashPprev: bigint;
  readonly dOp: bigint | undefined;
  readonly dDname: bigint | undefined;
  readonly mountMnt: bigint;
  readonly mntParent: bigint;
  readonly mntMountpoint: bigint;
  readonly mntRoot: bigint;
  readonly simpleDname: bigint | undefined;
  readonly anonInodeDname: bigint | undefined;
  /** `d_dname` functions that print "<prefix>:[<inode number>]". */
  readonly inodeDnames: ReadonlyMap<bigint, string>;
}

const cache = new WeakMap<KernelContext, Offsets>();

function offsets(ctx: KernelContext): Offsets {
  let o = cache.get(ctx);
  if (o) return o;
  const L = ctx.layout;
  const at = (s: string, p: string) => BigInt(L.offsetof(s, p));
  const maybe = (s: string, p: string) => {
    const v = L.findOffset(s, p);
    return v === undefined ? undefined : BigInt(v);
  };
  o = {
    dParent: at("dentry", "d_parent"),
    dNameLen: at("dentry", "d_name.len"),
    dNameName: at("dentry", "d_name.name"),
    dHashPprev: at("dentry", "d_hash.pprev"),
    dOp: maybe("dentry", "d_op"),
    dDname: maybe("dentry_operations", "d_dname"),
    mountMnt: at("mount", "mnt"),
    mntParent: at("mount", "mnt_parent"),
    mntMountpoint: at("mount", "mnt_mountpoint"),
    mntRoot: at("vfsmount", "mnt_root"),
    simpleDname: ctx.symbols.findAddress("simple_dname"),
    anonInodeDname: ctx.symbols.findAddress("anon_inodefs_dname"),
    inodeDnames: new Map(
      (
        [
          ["pipefs_dname", "pipe"],
          ["sockfs_dname", "socket"],
        ] as const
      ).flatMap(([sym, prefix]) => {
        const a = ctx.symbols.findAddress(sym);
        return a === undefined ? [] : [[a, prefix] as [bigint, string]];
      }),
    ),
  };
  cache.set(ctx, o);
  return o;
}

function ptr(ctx: KernelContext, addr: bigint, what: string): VirtAddr {
  return checkKernelPointer(ctx.kernel.readU64(va(addr)), ctx.bounds, what);
}

/** A dentry's name as `prepend_name()` copies it: `d_name.len` bytes, stopping at a NUL. */
export function dentryName(ctx: KernelContext, dentry: VirtAddr, stopAtNul = true): Buffer {
  const o = offsets(ctx);
  const len = ctx.kernel.readU32(va(dentry + o.dNameLen));
  if (len > 4096) throw new GuestDataError(`dentry ${hex(dentry)} name length ${len} is absurd`);
  if (len === 0) return Buffer.alloc(0);
  const bytes = ctx.kernel.read(ptr(ctx, dentry + o.dNameName, `d_name.name of dentry ${hex(dentry)}`), len);
  const nul = stopAtNul ? bytes.indexOf(0) : -1;
  return nul < 0 ? bytes : bytes.subarray(0, nul);
}

/** `d_inode(dentry)->i_ino`. */
function dentryIno(ctx: KernelContext, dentry: VirtAddr): bigint {
  const inode = ptr(
    ctx,
    dentry + BigInt(ctx.layout.offsetof("dentry", "d_inode")),
    `d_inode of ${hex(dentry)}`,
  );
  return ctx.kernel.readU64(va(inode + BigInt(ctx.layout.offsetof("inode", "i_ino"))));
}

/** `d_unlinked()`: unhashed (`d_hash.pprev` NULL) and not a root. */
export function isUnlinked(ctx: KernelContext, dentry: VirtAddr): boolean {
  const o = offsets(ctx);
  const pprev = ctx.kernel.readU64(va(dentry + o.dHashPprev));
  return pprev === 0n && ctx.kernel.readU64(va(dentry + o.dParent)) !== dentry;
}

/** `dPathBytes`, decoded as every guest string is. */
export function dPath(
  ctx: KernelContext,
  vfsmount: VirtAddr,
  dentry: VirtAddr,
  opts: DPathOptions = {},
): string {
  return decodeGuestBytes(dPathBytes(ctx, vfsmount, dentry, opts));
}

/**
 * The bytes `d_path()` prints for `vfsmount`/`dentry` (a `struct path`), " (deleted)" included,
 * not yet escaped for /proc (see `escapePath`). Pseudo files whose dentry names itself through
 * `d_op->d_dname` get that name for the two kinds that can be mapped into memory
 * (`simple_dname`: shmem, memfd, SysV shm; `anon_inodefs_dname`) and for pipes and sockets
 * (`pipefs_dname`, `sockfs_dname`: "pipe:[ino]"); other `d_dname` functions cannot be run from
 * outside, and their path falls back to the dentry walk.
 */
export function dPathBytes(
  ctx: KernelContext,
  vfsmount: VirtAddr,
  dentry: VirtAddr,
  opts: DPathOptions = {},
): Buffer {
  const o = offsets(ctx);
  const synthetic = syntheticName(ctx, o, vfsmount, dentry);
  if (synthetic !== undefined) return synthetic;
  const path = prependPath(ctx, o, vfsmount, dentry, opts);
  return isUnlinked(ctx, dentry) ? Buffer.concat([path, DELETED]) : path;
}

const SLASH = Buffer.from("/");

/** `d_path(&file->f_path)`. */
export function filePath(ctx: KernelContext, file: VirtAddr, opts: DPathOptions = {}): string {
  const L = ctx.layout;
  const fPath = BigInt(L.offsetof("file", "f_path"));
  const mnt = ptr(ctx, file + fPath + BigInt(L.offsetof("path", "mnt")), `f_path.mnt of file ${hex(file)}`);
  const dentry = ptr(
    ctx,
    file + fPath + BigInt(L.offsetof("path", "dentry")),
    `f_path.dentry of file ${hex(file)}`,
  );
  return dPath(ctx, mnt, dentry, opts);
}

/**
 * `mangle_path()` as `seq_file_path(m, file, "\n")` applies it: each byte of `chars` becomes a
 * backslash and three octal digits, so a newline in a name cannot forge a line. On bytes, as the
 * kernel does it, before the result is decoded for display.
 */
export function escapePath(path: Buffer, chars = "\n"): Buffer {
  const special = Buffer.from(chars);
  const parts: Buffer[] = [];
  let from = 0;
  for (let i = 0; i < path.length; i++) {
    if (!special.includes(path[i]!)) continue;
    parts.push(path.subarray(from, i), Buffer.from(`\\${path[i]!.toString(8).padStart(3, "0")}`));
    from = i + 1;
  }
  return from === 0 ? path : Buffer.concat([...parts, path.subarray(from)]);
}

function syntheticName(
  ctx: KernelContext,
  o: Offsets,
  vfsmount: VirtAddr,
  dentry: VirtAddr,
): Buffer | undefined {
  if (o.dOp === undefined || o.dDname === undefined) return undefined;
  const op = ctx.kernel.readU64(va(dentry + o.dOp));
  if (op === 0n) return undefined;
  const fn = ctx.kernel.readU64(
    va(checkKernelPointer(op, ctx.bounds, `d_op of dentry ${hex(dentry)}`) + o.dDname),
  );
  if (fn === 0n) return undefined;
  // A pseudo filesystem that is mounted names its root through the mount, not d_dname.
  const isRoot = ctx.kernel.readU64(va(dentry + o.dParent)) === dentry;
  if (isRoot && ctx.kernel.readU64(va(vfsmount + o.mntRoot)) === dentry) return undefined;
  if (fn === o.simpleDname) return Buffer.concat([SLASH, dentryName(ctx, dentry, false), DELETED]);
  if (fn === o.anonInodeDname) return Buffer.concat([Buffer.from("anon_inode:"), dentryName(ctx, dentry)]);
  const prefix = o.inodeDnames.get(fn);
  if (prefix !== undefined) return Buffer.from(`${prefix}:[${dentryIno(ctx, dentry)}]`);
  return undefined;
}

/** `prepend_path()`: components from the dentry up to the root, crossing mounts. */
function prependPath(
  ctx: KernelContext,
  o: Offsets,
  vfsmount: VirtAddr,
  dentry: VirtAddr,
  opts: DPathOptions,
): Buffer {
  const maxSteps = opts.maxSteps ?? 4096;
  const maxLength = opts.maxLength ?? 1 << 16;
  const parts: Buffer[] = [];
  let length = 0;
  let d: bigint = dentry;
  let mount = vfsmount - o.mountMnt;
  for (let steps = 0; ; steps++) {
    if (opts.root && d === opts.root.dentry && mount + o.mountMnt === opts.root.mnt) break;
    if (steps >= maxSteps)
      throw new GuestDataError(`path of dentry ${hex(dentry)} is longer than ${maxSteps} steps`);
    const parent = ptr(ctx, d + o.dParent, `d_parent of dentry ${hex(d)}`);
    if (d === ptr(ctx, mount + o.mountMnt + o.mntRoot, `mnt_root of mount ${hex(mount)}`)) {
      const up = ptr(ctx, mount + o.mntParent, `mnt_parent of mount ${hex(mount)}`);
      if (up === mount) break; // the root of the mount tree (or a detached mount)
      d = ptr(ctx, mount + o.mntMountpoint, `mnt_mountpoint of mount ${hex(mount)}`);
      mount = up;
      continue;
    }
    // A dentry that is its own parent but not its mount's root escaped the mount: "/" only.
    if (parent === d) return SLASH;
    const name = dentryName(ctx, va(d));
    length += name.length + 1;
    if (length > maxLength)
      throw new GuestDataError(`path of dentry ${hex(dentry)} exceeds ${maxLength} bytes`);
    parts.push(name);
    d = parent;
  }
  if (parts.length === 0) return SLASH;
  return Buffer.concat(parts.reverse().flatMap((p) => [SLASH, p]));
}
