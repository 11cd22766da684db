/**
 * QMP over a unix socket: the thin I/O wrapper around the codec. It correlates
 * replies by id, fans out events, and fails every waiting caller when the
 * connection ends, so nothing hangs when QEMU dies.
 */
import { lstatSync } from "node:fs";
import { type Socket, connect as netConnect } from "node:net";
import { ProtocolError } from "../../util/errors.js";
import {
  NOT_QMP,
  QmpDecoder,
  type QmpEvent,
  type QmpFrame,
  type QmpGreeting,
  type QmpMessage,
  encodeCommand,
  preview,
} from "./codec.js";
import {
  MAX_SOCKET_PATH_BYTES,
  type PathKind,
  QmpCommandError,
  closedBeforeGreeting,
  closedByPeer,
  closedByUs,
  commandTimeout,
  connectFailure,
  connectTimeout,
  copyError,
  eventTimeout,
  noGreeting,
  notGreeting,
  notQmpPeer,
  pathTooLong,
} from "./failures.js";

export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

export type QmpRecorder = (dir: "send" | "recv", line: string) => void;

export interface QmpConnectOptions {
  /** Bound on connect + greeting + capabilities negotiation. Default 5 s. */
  timeoutMs?: number;
  /** Default bound on each command's reply. Default 30 s. */
  commandTimeoutMs?: number;
  /** Sees every line sent and received, without its "\r\n" terminator. */
  record?: QmpRecorder;
}

export interface QmpExecuteOptions {
  timeoutMs?: number;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type Waiter = { resolve: (g: QmpGreeting) => void; reject: (err: Error) => void };

/** A refused connection is tried again this often, this far apart (~0.5 s in all). */
const REFUSED_TRIES = 10;
const REFUSED_RETRY_MS = 50;

export class QmpClient {
  readonly path: string;
  readonly #socket: Socket;
  readonly #decoder = new QmpDecoder();
  readonly #record: QmpRecorder | undefined;
  readonly #commandTimeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  /** Callers failed by close(), not by events, so waitForEvent can reject on close too. */
  readonly #closeWatchers = new Set<(err: ProtocolError) => void>();
  #nextId = 1;
  #connected = false;
  #greeting: QmpGreeting | undefined;
  #greetingWaiter: Waiter | undefined;
  /** Set once; every later call fails with a copy of it. */
  #failure: ProtocolError | undefined;
  #socketClosed: Promise<void>;

