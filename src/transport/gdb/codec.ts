/**
 * GDB remote serial protocol framing: `$data#cs` packets, `%data#cs` notifications, `+`/`-` acks
 * and the raw 0x03 interrupt byte. Pure: bytes in, events out; sockets live in client.ts.
 */

const DOLLAR = 0x24;
const PERCENT = 0x25;
const HASH = 0x23;
const ESCAPE = 0x7d;
const STAR = 0x2a;
const PLUS = 0x2b;
const MINUS = 0x2d;
const INTERRUPT = 0x03;

/** Run-length counts are printable: the count character minus 29 gives the number of extra copies. */
const RLE_BIAS = 29;

export type RspEvent =
  | { type: "ack" }
  | { type: "nak" }
  | { type: "interrupt" }
  | { type: "packet"; data: Buffer }
  | { type: "notification"; data: Buffer }
  | { type: "bad-checksum"; notification: boolean; expected: number; actual: number }
  | { type: "malformed"; notification: boolean; reason: string };

export function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

function needsEscape(b: number): boolean {
  return b === HASH || b === DOLLAR || b === ESCAPE || b === STAR;
}

/** Escapes the four framing bytes as `}` followed by the byte xor 0x20. */
export function escapeBinary(data: Uint8Array): Buffer {
  let extra = 0;
  for (const b of data) if (needsEscape(b)) extra++;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (const b of data) {
    if (needsEscape(b)) {
      out[o++] = ESCAPE;
      out[o++] = b ^ 0x20;
    } else {
      out[o++] = b;
    }
  }
  return out;
}

function toBytes(data: string | Uint8Array): Buffer {
  return typeof data === "string" ? Buffer.from(data, "latin1") : Buffer.from(data);
}

function frame(start: number, data: string | Uint8Array): Buffer {
  const body = escapeBinary(toBytes(data));
  const trailer = Buffer.from(`#${checksum(body).toString(16).padStart(2, "0")}`, "latin1");
  return Buffer.concat([Buffer.of(start), body, trailer]);
}

/** `$data#cs`. Strings are taken as latin1 so every char is one byte. */
export function encodePacket(data: string | Uint8Array): Buffer {
  return frame(DOLLAR, data);
}

/** `%data#cs`, as a stub sends in non-stop mode. */
export function encodeNotification(data: string | Uint8Array): Buffer {
  return frame(PERCENT, data);
}

/**
 * Expands run-length encoding, then escapes, in that order, as GDB does: the stub compresses the
 * already-escaped text, so `*` repeats the raw byte before it.
 */
export function decodeBody(raw: Uint8Array): { data: Buffer } | { error: string } {
  if (!raw.includes(STAR) && !raw.includes(ESCAPE)) return { data: Buffer.from(raw) };
  const expanded = expandRunLength(raw);
  return typeof expanded === "string" ? { error: expanded } : unescapeBytes(expanded);
}

function expandRunLength(raw: Uint8Array): number[] | string {
  const expanded: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i]!;
    if (b !== STAR) {
      expanded.push(b);
      continue;
    }
    const count = raw[i + 1];
    if (count === undefined) return "run-length marker at the end of the packet";
    if (expanded.length === 0) return "run-length marker with nothing to repeat";
    const repeat = count - RLE_BIAS;
    if (repeat < 0) return `invalid run-length count byte 0x${count.toString(16)}`;
    const prev = expanded[expanded.length - 1]!;
    for (let k = 0; k < repeat; k++) expanded.push(prev);
    i++;
  }
  return expanded;
}

function unescapeBytes(expanded: number[]): { data: Buffer } | { error: string } {
  const out = Buffer.allocUnsafe(expanded.length);
  let o = 0;
  for (let i = 0; i < expanded.length; i++) {
    const b = expanded[i]!;
    if (b === ESCAPE) {
      const next = expanded[i + 1];
      if (next === undefined) return { error: "escape byte at the end of the packet" };
      out[o++] = next ^ 0x20;
      i++;
    } else {
      out[o++] = b;
    }
  }
  return { data: out.subarray(0, o) };
}

