import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { after } from "node:test";
import { cliMain } from "./cli.js";

const running = new Set<ChildProcess>();
after(() => {
  for (const c of running) c.kill("SIGKILL");
});

/**
 * A `vmsight …` running in the background (or another script given as `script`), whose output
 * the test watches as it comes.
 */
export class BackgroundCli {
  stdout = "";
  stderr = "";
  /** The exit code (null when killed by a signal) and when the process closed (performance.now()). */
  readonly exited: Promise<number | null>;
  closedAt: number | undefined;
  private readonly child: ChildProcess;

  constructor(args: readonly string[], script = cliMain()) {
    this.child = spawn(process.execPath, [script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    this.child.stdout!.on("data", (d: Buffer) => {
      this.stdout += d.toString();
    });
    this.child.stderr!.on("data", (d: Buffer) => {
      this.stderr += d.toString();
    });
    running.add(this.child);
    this.exited = new Promise((r) =>
      this.child.on("close", (code) => {
        this.closedAt = performance.now();
        running.delete(this.child);
        r(code);
      }),
    );
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Waits until stderr (or stdout) matches `pattern`; fails if the process ends first. */
  async waitFor(pattern: RegExp, ms = 120_000, stream: "stderr" | "stdout" = "stderr"): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pattern.test(this[stream])) {
      assert.ok(
        Date.now() < deadline && this.child.exitCode === null,
        `vmsight never printed ${pattern} (exit ${this.child.exitCode}):\n${this.stderr}`,
      );
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Waits for the tracer's "tracing … Ctrl-C to stop" line. */
  ready(ms = 60_000): Promise<void> {
    return this.waitFor(/^tracing /m, ms);
  }

  /** The JSON lines of stdout (--json event streams). */
  events<T = Record<string, unknown>>(): T[] {
    return this.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as T);
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }
}
