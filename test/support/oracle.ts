/**
 * Parser of the guest's own view, as printed by guests/vmsight-view: the ground truth that the
 * end-to-end tests hold vmsight's answers against. The format is documented in guests/README.md.
 */
/** The guest's view did not parse. The oracle has its own error type: it shares no code with vmsight. */
export class OracleFormatError extends Error {
  readonly code = "E_VIEW_FORMAT";
}

export const VIEW_BEGIN = "<<<VMSIGHT-VIEW-BEGIN v2>>>";
export const VIEW_END = "<<<VMSIGHT-VIEW-END>>>";

/** The fields of one /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat line. */
export interface StatRow {
  /** pid for a process line, tid for a task line. */
  readonly pid: number;
  /** Everything between the first "(" and the last ")", shown by `renderGuestBytes`. */
  readonly comm: string;
  /** The same, as the kernel's bytes: may hold spaces, parentheses, anything but NUL. */
  readonly commBytes: Buffer;
  /** R, S, D, T, t, Z, X, I, ... */
  readonly state: string;
  readonly ppid: number;
  readonly pgrp: number;
  readonly session: number;
  readonly flags: number;
  readonly numThreads: number;
  /** Clock ticks after boot. */
  readonly startTime: bigint;
  readonly vsize: bigint;
  /** Fields 3 onwards (state first) as printed, for whatever the named ones do not cover. */
  readonly fields: readonly string[];
}

export interface ThreadRow extends StatRow {
  /** The process the task belongs to (the /proc/<tgid>/task directory it was listed under). */
  readonly tgid: number;
}

export interface Ids {
  readonly real: number;
  readonly effective: number;
  readonly saved: number;
  readonly fs: number;
}

export interface ModuleRow {
  readonly name: string;
  readonly size: number;
  /** undefined when the kernel prints "-" (no unload support). */
  readonly refcount: number | undefined;
  readonly usedBy: readonly string[];
  /** Live, Loading or Unloading. */
  readonly state: string;
  readonly address: bigint;
  /** The taint letters in parentheses, e.g. "OE", or "". */
  readonly taints: string;
}

export interface MapRow {
  readonly start: bigint;
  readonly end: bigint;
  /** e.g. "r-xp". */
  readonly perms: string;
  readonly offset: bigint;
  /** "major:minor" in hex, as printed. */
  readonly dev: string;
  readonly inode: bigint;
  /** "" for an anonymous mapping; may contain spaces and end in " (deleted)". By `renderGuestBytes`. */
  readonly path: string;
}

/** A maps record: the parsed rows, and each line of the file as `renderGuestBytes` shows it. */
export interface MapsFile {
  readonly rows: readonly MapRow[];
  readonly lines: readonly string[];
}

export interface GuestView {
  /** uname -r of the guest. */
  readonly release: string;
  /** The pid of the vmsight-view shell itself; it and its children are transient. */
  readonly viewerPid: number | undefined;
  /** Role name (space, full15, long, threads, piperead, sleep, stopped, memwrite) → pid. */
  readonly roles: ReadonlyMap<string, number>;
  /** Virtual address of the memwrite workload's counter, if it is running. */
  readonly counterAddress: bigint | undefined;
  /** One row per /proc/<pid>/stat, in the order listed. */
  readonly processes: readonly StatRow[];
  /** tgid → its tasks, the main thread included. */
  readonly threads: ReadonlyMap<number, readonly ThreadRow[]>;
  readonly uids: ReadonlyMap<number, Ids>;
  readonly gids: ReadonlyMap<number, Ids>;
  /** pid → argv, each argument shown by `renderGuestBytes`, joined by spaces ("" for kernel threads). */
  readonly cmdlines: ReadonlyMap<number, string>;
  readonly modules: readonly ModuleRow[];
  /** pid → its /proc/<pid>/maps, for workload processes only. */
  readonly maps: ReadonlyMap<number, readonly MapRow[]>;
  /** pid → the lines of its /proc/<pid>/maps as `renderGuestBytes` shows them. */
  readonly mapsLines: ReadonlyMap<number, readonly string[]>;
  /** Lines inside the view that are no record (a kernel message that slipped in, say). */
  readonly unparsed: readonly string[];
}

function bad(line: string, why: string): never {
  throw new OracleFormatError(`guest view: ${why}: ${JSON.stringify(line.slice(0, 200))}`);
}

function int(text: string | undefined, line: string): number {
  if (text === undefined || !/^-?\d+$/.test(text)) bad(line, `"${text}" is not an integer`);
  return Number(text);
}

function big(text: string | undefined, line: string, radix: 10 | 16 = 10): bigint {
  const ok = radix === 16 ? /^(0x)?[0-9a-f]+$/i : /^\d+$/;
  if (text === undefined || !ok.test(text)) bad(line, `"${text}" is not a number`);
  return BigInt(radix === 16 && !text.startsWith("0x") ? `0x${text}` : text);
}

