import { readFileSync } from "node:fs";
import { type Socket, createConnection } from "node:net";
import { VmsightError } from "../util/errors.js";

/** A starting QEMU refuses connections for a moment (see SerialConsole.connect). */
const REFUSED_TRIES = 50;
const REFUSED_RETRY_MS = 20;

/** The longest text a waitFor pattern may match (a marker line, a prompt, a ready line). */
const MAX_MATCH = 4096;

/**
 * Appended text kept as the chunks it arrived in: reading a recent piece copies only that
 * piece, where one growing string would be flattened (copied whole) at every read.
 */
class ChunkedText {
  private readonly chunks: string[] = [];
  private readonly starts: number[] = [];
  length = 0;

  append(chunk: string): void {
    if (chunk === "") return;
    this.starts.push(this.length);
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  slice(from: number, to = this.length): string {
    const start = Math.max(0, Math.min(from, this.length));
    const end = Math.max(start, Math.min(to, this.length));
    if (start === end) return "";
    // The last chunk that starts at or before `start`.
    let lo = 0;
    let hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= start) lo = mid;
      else hi = mid - 1;
    }
    const parts: string[] = [];
    for (let i = lo; i < this.chunks.length && this.starts[i]! < end; i++) parts.push(this.chunks[i]!);
    const base = this.starts[lo]!;
    return parts.join("").slice(start - base, end - base);
  }
}

/**
 * The guest's serial console over QEMU's unix socket, used like `expect`: everything received
 * is kept, and each successful waitFor moves a cursor past its match so the next wait only sees
 * newer output.
 */
export class SerialConsole {
  private readonly text = new ChunkedText();
  private cursor = 0;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private commands = 0;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.text.append(chunk);
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {});
  }

  /**
   * QEMU makes the socket file at bind() and listens just after: a QEMU that is starting refuses
   * for a moment (seen on a loaded machine), so a refusal is tried again for a second.
   */
  static async connect(path: string): Promise<SerialConsole> {
    for (let tries = 1; ; tries++) {
      try {
        return await SerialConsole.connectOnce(path);
      } catch (error) {
        if (tries >= REFUSED_TRIES || (error as NodeJS.ErrnoException).code !== "ECONNREFUSED") {
          const message = error instanceof Error ? error.message : String(error);
          throw new VmsightError("E_SERIAL", `cannot connect to serial socket ${path}: ${message}`);
        }
        await new Promise((r) => setTimeout(r, REFUSED_RETRY_MS));
      }
    }
  }

  private static connectOnce(path: string): Promise<SerialConsole> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once("connect", () => resolve(new SerialConsole(socket)));
      socket.once("error", reject);
    });
  }

  /** Everything received so far (CRs kept, as the tty sent them). */
  get output(): string {
    return this.text.slice(0);
  }

  private wake(): void {
    for (const w of this.waiters) w();
  }

  /**
   * Waits until `pattern` appears after the cursor; returns the match and moves the cursor past
   * it. Throws with the recent output when it does not come in time or the console closes.
   */
  async waitFor(pattern: RegExp | string, timeoutMs: number): Promise<RegExpExecArray> {
    const re =
      typeof pattern === "string"
        ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
        : new RegExp(pattern.source, pattern.flags.replace("g", ""));
    const deadline = Date.now() + timeoutMs;
    // Text already searched holds no match, except one that starts there and ends in new text:
    // rescanning only the new text (plus the line that reaches MAX_MATCH back) keeps a long
    // output linear.
    let from = this.cursor;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) {
        m.index += from;
        this.cursor = m.index + m[0].length;
        return m;
      }
      from = Math.max(from, this.lineStartBefore(this.text.length - MAX_MATCH));
      const left = deadline - Date.now();
      if (this.closed || left <= 0) {
        const why = this.closed ? "the console closed" : `nothing after ${timeoutMs} ms`;
        throw new VmsightError(
          "E_SERIAL",
          `waiting for ${re} on the serial console: ${why}; last output:\n${this.recent()}`,
        );
      }
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.waiters.add(done);
      });
    }
  }

  /**
   * The start of the line holding `at` (so a `^` in a pattern still means a line start), or 0
   * when that line is longer than MAX_MATCH.
   */
  private lineStartBefore(at: number): number {
    if (at <= 0) return 0;
    const piece = this.text.slice(at - MAX_MATCH, at);
    const newline = piece.lastIndexOf("\n");
    return newline < 0 ? 0 : at - piece.length + newline + 1;
  }

  /** Types a line (a newline is added). */
  send(line: string): void {
    this.socket.write(`${line}\n`, "latin1");
  }

  /** Sends ^C to the foreground command. */
  interrupt(): void {
    this.socket.write("\x03");
  }

  /**
   * Runs `cmd` in the guest shell and returns its output (CRs removed) and exit status. The
   * markers are written with an empty "" inside so the shell's echo of the typed line cannot
   * match them: only the output of `echo` does.
   */
  async run(cmd: string, timeoutMs = 30_000): Promise<{ output: string; status: number }> {
    const n = `${process.pid}_${++this.commands}`;
    this.send(`echo VMSB""EGIN_${n}; ${cmd}; echo VMSE""ND_${n}_$?`);
    await this.waitFor(new RegExp(`VMSBEGIN_${n}\\r?\\n`), timeoutMs);
    const start = this.cursor;
    // Not anchored to a line start: output without a final newline runs into the marker.
    const end = await this.waitFor(new RegExp(`VMSEND_${n}_(\\d+)\\r?\\n`), timeoutMs);
    const output = this.text.slice(start, end.index).replace(/\r/g, "");
    return { output, status: Number(end[1]) };
  }

  /** Like run, but a non-zero exit status is an error. */
  async command(cmd: string, timeoutMs = 30_000): Promise<string> {
    const { output, status } = await this.run(cmd, timeoutMs);
    if (status !== 0) {
      throw new VmsightError("E_GUEST_COMMAND", `guest command "${cmd}" exited with ${status}:\n${output}`);
    }
    return output;
  }

  private recent(): string {
    return this.text.slice(this.text.length - 2000).replace(/\r/g, "");
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Polls a file (QEMU's serial log) until `pattern` appears; returns the whole text. `gaveUp`
 * returns a reason to stop early (QEMU has exited, say).
 */
export async function waitForFile(
  path: string,
  pattern: RegExp | string,
  timeoutMs: number,
  gaveUp: () => string | undefined = () => undefined,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let text = "";
  for (;;) {
    try {
      text = readFileSync(path, "latin1");
    } catch {
      text = "";
    }
    if (typeof pattern === "string" ? text.includes(pattern) : pattern.test(text)) return text;
    const why = gaveUp() ?? (Date.now() > deadline ? `nothing after ${timeoutMs} ms` : undefined);
    if (why !== undefined) {
      throw new VmsightError(
        "E_SERIAL",
        `waiting for ${pattern} in ${path}: ${why}; last output:\n${text.slice(-2000).replace(/\r/g, "")}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
