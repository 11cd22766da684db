import { readFileSync } from "node:fs";
import { type Socket, createConnection } from "node:net";
import { VmsightError } from "../util/errors.js";

/**
 * The guest's serial console over QEMU's unix socket, used like `expect`: everything received
 * is kept, and each successful waitFor moves a cursor past its match so the next wait only sees
 * newer output.
 */
export class SerialConsole {
  private text = "";
  private cursor = 0;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  private commands = 0;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => {
      this.text += chunk;
      this.wake();
    });
    socket.on("close", () => {
      this.closed = true;
      this.wake();
    });
    socket.on("error", () => {});
  }

  static connect(path: string): Promise<SerialConsole> {
    return new Promise((resolve, reject) => {
      const socket = createConnection(path);
      socket.once("connect", () => resolve(new SerialConsole(socket)));
      socket.once("error", (e) =>
        reject(new VmsightError("E_SERIAL", `cannot connect to serial socket ${path}: ${e.message}`)),
      );
    });
  }

  /** Everything received so far (CRs kept, as the tty sent them). */
  get output(): string {
    return this.text;
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
    for (;;) {
      const m = re.exec(this.text.slice(this.cursor));
      if (m) {
        m.index += this.cursor;
        this.cursor = m.index + m[0].length;
        return m;
      }
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
    return this.text.slice(-2000).replace(/\r/g, "");
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
