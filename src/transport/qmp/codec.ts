/**
 * QMP wire format: QEMU writes one JSON object per line, terminated by "\r\n".
 * This module is pure: bytes in, classified messages out, and command lines out.
 * It never touches a socket, so it can be tested by feeding it any chunking.
 */
import { ProtocolError } from "../../util/errors.js";

export const NOT_QMP = "E_QMP_NOT_QMP";

/**
 * Bound on the bytes before a line's "\n" (QEMU's "\r" included). Real replies stay far
 * below it; it only stops a hostile or broken peer from exhausting memory.
 */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

const PREVIEW_CHARS = 60;
const LF = 0x0a;

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
}

export interface QmpGreeting {
  version: QemuVersion;
  /** Distribution build string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3"; "" when QEMU sends none. */
  package: string;
  capabilities: string[];
}

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: QmpTimestamp;
}

export type QmpMessage =
  | ({ kind: "greeting" } & QmpGreeting)
  | { kind: "return"; id: unknown; value: unknown }
  | { kind: "error"; id: unknown; errorClass: string; desc: string }
  | ({ kind: "event" } & QmpEvent);

/**
 * One decoded line. A bad line does not poison the decoder (the next line can
 * still be read), but QEMU never sends one, so callers treat it as fatal.
 */
export type QmpFrame =
  | { ok: true; line: string; message: QmpMessage }
  | { ok: false; line: string; error: ProtocolError };

/** Quotes the first ~60 characters of what the peer sent, for error messages. */
export function preview(text: string): string {
  const head = text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
  return JSON.stringify(head);
}

function notQmp(what: string, line: string): ProtocolError {
  return new ProtocolError(NOT_QMP, `not a QMP message: ${what}: ${preview(line)}`);
}

export class QmpDecoder {
  readonly #maxLineBytes: number;
  readonly #utf8 = new TextDecoder("utf-8", { fatal: true });
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** Set while skipping the rest of an over-long line; holds the start of it for the error. */
  #overflowHead: Uint8Array | undefined;

