/**
 * The VMs a server serves: named ones (--vm NAME=QMP_SOCKET) and every QMP socket that appears
 * in a scanned directory (--scan DIR). A VM is opened on first use through the injected factory;
 * a socket that goes away is reported (vm.state VANISHED), never fatal.
 */
import { type FSWatcher, readdirSync, statSync, unwatchFile, watch, watchFile } from "node:fs";
import { basename, join } from "node:path";
import type { OpenVm, ServedVm } from "./backend.js";
import { RpcError, type VmDirectory, type VmEntry } from "./core.js";
import { RPC_ERRORS } from "./schema.js";

interface Slot {
  readonly qmp: string;
  present: boolean;
  opened: Promise<ServedVm> | undefined;
}

export class VmRegistry implements VmDirectory {
  private readonly slots = new Map<string, Slot>();
  private readonly listeners = new Set<(name: string, present: boolean) => void>();
  private readonly watchers: FSWatcher[] = [];
  private readonly followed: string[] = [];

  constructor(private readonly open: OpenVm) {}

  list(): VmEntry[] {
    return [...this.slots].map(([name, s]) => ({ name, qmp: s.qmp, present: s.present }));
  }

  async get(name: string): Promise<ServedVm> {
    const slot = this.slots.get(name);
    if (!slot?.present) {
      throw new RpcError(RPC_ERRORS.UNKNOWN_VM.code, slot ? `VM "${name}" has gone` : `no VM "${name}"`);
    }
    if (!slot.opened) {
      slot.opened = this.open(slot.qmp);
      // A failed attach is retried on the next request rather than remembered.
      slot.opened.catch(() => {
        if (this.slots.get(name) === slot) slot.opened = undefined;
      });
    }
    return slot.opened;
  }

  onChange(listener: (name: string, present: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  add(name: string, qmp: string): void {
    const old = this.slots.get(name);
    if (old?.present && old.qmp === qmp) return;
    this.slots.set(name, { qmp, present: true, opened: undefined });
    for (const l of this.listeners) l(name, true);
  }

  /** The VM stays listed (present: false) so clients can tell "gone" from "never was". */
  remove(name: string): void {
    const slot = this.slots.get(name);
    if (!slot?.present) return;
    slot.present = false;
    const opened = slot.opened;
    slot.opened = undefined;
    void opened?.then((vm) => vm.close()).catch(() => {});
    for (const l of this.listeners) l(name, false);
  }

  /** A named VM (--vm) whose socket is polled, so a QEMU that exits becomes VANISHED, and comes back. */
  follow(name: string, qmp: string): void {
    this.add(name, qmp);
    this.followed.push(qmp);
    watchFile(qmp, { interval: 2000, persistent: false }, (now) => {
      if (now.nlink === 0) this.remove(name);
      else this.add(name, qmp);
    });
  }

  /** Every unix socket in `dir` is a VM named after the file (without .sock/.qmp). */
  scan(dir: string): void {
    const sync = () => {
      const seen = new Set<string>();
      for (const file of safeList(dir)) {
        const path = join(dir, file);
        if (!isSocket(path)) continue;
        const name = vmName(path);
        seen.add(name);
        this.add(name, path);
      }
      for (const [name, slot] of this.slots) {
        if (slot.present && slot.qmp.startsWith(`${dir}/`) && !seen.has(name)) this.remove(name);
      }
    };
    sync();
    const w = watch(dir, { persistent: false }, () => sync());
    w.on("error", () => {});
    this.watchers.push(w);
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.close();
    for (const f of this.followed) unwatchFile(f);
    const open = [...this.slots.values()].map((s) => s.opened).filter((p) => p !== undefined);
    await Promise.allSettled(open.map((p) => p.then((vm) => vm.close())));
  }
}

export function vmName(path: string): string {
  return basename(path).replace(/\.(sock|qmp|socket)$/, "");
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}