function hexDigit(c: number | undefined): number {
  if (c === undefined) return -1;
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  return lower >= 0x61 && lower <= 0x66 ? lower - 0x61 + 10 : -1;
}

type State = "idle" | "body" | "checksum";

export interface DecoderOptions {
  /** Longest raw packet body accepted before the decoder gives up on it (hostile or broken peer). */
  maxPacketBytes?: number;
}

/**
 * Streaming decoder: feed it chunks split anywhere and it yields the same events. Bytes outside
 * a frame other than `+`, `-` and 0x03 are line noise and dropped, as GDB does.
 */
export class RspDecoder {
  private state: State = "idle";
  private notification = false;
  /** Slices of the current body; copied, as callers may reuse their chunk buffers. */
  private parts: Buffer[] = [];
  private bodyLength = 0;
  private sum = 0;
  private csChars: number[] = [];
  private discarding = false;
  private readonly maxPacketBytes: number;

  constructor(options: DecoderOptions = {}) {
    this.maxPacketBytes = options.maxPacketBytes ?? 1 << 20;
  }

  push(chunk: Uint8Array): RspEvent[] {
    const events: RspEvent[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.state === "body") i = this.bodyRun(chunk, i, events);
      else if (this.state === "checksum") this.checksumByte(chunk[i++]!, events);
      else this.idleByte(chunk[i++]!, events);
    }
    return events;
  }

  /** Consumes body bytes up to the next `#` or `$` in one slice; returns where it stopped. */
  private bodyRun(chunk: Uint8Array, from: number, events: RspEvent[]): number {
    let end = from;
    while (end < chunk.length && chunk[end] !== HASH && chunk[end] !== DOLLAR) end++;
    if (!this.discarding && end - from > this.maxPacketBytes - this.bodyLength) {
      events.push({
        type: "malformed",
        notification: this.notification,
        reason: `packet longer than ${this.maxPacketBytes} bytes`,
      });
      // Skip to the end of this frame rather than read its payload as acks and naks.
      this.discarding = true;
      this.parts = [];
    }
    if (end > from && !this.discarding) {
      const slice = chunk.subarray(from, end);
      for (const b of slice) this.sum += b;
      this.parts.push(Buffer.from(slice));
      this.bodyLength += slice.length;
    }
    if (end === chunk.length) return end;
    // A '$' inside a frame means the old one was cut short; resynchronise on the new one. Not '%':
    // it is an ordinary byte in binary payloads.
    if (chunk[end] === DOLLAR) this.start(false);
    else this.state = "checksum";
    return end + 1;
  }

  private idleByte(b: number, events: RspEvent[]): void {
    if (b === DOLLAR || b === PERCENT) this.start(b === PERCENT);
    else if (b === PLUS) events.push({ type: "ack" });
    else if (b === MINUS) events.push({ type: "nak" });
    else if (b === INTERRUPT) events.push({ type: "interrupt" });
  }

  private reset(state: State): void {
    this.state = state;
    this.parts = [];
    this.bodyLength = 0;
    this.sum = 0;
    this.csChars = [];
    this.discarding = false;
  }

  private start(notification: boolean): void {
    this.reset("body");
    this.notification = notification;
  }

  private checksumByte(b: number, events: RspEvent[]): void {
    this.csChars.push(b);
    if (this.csChars.length < 2) return;
    if (this.discarding) {
      this.reset("idle");
      return;
    }
    const hi = hexDigit(this.csChars[0]);
    const lo = hexDigit(this.csChars[1]);
    const expected = hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
    const notification = this.notification;
    const actual = this.sum & 0xff;
    const raw = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.reset("idle");
    if (expected !== actual) {
      events.push({ type: "bad-checksum", notification, expected, actual });
      return;
    }
    const decoded = decodeBody(raw);
    if ("error" in decoded) events.push({ type: "malformed", notification, reason: decoded.error });
    else events.push({ type: notification ? "notification" : "packet", data: decoded.data });
  }
}
