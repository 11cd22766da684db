/**
 * How the CLI finds a running `vmsight serve`: each server keeps one file in vmsight's private
 * directory naming its protocol socket and the QMP sockets it serves. QEMU takes one QMP client
 * at a time, so a command for a guest that a server holds must go through that server; the CLI
 * looks its QMP path up here. A server killed with SIGKILL leaves its file: a reader that finds
 * its pid gone removes it, and a pid reused by another program fails to connect and is skipped.
 */
import { readFileSync, readdirSync, realpathSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { VmsightError, isVmsightError } from "../util/errors.js";
import { ensurePrivateDir, privateDir } from "../util/private-dir.js";

export interface Announcement {
  readonly pid: number;
  /** The protocol's unix socket URL (ws+unix://…). */
  readonly url: string;
  readonly vms: readonly { readonly name: string; readonly qmp: string }[];
}

export interface ServedBy {
  readonly pid: number;
  readonly url: string;
  /** The VM's name on that server. */
  readonly vm: string;
}

const announcementDir = (base = privateDir()) => ensurePrivateDir(join(base, "served"));

/** The same socket however it was named (relative, through a symlink). */
export function canonicalPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return resolve(path);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Writes (and rewrites, as VMs come and go) this server's file; `remove` on the way out. */
export function announce(url: string, vms: () => Announcement["vms"], base?: string) {
  const file = join(announcementDir(base), `${process.pid}.json`);
  const update = () => {
    const body: Announcement = {
      pid: process.pid,
      url,
      vms: vms().map((v) => ({ name: v.name, qmp: canonicalPath(v.qmp) })),
    };
    // Whole or not at all: a CLI reading at the same moment sees the old file or the new one.
    writeFileSync(`${file}.tmp`, JSON.stringify(body), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  };
  update();
  return { update, remove: () => rmSync(file, { force: true }) };
}

function readAnnouncement(path: string): Announcement | undefined {
  try {
    const a = JSON.parse(readFileSync(path, "utf8")) as Partial<Announcement>;
    if (typeof a.pid !== "number" || typeof a.url !== "string" || !Array.isArray(a.vms)) return undefined;
    return a as Announcement;
  } catch {
    return undefined; // being replaced, or not ours to understand
  }
}

/** The live servers that serve the guest at `qmp`, newest file first. */
export function serversOf(qmp: string, base?: string): ServedBy[] {
  let dir: string;
  try {
    dir = announcementDir(base);
  } catch (error) {
    // No server could have announced itself in a directory we refuse, and what is in it is not
    // to be believed: the command goes on without one (and fails later only if it needs the dir).
    if (isVmsightError(error) && error.code === "E_UNSAFE_DIR") return [];
    throw error;
  }
  const want = canonicalPath(qmp);
  const found: ServedBy[] = [];
  for (const name of readdirSync(dir)) {
    if (!name.endsWith(".json")) continue;
    const a = readAnnouncement(join(dir, name));
    if (!a) continue;
    if (!alive(a.pid)) {
      rmSync(join(dir, name), { force: true });
      continue;
    }
    const vm = a.vms.find((v) => v.qmp === want);
    if (vm) found.push({ pid: a.pid, url: a.url, vm: vm.name });
  }
  return found;
}

/** The error for a command that must hold the guest's QMP socket itself while a server does. */
export function servedBusy(served: ServedBy, command: string): VmsightError {
  return new VmsightError(
    "E_BUSY",
    `vmsight serve (pid ${served.pid}) holds this guest's QMP socket, and "${command}" cannot go through it`,
    { hint: "stop the server (the guest runs on) and run the command again" },
  );
}

/** Throws servedBusy when a server holds the guest at `qmp`. */
export function refuseIfServed(qmp: string, command: string): void {
  const served = serversOf(qmp)[0];
  if (served) throw servedBusy(served, command);
}