  private constructor(path: string, options: QmpConnectOptions) {
    this.path = path;
    this.#record = options.record;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    this.#socket = netConnect({ path });
    this.#socketClosed = new Promise((resolve) => this.#socket.once("close", () => resolve()));
    this.#socket.on("connect", () => {
      this.#connected = true;
    });
    this.#socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    this.#socket.on("error", (err: NodeJS.ErrnoException) => this.#onSocketError(err));
    this.#socket.on("close", () => this.#fail(this.#greeting ? closedByPeer() : closedBeforeGreeting(path)));
  }

  /**
   * Connects, waits for QEMU's greeting and leaves capabilities-negotiation mode.
   * Every failure is a ProtocolError with a hint (E_QMP_CONNECT, E_QMP_NOT_QMP,
   * E_QMP_TIMEOUT, E_QMP_CLOSED).
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    // QEMU makes the socket file at bind() and listens just after: a QEMU that is starting
    // refuses for a moment. A refusal that lasts is a socket whose QEMU is gone.
    for (let tries = 1; ; tries++) {
      try {
        return await QmpClient.connectOnce(path, options);
      } catch (error) {
        const refused = (error as { cause?: NodeJS.ErrnoException }).cause?.code === "ECONNREFUSED";
        if (tries >= REFUSED_TRIES || !refused) throw error;
        await new Promise((r) => setTimeout(r, REFUSED_RETRY_MS));
      }
    }
  }

  private static async connectOnce(path: string, options: QmpConnectOptions): Promise<QmpClient> {
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) throw pathTooLong(path);
    const timeoutMs = options.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const client = new QmpClient(path, options);
    try {
      await client.#awaitGreeting(timeoutMs);
      await client.execute("qmp_capabilities", undefined, { timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      client.#fail(err instanceof ProtocolError ? err : closedByUs());
      throw err;
    }
    return client;
  }

  /** QEMU's version and build, from the greeting. */
  get greeting(): QmpGreeting {
    // connect() only hands out clients that have greeted.
    return this.#greeting!;
  }

  /** True once the connection is over, whoever ended it. */
  get closed(): boolean {
    return this.#failure !== undefined;
  }

  /**
   * Runs one QMP command. A QMP error reply rejects with a QmpCommandError
   * (code E_QMP_COMMAND, message "command: desc", property qmpClass).
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#failure !== undefined) return Promise.reject(copyError(this.#failure));
    const id = this.#nextId++;
    let line: string;
    try {
      line = encodeCommand(command, args, id);
    } catch (err) {
      return Promise.reject(err);
    }
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(commandTimeout(command, timeoutMs));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.#record?.("send", line);
      this.#socket.write(`${line}\r\n`);
    });
  }

  /**
   * Runs a human-monitor (HMP) command and returns its text output with "\n"
   * line ends (QEMU sends "\r\n"). HMP reports most of its errors as ordinary
   * output text, not as a QMP error.
   */
  async hmp(commandLine: string, options: QmpExecuteOptions & { cpuIndex?: number } = {}): Promise<string> {
    const { cpuIndex, ...execute } = options;
    const args = {
      "command-line": commandLine,
      ...(cpuIndex === undefined ? {} : { "cpu-index": cpuIndex }),
    };
    const out = await this.execute("human-monitor-command", args, execute);
    if (typeof out !== "string") {
      throw new ProtocolError(NOT_QMP, `human-monitor-command returned ${preview(JSON.stringify(out))}`);
    }
    return out.replace(/\r\n/g, "\n");
  }

  /** Calls `listener` for every event; returns the function that unsubscribes it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    const own = (event: QmpEvent) => listener(event);
    this.#listeners.add(own);
    return () => {
      this.#listeners.delete(own);
    };
  }

  /**
   * The next event called `name`. Events are not buffered: call this before the
   * command that causes the event, then await it.
   */
  waitForEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    if (this.#failure !== undefined) return Promise.reject(copyError(this.#failure));
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        unsubscribe();
        this.#closeWatchers.delete(onClose);
      };
      const onClose = (err: ProtocolError) => {
        done();
        reject(copyError(err));
      };
      const timer = setTimeout(() => {
        done();
        reject(eventTimeout(name, timeoutMs));
      }, timeoutMs);
      const unsubscribe = this.onEvent((event) => {
        if (event.event !== name) return;
        done();
        resolve(event);
      });
      this.#closeWatchers.add(onClose);
    });
  }

  /** Closes the connection; commands still waiting reject with E_QMP_CLOSED. Idempotent. */
  async close(): Promise<void> {
    this.#fail(closedByUs());
    await this.#socketClosed;
  }

  #awaitGreeting(timeoutMs: number): Promise<QmpGreeting> {
    if (this.#failure !== undefined) return Promise.reject(copyError(this.#failure));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(this.#greetingTimeout(timeoutMs)), timeoutMs);
      const settle = () => {
        clearTimeout(timer);
        this.#greetingWaiter = undefined;
      };
      this.#greetingWaiter = {
        resolve: (g) => {
          settle();
          resolve(g);
        },
        reject: (err) => {
          settle();
          reject(err);
        },
      };
    });
  }

  /** A peer that sent half a line and went quiet is not QMP; one that sent nothing may just be busy. */
  #greetingTimeout(timeoutMs: number): ProtocolError {
    if (!this.#connected) return connectTimeout(this.path, timeoutMs);
    if (this.#decoder.bufferedBytes > 0) {
      const seen = this.#decoder.bufferedText();
      return notGreeting(this.path, seen, preview(seen));
    }
    return noGreeting(this.path, timeoutMs);
  }

  #onData(chunk: Buffer): void {
    for (const frame of this.#decoder.push(chunk)) {
      if (this.#failure !== undefined) return;
      this.#record?.("recv", frame.line);
      this.#onFrame(frame);
    }
  }

  #onFrame(frame: QmpFrame): void {
    if (!frame.ok) {
      this.#fail(notQmpPeer(this.path, frame.error, frame.line));
      return;
    }
    const message = frame.message;
    if (this.#greeting === undefined) {
      this.#onFirstMessage(message, frame.line);
      return;
    }
    if (message.kind === "return") this.#settle(message.id, (p) => p.resolve(message.value));
    else if (message.kind === "error") {
      this.#settle(message.id, (p) =>
        p.reject(new QmpCommandError(p.command, message.errorClass, message.desc)),
      );
    } else if (message.kind === "event") this.#emit(message);
    // A second greeting carries nothing we need.
  }

  #onFirstMessage(message: QmpMessage, line: string): void {
    if (message.kind !== "greeting") {
      this.#fail(notGreeting(this.path, line, preview(line)));
      return;
    }
    const { version, package: pkg, capabilities } = message;
    this.#greeting = { version, package: pkg, capabilities };
    this.#greetingWaiter?.resolve(this.#greeting);
  }

  /**
   * Replies to our requests always echo our numeric id. One without an id can
   * only answer a request QEMU could not parse; QEMU answers in order (we never
   * use out-of-band execution), so it belongs to the oldest waiting command.
   * Unknown ids are late replies to commands that already timed out.
   */
  #settle(id: unknown, action: (p: Pending) => void): void {
    const key = id === undefined ? this.#pending.keys().next().value : id;
    if (typeof key !== "number") return;
    const pending = this.#pending.get(key);
    if (pending === undefined) return;
    this.#pending.delete(key);
    clearTimeout(pending.timer);
    action(pending);
  }

  #emit(message: QmpEvent & { kind: "event" }): void {
    const event: QmpEvent = { event: message.event, data: message.data, timestamp: message.timestamp };
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (err) {
        // A broken listener must not wedge the reply stream; surface it as Node would.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  #onSocketError(err: NodeJS.ErrnoException): void {
    if (this.#connected) {
      this.#fail(this.#greeting ? closedByPeer(err) : closedBeforeGreeting(this.path, err));
      return;
    }
    this.#fail(connectFailure(this.path, err, pathKind(this.path)));
  }

  /** Ends the connection once, with one reason, and rejects everyone still waiting. */
  #fail(reason: ProtocolError): void {
    if (this.#failure !== undefined) return;
    this.#failure = reason;
    this.#socket.destroy();
    this.#greetingWaiter?.reject(reason);
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(copyError(reason));
    }
    this.#pending.clear();
    for (const watcher of [...this.#closeWatchers]) watcher(reason);
    this.#listeners.clear();
  }
}

function pathKind(path: string): PathKind {
  try {
    const st = lstatSync(path);
    if (st.isSocket()) return "socket";
    if (st.isFile()) return "file";
    if (st.isDirectory()) return "directory";
    return "other";
  } catch {
    return "missing";
  }
}
