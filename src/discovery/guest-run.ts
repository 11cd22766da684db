import type { TrapCore, TrapStop } from "../qemu/traps.js";

/** What a poller needs of the running guest: whether it ended, and a way to hold it still. */
export interface PausableRun {
  /** The guest stopped by itself (QEMU quit, a reset, a breakpoint not ours): waiting is pointless. */
  readonly ended: boolean;
  /** Runs `fn` with the guest stopped, then lets it go on. */
  whilePaused<T>(fn: () => T): Promise<T>;
}

/** The guest let go through the trap core's resume, which we may stop for a moment or for good. */
export class GuestRun implements PausableRun {
  ended = false;
  private pausing = false;
  private pending: Promise<TrapStop>;

  constructor(private readonly core: TrapCore) {
    this.pending = this.go();
  }

  private go(): Promise<TrapStop> {
    const p = this.core.resume();
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
    this.core.interrupt();
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
