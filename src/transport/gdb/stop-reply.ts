import { ProtocolError } from "../../util/errors.js";
import { hexToBytes, parseHexNumber, preview } from "./hex.js";

export type WatchKind = "watch" | "rwatch" | "awatch";

export interface SignalStop {
  type: "signal";
  signal: number;
  thread?: string;
  core?: number;
  /** Set when a Z2/Z3/Z4 watchpoint fired: which kind, at which data address. */
  watch?: { kind: WatchKind; address: bigint };
  swbreak: boolean;
  hwbreak: boolean;
  /** Registers the stub volunteered (`NN:value`), by register number, raw target-order bytes. */
  registers: Map<number, Buffer>;
  /** Every other `name:value` pair, unparsed (library, fork, exec, syscall_entry, ...). */
  fields: Map<string, string>;
}

export interface ExitStop {
  type: "exited";
  status: number;
  process?: string;
}

export interface TerminatedStop {
  type: "terminated";
  signal: number;
  process?: string;
}

/** `N`: nothing is left running (non-stop/vCont targets). */
export interface NoResumedStop {
  type: "no-resumed";
}

export type StopReply = SignalStop | ExitStop | TerminatedStop | NoResumedStop;

/** A stub has no reason to send hundreds of `n:r` pairs; more means a broken or hostile peer. */
const MAX_FIELDS = 1024;

const WATCH_KINDS: readonly string[] = ["watch", "rwatch", "awatch"];

export function isStopReply(packet: string): boolean {
  return /^(T[0-9a-fA-F]{2}|S[0-9a-fA-F]{2}$|W[0-9a-fA-F]{2}|X[0-9a-fA-F]{2}|N$)/.test(packet);
}

export function parseStopReply(packet: string): StopReply {
  const kind = packet[0];
  if (kind === "N" && packet.length === 1) return { type: "no-resumed" };
  const code = packet.slice(1, 3);
  if (!/^[0-9a-fA-F]{2}$/.test(code)) throw badStop(packet);
  const value = Number.parseInt(code, 16);
  const pairs = splitPairs(packet.slice(3), packet);
  switch (kind) {
    case "S":
      if (packet.length !== 3) throw badStop(packet);
      return emptySignal(value);
    case "T":
      return signalStop(value, pairs, packet);
    case "W":
      return withProcess({ type: "exited", status: value }, pairs);
    case "X":
      return withProcess({ type: "terminated", signal: value }, pairs);
    default:
      throw badStop(packet);
  }
}

function emptySignal(signal: number): SignalStop {
  return { type: "signal", signal, swbreak: false, hwbreak: false, registers: new Map(), fields: new Map() };
}

function splitPairs(rest: string, packet: string): [string, string][] {
  // `W`/`X` put a `;` before their only pair; `T` puts none before its first.
  const text = rest.startsWith(";") ? rest.slice(1) : rest;
  if (text === "") return [];
  const parts = text.split(";").filter((p) => p !== "");
  if (parts.length > MAX_FIELDS) throw badStop(packet);
  return parts.map((part) => {
    const colon = part.indexOf(":");
    return colon < 0 ? [part, ""] : [part.slice(0, colon), part.slice(colon + 1)];
  });
}

function signalStop(signal: number, pairs: [string, string][], packet: string): SignalStop {
  const stop = emptySignal(signal);
  for (const [name, value] of pairs) {
    if (/^[0-9a-fA-F]+$/.test(name)) {
      stop.registers.set(
        Number(parseHexNumber(name, "a stop-reply register number")),
        hexToBytes(value, name),
      );
    } else if (name === "thread") {
      stop.thread = value;
    } else if (name === "core") {
      stop.core = Number(parseHexNumber(value, "the stop-reply core"));
    } else if (WATCH_KINDS.includes(name)) {
      stop.watch = { kind: name as WatchKind, address: parseHexNumber(value, `the ${name} address`) };
    } else if (name === "swbreak") {
      stop.swbreak = true;
    } else if (name === "hwbreak") {
      stop.hwbreak = true;
    } else if (name === "") {
      throw badStop(packet);
    } else {
      stop.fields.set(name, value);
    }
  }
  return stop;
}

function withProcess<T extends ExitStop | TerminatedStop>(stop: T, pairs: [string, string][]): T {
  const process = pairs.find(([name]) => name === "process")?.[1];
  if (process !== undefined) stop.process = process;
  return stop;
}

function badStop(packet: string): ProtocolError {
  return new ProtocolError("E_GDB_BAD_REPLY", `gdbstub sent a malformed stop reply: ${preview(packet)}`);
}
