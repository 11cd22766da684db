import { spawnSync } from "node:child_process";
import { chmodSync, lstatSync, lutimesSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { VmsightError } from "../util/errors.js";

/** The mtime every archived file gets: SOURCE_DATE_EPOCH when set (the reproducible-builds convention), else 0. */
export function sourceDateEpoch(): number {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env === undefined || env === "") return 0;
  if (!/^\d{1,12}$/.test(env)) {
    throw new VmsightError("E_IMAGE_BUILD", `SOURCE_DATE_EPOCH="${env}" is not a count of seconds`);
  }
  return Number(env);
}

/**
 * Every path under `root` (relative, without "./"), sorted bytewise so the archive order does
 * not depend on the filesystem's directory order or on the locale.
 */
export function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel))) {
      const path = rel === "" ? name : `${rel}/${name}`;
      out.push(path);
      if (lstatSync(join(root, path)).isDirectory()) walk(path);
    }
  };
  walk("");
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Packs `root` into an uncompressed newc cpio archive at `outFile`, byte-for-byte reproducible:
 * sorted names, one mtime, modes normalised (directories and executables 0755, other files
 * 0644), owner 0:0, and `--reproducible` so inode and device numbers come out the same too.
 */
export function packInitramfs(root: string, outFile: string, mtime: number = sourceDateEpoch()): void {
  const paths = listTree(root);
  for (const rel of paths) {
    const abs = join(root, rel);
    const st = lstatSync(abs);
    if (st.isSymbolicLink()) {
      lutimesSync(abs, mtime, mtime);
      continue;
    }
    if (st.isDirectory() || (st.mode & 0o111) !== 0) chmodSync(abs, 0o755);
    else chmodSync(abs, 0o644);
    utimesSync(abs, mtime, mtime);
  }
  // Directory mtimes last: touching a child above does not change its parent's, but be explicit.
  utimesSync(root, mtime, mtime);
  const r = spawnSync("cpio", ["-o", "-H", "newc", "--reproducible", "-R", "0:0", "--quiet"], {
    cwd: root,
    input: `${paths.join("\n")}\n`,
    maxBuffer: 1 << 30,
  });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : r.stderr.toString().trim();
    throw new VmsightError("E_IMAGE_BUILD", `cpio failed: ${why}`, {
      hint: "the image builder needs GNU cpio (Debian package cpio)",
    });
  }
  writeFileSync(outFile, r.stdout);
}