/** Splits off the first space-separated word: [word, rest]. */
function word(text: string): [string, string] {
  const sp = text.indexOf(" ");
  return sp < 0 ? [text, ""] : [text.slice(0, sp), text.slice(sp + 1)];
}

/**
 * How the tests expect a guest string to be shown (the rule in README.md), written for this
 * oracle alone: at each byte, the shortest slice of 1–4 bytes that a strict UTF-8 decoder accepts
 * as one code point is that character; a byte that starts none is `\xNN`; a backslash is `\\`;
 * a control character (below U+0020, U+007F–U+009F) is `\xNN` for each of its bytes.
 */
export function renderGuestBytes(bytes: Uint8Array): string {
  const strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const hexEscape = (b: Uint8Array) => Array.from(b, (x) => `\\x${x.toString(16).padStart(2, "0")}`).join("");
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    let char: string | undefined;
    let len = 1;
    for (; len <= 4 && i + len <= bytes.length; len++) {
      try {
        char = strict.decode(bytes.subarray(i, i + len));
        break;
      } catch {}
    }
    if (char === undefined || [...char].length !== 1) {
      out += hexEscape(bytes.subarray(i, i + 1));
      i += 1;
      continue;
    }
    const cp = char.codePointAt(0)!;
    if (char === "\\") out += "\\\\";
    else if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) out += hexEscape(bytes.subarray(i, i + len));
    else out += char;
    i += len;
  }
  return out;
}

/** A hex payload of the view (lower-case, two digits a byte) back to its bytes. */
function fromHex(text: string, line: string): Buffer {
  if (!/^([0-9a-f]{2})*$/.test(text)) bad(line, "payload is not hex");
  return Buffer.from(text, "hex");
}

/**
 * Parses one stat line, given one char per byte (latin1). comm sits between the first "(" and the LAST ")": everything after that
 * is numbers and the state letter, so no comm can fake the split.
 */
export function parseStatLine(line: string): StatRow {
  const open = line.indexOf(" (");
  const close = line.lastIndexOf(")");
  if (open < 0 || close < open) bad(line, "no (comm) in stat line");
  const fields = line.slice(close + 2).split(" ");
  // Field numbers as in proc(5): state is 3, so fields[i] is field i + 3.
  const f = (n: number): string | undefined => fields[n - 3];
  const state = f(3);
  if (state === undefined || !/^[A-Za-z]$/.test(state)) bad(line, "no state letter after comm");
  if (fields.length < 22) bad(line, "stat line too short");
  return {
    pid: int(line.slice(0, open), line),
    comm: renderGuestBytes(Buffer.from(line.slice(open + 2, close), "latin1")),
    commBytes: Buffer.from(line.slice(open + 2, close), "latin1"),
    state,
    ppid: int(f(4), line),
    pgrp: int(f(5), line),
    session: int(f(6), line),
    flags: int(f(9), line),
    numThreads: int(f(20), line),
    startTime: big(f(22), line),
    vsize: big(f(23), line),
    fields,
  };
}

/** "name size refcount usedby state address [(taints)]", as /proc/modules prints it. */
export function parseModuleLine(line: string): ModuleRow {
  const parts = line.split(" ");
  const [name, size, refcount, usedBy, state, address, taints] = parts;
  if (
    parts.length < 6 ||
    parts.length > 7 ||
    name === undefined ||
    usedBy === undefined ||
    state === undefined
  )
    bad(line, "module line needs 6 or 7 fields");
  return {
    name,
    size: int(size, line),
    refcount: refcount === "-" ? undefined : int(refcount, line),
    usedBy: usedBy === "-" ? [] : usedBy.split(",").filter((m) => m !== ""),
    state,
    address: big(address, line, 16),
    taints: taints === undefined ? "" : taints.replace(/^\(|\)$/g, ""),
  };
}

/**
 * "start-end perms offset dev inode [padding path]", one char per byte (latin1): the path is the
 * rest, spaces and all.
 */
