/**
 * The queue between code that pushes events as they happen and the one reader that awaits them
 * (an async iterator's next()). Bounded: a reader that stops reading gets E_BUSY instead of the
 * process growing without end. An end or a failure reaches the reader after what was queued
 * before it.
 */
import { VmsightError } from "./errors.js";

/** Events waiting for a reader beyond this mean the reader has stopped reading. */
export const MAX_QUEUED_EVENTS = 65_536;

export class EventQueue<T> {
  private readonly items: T[] = [];
  private wake: (() => void) | undefined;
  private failure: { readonly error: unknown } | undefined;
  private over = false;

  constructor(private readonly max = MAX_QUEUED_EVENTS) {}

  /** Nothing more will be queued (it ended or failed). */
  get ended(): boolean {
    return this.over || this.failure !== undefined;
  }

  push(item: T): void {
    if (this.ended) return;
    if (this.items.length >= this.max) {
      this.fail(
        new VmsightError("E_BUSY", `more than ${this.max} events were not read`, {
          hint: "read events as they come",
        }),
      );
      return;
    }
    this.items.push(item);
    this.poke();
  }

  end(): void {
    this.over = true;
    this.poke();
  }

  /** The first failure is the one the reader gets. */
  fail(error: unknown): void {
    this.failure ??= { error };
    this.poke();
  }

  /** Drops what was not read yet (the reader has gone). */
  clear(): void {
    this.items.length = 0;
  }

  /** The next item, or undefined once the queue has ended; throws its failure once drained. */
  async take(): Promise<T | undefined> {
    for (;;) {
      if (this.items.length > 0) return this.items.shift();
      if (this.failure) throw this.failure.error;
      if (this.over) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
