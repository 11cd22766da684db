/**
 * Open files from a crafted fd table: fd order, holes, close-on-exec, names of pipes through
 * their d_dname, types from i_mode, fdinfo's fields; and tables that lie about their size.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { openFiles } from "../../src/os/linux/files.js";
import type { VirtAddr } from "../../src/util/address.js";
import { GuestDataError } from "../../src/util/errors.js";
import { CraftedKernel } from "../support/crafted-kernel.js";
import { Builder, LAYOUT_6_1, type LayoutTable, Vfs, fakeLayout } from "../support/crafted-maps.js";

const TABLE: LayoutTable = {
  ...LAYOUT_6_1,
  offsets: {
    ...LAYOUT_6_1.offsets,
    "task_struct.files": 3000,
    "files_struct.fdt": 32,
    "fdtable.max_fds": 0,
    "fdtable.fd": 8,
    "fdtable.close_on_exec": 16,
    "file.f_flags": 64,
    "file.f_pos": 96,
    "inode.i_mode": 0,
    "mount.mnt_id": 280,
  },
  sizes: { ...LAYOUT_6_1.sizes, files_struct: 64, fdtable: 32 },
};

/** A task whose fd table has `maxFds` slots holding `files` (fd → file). */
function task(
  b: Builder,
  files: ReadonlyMap<number, bigint>,
  opts: { maxFds?: number; cloexec?: number[] } = {},
) {
  const k = b.k;
  const maxFds = opts.maxFds ?? 64;
  const t = b.obj("task_struct");
  const fs = b.obj("files_struct");
  const fdt = b.obj("fdtable");
  const array = k.alloc(64 * 8);
  const bits = k.alloc(8);
  b.set(t, "task_struct.files", fs);
  b.set(fs, "files_struct.fdt", fdt);
  k.writeU32(fdt, maxFds);
  b.set(fdt, "fdtable.fd", array);
  b.set(fdt, "fdtable.close_on_exec", bits);
  for (const [fd, f] of files) k.writeU64(array + BigInt(fd * 8), f);
  k.writeU64(
    bits,
    (opts.cloexec ?? []).reduce((acc, fd) => acc | (1n << BigInt(fd)), 0n),
  );
  return t;
}

function world() {
  const k = new CraftedKernel();
  const b = new Builder(k, TABLE);
  const v = new Vfs(b);
  const sb = v.sb(0x00600001);
  const root = v.dentry("");
  const rootMnt = v.mount(root);
  k.writeU32(rootMnt - b.off("mount.mnt") + b.off("mount.mnt_id"), 1);
  const file = (d: VirtAddr, mnt: VirtAddr, mode: number, ino: bigint, flags: number, pos: bigint) => {
    const inode = v.inode(sb, ino);
    k.write(inode, Buffer.of(mode & 0xff, mode >> 8));
    b.set(d, "dentry.d_inode", inode);
    const f = v.file(mnt, d, inode);
    k.writeU32(f + b.off("file.f_flags"), flags);
    k.writeU64(f + b.off("file.f_pos"), pos);
    return f;
  };
  return { k, b, v, root, rootMnt, file, ctx: () => k.context(fakeLayout(TABLE)) };
}

test("fds in order with their paths, types, flags (close-on-exec added), pos, mnt_id and ino", () => {
  const w = world();
  const tmp = w.v.dentry("tmp", w.root);
  const reg = w.file(w.v.dentry("wl-net.txt", tmp), w.rootMnt, 0o100644, 313n, 0o102002, 13n);
  const dir = w.file(tmp, w.rootMnt, 0o040755, 5n, 0o200000, 0n);
  // A pipe: its dentry names itself through pipefs_dname as "pipe:[ino]".
  const dname = w.k.defineSymbol("pipefs_dname", 16);
  const ops = w.b.obj("dentry_operations");
  w.b.set(ops, "dentry_operations.d_dname", dname);
  const pipefsRoot = w.v.dentry("pipe:");
  const pipeMnt = w.v.mount(pipefsRoot);
  const pipe = w.file(w.v.dentry("", pipefsRoot, { op: ops }), pipeMnt, 0o010600, 453n, 0, 0n);
  w.k.writeU32(pipeMnt - w.b.off("mount.mnt") + w.b.off("mount.mnt_id"), 16);
  const t = task(
    w.b,
    new Map([
      [0, dir],
      [3, reg],
      [9, pipe],
    ]),
    { cloexec: [9] },
  );
  const rows = openFiles(w.ctx(), t).map(({ file: _, ...r }) => r);
  assert.deepEqual(rows, [
    { fd: 0, type: "dir", path: "/tmp", flags: 0o200000, pos: 0n, mntId: 1, ino: 5n },
    { fd: 3, type: "file", path: "/tmp/wl-net.txt", flags: 0o102002, pos: 13n, mntId: 1, ino: 313n },
    { fd: 9, type: "pipe", path: "pipe:[453]", flags: 0o2000000, pos: 0n, mntId: 16, ino: 453n },
  ]);
});

test("a task without a file table has no fds", () => {
  const w = world();
  assert.deepEqual(openFiles(w.ctx(), w.b.obj("task_struct")), []);
});

test("an absurd max_fds or a garbage file pointer is a typed error", () => {
  const w = world();
  assert.throws(() => openFiles(w.ctx(), task(w.b, new Map(), { maxFds: 1 << 24 })), GuestDataError);
  assert.throws(() => openFiles(w.ctx(), task(w.b, new Map([[2, 0x1234n]]))), GuestDataError);
});