export function parseMapsLine(line: string): MapRow {
  const m = /^([0-9a-f]+)-([0-9a-f]+) ([-rwxsp]{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?(.*)$/.exec(
    line,
  );
  if (!m) bad(line, "not a maps line");
  return {
    start: big(m[1], line, 16),
    end: big(m[2], line, 16),
    perms: m[3]!,
    offset: big(m[4], line, 16),
    dev: m[5]!,
    inode: big(m[6], line),
    path: renderGuestBytes(Buffer.from(m[7]!.replace(/^ +/, ""), "latin1")),
  };
}

function parseIds(rest: string, line: string): [number, Ids] {
  const [pid, real, effective, saved, fs, extra] = rest.split(" ");
  if (extra !== undefined) bad(line, "too many ids");
  return [
    int(pid, line),
    { real: int(real, line), effective: int(effective, line), saved: int(saved, line), fs: int(fs, line) },
  ];
}

function parseRoles(rest: string, line: string): Map<string, number> {
  const roles = new Map<string, number>();
  for (const pair of rest.split(" ").filter((p) => p !== "")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) bad(line, `role "${pair}" is not name=pid`);
    roles.set(pair.slice(0, eq), int(pair.slice(eq + 1), line));
  }
  return roles;
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

/** The last complete BEGIN…END block in `text` (the serial output may hold several). */
export function extractView(text: string): string[] {
  const end = text.lastIndexOf(VIEW_END);
  const begin = end < 0 ? -1 : text.lastIndexOf(VIEW_BEGIN, end);
  if (begin < 0) {
    throw new OracleFormatError("no complete vmsight-view output (BEGIN…END markers) in the text");
  }
  return text
    .slice(begin + VIEW_BEGIN.length, end)
    .split("\n")
    .map((l) => l.replace(/\r$/, ""))
    .filter((l) => l !== "");
}

export function parseGuestView(text: string): GuestView {
  const view = {
    release: "",
    viewerPid: undefined as number | undefined,
    roles: new Map<string, number>(),
    counterAddress: undefined as bigint | undefined,
    processes: [] as StatRow[],
    threads: new Map<number, ThreadRow[]>(),
    uids: new Map<number, Ids>(),
    gids: new Map<number, Ids>(),
    cmdlines: new Map<number, string>(),
    modules: [] as ModuleRow[],
    maps: new Map<number, MapRow[]>(),
    mapsLines: new Map<number, string[]>(),
    unparsed: [] as string[],
  };
  for (const line of extractView(text)) {
    const [tag, rest] = word(line);
    switch (tag) {
      case "release":
        view.release = rest;
        break;
      case "self":
        view.viewerPid = int(rest, line);
        break;
      case "roles":
        view.roles = parseRoles(rest, line);
        break;
      case "counter":
        view.counterAddress = big(rest, line, 16);
        break;
      case "stat":
        view.processes.push(parseStatLine(statText(rest, line)));
        break;
      case "task": {
        const [tgid, stat] = word(rest);
        pushTo(view.threads, int(tgid, line), {
          ...parseStatLine(statText(stat, line)),
          tgid: int(tgid, line),
        });
        break;
      }
      case "uid":
      case "gid": {
        const [pid, ids] = parseIds(rest, line);
        (tag === "uid" ? view.uids : view.gids).set(pid, ids);
        break;
      }
      case "cmdline": {
        const [pid, cmdline] = word(rest);
        view.cmdlines.set(int(pid, line), argv(fromHex(cmdline, line)).map(renderGuestBytes).join(" "));
        break;
      }
      case "module":
        view.modules.push(parseModuleLine(rest));
        break;
      case "maps": {
        const [pid, map] = word(rest);
        const file = mapsFile(fromHex(map, line));
        view.maps.set(int(pid, line), [...file.rows]);
        view.mapsLines.set(int(pid, line), [...file.lines]);
        break;
      }
      default:
        view.unparsed.push(line);
    }
  }
  return view;
}

/** A stat file's bytes (hex in the view) as one latin1 line, its final newline dropped. */
function statText(hex: string, line: string): string {
  const bytes = fromHex(hex, line);
  if (bytes[bytes.length - 1] !== 0x0a) bad(line, "stat file does not end in a newline");
  return bytes.subarray(0, -1).toString("latin1");
}

/** /proc/<pid>/cmdline's bytes as arguments: NUL-separated, the final NUL ends the last one. */
function argv(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] === 0) {
      out.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  if (start < bytes.length) out.push(bytes.subarray(start));
  return out;
}

/** A maps file's bytes: the kernel escapes a newline in a path, so every 0x0a ends a line. */
export function mapsFile(bytes: Buffer): MapsFile {
  const lines = bytes.toString("latin1").split("\n");
  if (lines.pop() !== "") throw new OracleFormatError("maps file does not end in a newline");
  return {
    rows: lines.map(parseMapsLine),
    lines: lines.map((l) => renderGuestBytes(Buffer.from(l, "latin1"))),
  };
}

/** The process of a role, or a thrown error naming what the view does have. */
export function roleProcess(view: GuestView, role: string): StatRow {
  const pid = view.roles.get(role);
  const row = pid === undefined ? undefined : view.processes.find((p) => p.pid === pid);
  if (!row) {
    throw new OracleFormatError(
      `no process for role "${role}" (roles: ${[...view.roles.keys()].join(", ")})`,
    );
  }
  return row;
}
