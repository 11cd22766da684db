import type { GdbClient } from "../transport/gdb/client.js";
import type { StopReply } from "../transport/gdb/stop-reply.js";

/** What a poller needs of the running guest: whether it ended, and a way to hold it still. */
export interface PausableRun {
  /** The guest stopped by itself (QEMU quit, a reset, a breakpoint not ours): waiting is pointless. */
  readonly ended: boolean;
  /** Runs `fn` with the guest stopped, then lets it go on. */
  whilePaused<T>(fn: () => T): Promise<T>;
}

/** The guest let go with the gdbstub's `continue`, which we may stop for a moment or for good. */
export class GuestRun implements PausableRun {
  ended = false;
  private pausing = false;
  private pending: Promise<StopReply>;

  constructor(private readonly gdb: GdbClient) {
    this.pending = this.go();
  }

  private go(): Promise<StopReply> {
    const p = this.gdb.continue();
    void p.then(
      () => {
        if (!this.pausing) this.ended = true;
      },
      () => {
        this.ended = true;
      },
    );
    return p;
  }

  /** Stops the guest until something else continues it. */
  async stop(): Promise<void> {
    this.pausing = true;
    await this.gdb.interrupt();
    await this.pending;
  }

  async whilePaused<T>(fn: () => T): Promise<T> {
    await this.stop();
    try {
      return fn();
    } finally {
      this.pausing = false;
      this.pending = this.go();
    }
  }
}
