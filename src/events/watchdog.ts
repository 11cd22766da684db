/**
 * The parent side of the SIGKILL watchdog: a small detached process fed the current trap list
 * over a pipe. SIGKILL cannot be caught, but the kernel closes the pipe when vmsight dies, and
 * that is the watchdog's cue (see watchdog-main.ts). A trap is recorded before its Z packet is
 * sent and forgotten after its z packet is answered, so the list is never short.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { RawTrap, TrapRecorder } from "../qemu/traps.js";
import { VmsightError } from "../util/errors.js";

const MAIN = fileURLToPath(new URL("./watchdog-main.js", import.meta.url));

export interface WatchdogPlan {
  readonly gdbPath: string;
  readonly qmpPath: string;
  readonly resume: boolean;
}

const wire = (t: RawTrap) => ({ type: t.type, addr: t.addr.toString(), kind: t.kind });

export class Watchdog implements TrapRecorder {
  private done = false;

  private constructor(private readonly child: ChildProcess) {}

  static async start(plan: WatchdogPlan): Promise<Watchdog> {
    const child = spawn(process.execPath, [MAIN], {
      detached: true,
      stdio: ["pipe", "ignore", "ignore"],
      env: process.env,
    });
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (e) =>
        reject(new VmsightError("E_WATCHDOG", `cannot start the cleanup watchdog: ${e.message}`)),
      );
    });
    child.unref();
    const w = new Watchdog(child);
    await w.send({ plan });
    return w;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private send(message: unknown): Promise<void> {
    const stdin = this.child.stdin;
    if (!stdin || stdin.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      // Resolve on error too: a watchdog that died cannot be helped, and tracing goes on.
      stdin.write(`${JSON.stringify(message)}\n`, () => resolve());
    });
  }

  add(trap: RawTrap): Promise<void> {
    return this.send({ add: wire(trap) });
  }

  remove(trap: RawTrap): Promise<void> {
    return this.send({ remove: wire(trap) });
  }

  async goodbye(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.send({ bye: true });
    this.child.stdin?.end();
    (this.child.stdin as { unref?: () => void } | null)?.unref?.();
  }

  /** Leaves without goodbye: the watchdog cleans up (used when cleanup here failed). */
  abandon(): void {
    this.done = true;
    this.child.stdin?.destroy();
  }
}