  constructor(options: { maxLineBytes?: number } = {}) {
    this.#maxLineBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  }

  /** Bytes of an unfinished line held back until its newline arrives. */
  get bufferedBytes(): number {
    return this.#pendingBytes;
  }

  /** The start of the unfinished line, to say what a peer that went quiet mid-line sent. */
  bufferedText(): string {
    return lenientText(concat(this.#pending, this.#pendingBytes).subarray(0, 4 * PREVIEW_CHARS));
  }

  push(chunk: Uint8Array): QmpFrame[] {
    const frames: QmpFrame[] = [];
    let start = 0;
    for (let nl = chunk.indexOf(LF, start); nl >= 0; nl = chunk.indexOf(LF, start)) {
      const frame = this.#finishLine(chunk.subarray(start, nl));
      if (frame !== undefined) frames.push(frame);
      start = nl + 1;
    }
    const overflow = this.#hold(chunk.subarray(start));
    if (overflow !== undefined) frames.push(overflow);
    return frames;
  }

  /** Buffers a partial line; reports an over-long line once, as soon as it passes the bound. */
  #hold(rest: Uint8Array): QmpFrame | undefined {
    if (rest.length === 0 || this.#overflowHead !== undefined) return undefined;
    // Copy: the caller may reuse its buffer after push() returns.
    this.#pending.push(rest.slice());
    this.#pendingBytes += rest.length;
    if (this.#pendingBytes <= this.#maxLineBytes) return undefined;
    this.#overflowHead = concat(this.#pending, this.#pendingBytes).subarray(0, 4 * PREVIEW_CHARS);
    this.#clear();
    return this.#overflowFrame(this.#overflowHead);
  }

  #finishLine(tail: Uint8Array): QmpFrame | undefined {
    if (this.#overflowHead !== undefined) {
      this.#overflowHead = undefined;
      return undefined;
    }
    const total = this.#pendingBytes + tail.length;
    const bytes = this.#pendingBytes === 0 ? tail : concat([...this.#pending, tail], total);
    this.#clear();
    if (total > this.#maxLineBytes) return this.#overflowFrame(bytes);
    return decodeLine(this.#utf8, bytes);
  }

  #overflowFrame(head: Uint8Array): QmpFrame {
    const line = lenientText(withoutCr(head.subarray(0, 4 * PREVIEW_CHARS)));
    return { ok: false, line, error: notQmp(`line longer than ${this.#maxLineBytes} bytes`, line) };
  }

  #clear(): void {
    this.#pending = [];
    this.#pendingBytes = 0;
  }
}

function decodeLine(utf8: TextDecoder, withCr: Uint8Array): QmpFrame | undefined {
  const bytes = withoutCr(withCr);
  let line: string;
  try {
    line = utf8.decode(bytes);
  } catch {
    const seen = lenientText(bytes);
    return { ok: false, line: seen, error: notQmp("invalid UTF-8", seen) };
  }
  if (line.trim() === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return { ok: false, line, error: notQmp("expected one JSON object per line, got", line) };
  }
  try {
    return { ok: true, line, message: classify(value, line) };
  } catch (error) {
    if (error instanceof ProtocolError) return { ok: false, line, error };
    throw error;
  }
}

/** QEMU ends lines with "\r\n"; a bare "\n" is accepted too. */
function withoutCr(bytes: Uint8Array): Uint8Array {
  return bytes[bytes.length - 1] === 0x0d ? bytes.subarray(0, -1) : bytes;
}

function lenientText(bytes: Uint8Array): string {
  return new TextDecoder("utf-8").decode(bytes);
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Sorts a parsed JSON value into one of the four QMP message shapes, or throws E_QMP_NOT_QMP. */
export function classify(value: unknown, line: string = JSON.stringify(value) ?? String(value)): QmpMessage {
  if (!isObject(value)) return fail("expected a JSON object, got", line);
  if ("QMP" in value) return classifyGreeting(value.QMP, line);
  if ("error" in value) {
    const err = value.error;
    if (!isObject(err) || typeof err.class !== "string" || typeof err.desc !== "string") {
      return fail("an error reply without string class and desc", line);
    }
    return { kind: "error", id: value.id, errorClass: err.class, desc: err.desc };
  }
  if ("return" in value) return { kind: "return", id: value.id, value: value.return };
  if (typeof value.event === "string") return classifyEvent(value, value.event, line);
  return fail("a JSON object that is not a greeting, return, error or event", line);
}

function fail(what: string, line: string): never {
  throw notQmp(what, line);
}

function classifyGreeting(qmp: unknown, line: string): QmpMessage {
  const version = isObject(qmp) && isObject(qmp.version) ? qmp.version : undefined;
  const qemu = version !== undefined && isObject(version.qemu) ? version.qemu : undefined;
  const { major, minor, micro } = qemu ?? {};
  if (typeof major !== "number" || typeof minor !== "number" || typeof micro !== "number") {
    return fail("a greeting without QMP.version.qemu.{major,minor,micro}", line);
  }
  const pkg = version?.package;
  const caps = isObject(qmp) && Array.isArray(qmp.capabilities) ? qmp.capabilities : [];
  return {
    kind: "greeting",
    version: { major, minor, micro },
    package: typeof pkg === "string" ? pkg : "",
    capabilities: caps.filter((c): c is string => typeof c === "string"),
  };
}

function classifyEvent(value: Record<string, unknown>, event: string, line: string): QmpMessage {
  const data = value.data ?? {};
  if (!isObject(data)) return fail("an event whose data is not an object", line);
  const ts = isObject(value.timestamp) ? value.timestamp : {};
  const seconds = typeof ts.seconds === "number" ? ts.seconds : 0;
  const microseconds = typeof ts.microseconds === "number" ? ts.microseconds : 0;
  return { kind: "event", event, data, timestamp: { seconds, microseconds } };
}

/**
 * One command line, without its terminator (the caller appends "\r\n", so a recorded
 * line and a received line look alike). Throws E_QMP_ENCODE for arguments that are
 * not JSON (a bigint, a cycle) instead of letting JSON.stringify's TypeError escape.
 */
export function encodeCommand(
  command: string,
  args: Record<string, unknown> | undefined,
  id: unknown,
): string {
  const request: Record<string, unknown> = { execute: command };
  if (args !== undefined) request.arguments = args;
  request.id = id;
  try {
    return JSON.stringify(request);
  } catch (cause) {
    throw new ProtocolError(
      "E_QMP_ENCODE",
      `${command}: arguments are not JSON-serialisable (${String(cause)})`,
      {
        hint: "pass plain JSON values; write 64-bit numbers as numbers below 2^53 or as strings",
        cause,
      },
    );
  }
}
