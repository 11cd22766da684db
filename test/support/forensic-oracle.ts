/**
 * Parser of `vmsight-view forensics` (guests/vmsight-view, format in guests/README.md): the
 * guest's own /proc/PID/fd, fdinfo, environ, mountinfo, ns, cgroup, /proc/net/* and dmesg, which
 * lsof, env, mounts, sockets, ns, containers and dmesg are held against. Shares no code with
 * vmsight; strings are shown by the oracle's own `renderGuestBytes`.
 */
import { OracleFormatError, renderGuestBytes } from "./oracle.js";

export const FORENSICS_BEGIN = "<<<VMSIGHT-FORENSICS-BEGIN v1>>>";
export const FORENSICS_END = "<<<VMSIGHT-FORENSICS-END>>>";

export interface FdEntry {
  readonly fd: number;
  /** The link target, as readlink(2) returns it, shown by `renderGuestBytes`. */
  readonly target: string;
  /** st_mode of the file it points at (stat -L), undefined when stat could not follow it. */
  readonly mode: number | undefined;
  /** fdinfo lines, by key ("pos", "flags", "mnt_id", "ino", ...), values as printed. */
  readonly info: ReadonlyMap<string, string>;
}

export interface ForensicView {
  readonly viewerPid: number;
  /** The workload's wl-net process and its child. */
  readonly net: { readonly parent: number; readonly child: number } | undefined;
  /** The workload's process in namespaces and a cgroup of its own (wl-contained). */
  readonly box: number | undefined;
  /** pid → its fds, in fd order. */
  readonly fds: ReadonlyMap<number, readonly FdEntry[]>;
  /** pid → its environment strings, each shown by `renderGuestBytes`. */
  readonly environ: ReadonlyMap<number, readonly string[]>;
  /** pid → the lines of /proc/PID/mountinfo, shown by `renderGuestBytes` (an escape `\040` reads `\\040`). */
  readonly mountinfo: ReadonlyMap<number, readonly string[]>;
  /** pid → namespace type → link ("net:[4026531840]"). */
  readonly ns: ReadonlyMap<number, ReadonlyMap<string, string>>;
  /** pid → the lines of /proc/PID/cgroup. */
  readonly cgroup: ReadonlyMap<number, readonly string[]>;
  /** tcp, tcp6, udp, udp6, unix, netlink, packet → the lines of /proc/net/<that>, header included. */
  readonly procNet: ReadonlyMap<string, readonly string[]>;
  /** The guest's `dmesg` output, one line each, shown by `renderGuestBytes`. */
  readonly dmesg: readonly string[];
}

function bad(why: string, line: string): never {
  throw new OracleFormatError(`forensic view: ${why}: ${JSON.stringify(line.slice(0, 200))}`);
}

function hexBytes(text: string, line: string): Buffer {
  if (!/^([0-9a-f]{2})*$/.test(text)) bad("payload is not hex", line);
  return Buffer.from(text, "hex");
}

/** Lines of a text payload; the last newline ends the last line. */
function textLines(bytes: Buffer): string[] {
  const lines = bytes.toString("latin1").split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

function nonNegative(text: string, line: string): number {
  if (!/^\d+$/.test(text)) bad(`"${text}" is not a number`, line);
  return Number(text);
}

/** `ls -l` of a directory of symlinks: name → target (everything after the first " -> "). */
function symlinks(bytes: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const l of textLines(bytes)) {
    const arrow = l.indexOf(" -> ");
    if (arrow < 0) continue; // "total 0" and the like
    const name = l.slice(0, arrow).split(" ").pop()!;
    out.set(name, Buffer.from(l.slice(arrow + 4), "latin1"));
  }
  return out;
}

/** `stat -L -c '%n %f'` lines: "/proc/P/fd/N <hex mode>". */
function modes(bytes: Buffer, line: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const l of textLines(bytes)) {
    const m = /\/fd\/(\d+) ([0-9a-f]+)$/.exec(l);
    if (!m) bad("not a stat line", l || line);
    out.set(Number(m[1]), Number.parseInt(m[2]!, 16));
  }
  return out;
}

/** `head -v` of fdinfo files: "==> /proc/P/fdinfo/N <==" then "key:\tvalue" lines. */
function fdinfos(bytes: Buffer): Map<number, Map<string, string>> {
  const out = new Map<number, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const l of textLines(bytes)) {
    const head = /^==> .*\/fdinfo\/(\d+) <==$/.exec(l);
    if (head) {
      current = new Map();
      out.set(Number(head[1]), current);
      continue;
    }
    const colon = l.indexOf(":");
    if (current && colon > 0) current.set(l.slice(0, colon), l.slice(colon + 1).trim());
  }
  return out;
}

function fdEntries(links: Buffer, modeText: Buffer, info: Buffer, line: string): FdEntry[] {
  const m = modes(modeText, line);
  const infos = fdinfos(info);
  return [...symlinks(links)]
    .map(([name, target]) => {
      const fd = nonNegative(name, line);
      return { fd, target: renderGuestBytes(target), mode: m.get(fd), info: infos.get(fd) ?? new Map() };
    })
    .sort((a, b) => a.fd - b.fd);
}

/** A latin1 line (one char a byte) shown by `renderGuestBytes`. */
const rendered = (line: string) => renderGuestBytes(Buffer.from(line, "latin1"));

/** NUL-separated strings; the final NUL ends the last one. */
function nulStrings(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 0) continue;
    out.push(bytes.subarray(start, i));
    start = i + 1;
  }
  if (start < bytes.length) out.push(bytes.subarray(start));
  return out;
}

export function parseForensicView(text: string): ForensicView {
  const end = text.lastIndexOf(FORENSICS_END);
  const begin = end < 0 ? -1 : text.lastIndexOf(FORENSICS_BEGIN, end);
  if (begin < 0) throw new OracleFormatError("no complete `vmsight-view forensics` block in the text");
  const view = {
    viewerPid: -1,
    net: undefined as { parent: number; child: number } | undefined,
    box: undefined as number | undefined,
    fds: new Map<number, FdEntry[]>(),
    environ: new Map<number, string[]>(),
    mountinfo: new Map<number, string[]>(),
    ns: new Map<number, Map<string, string>>(),
    cgroup: new Map<number, string[]>(),
    procNet: new Map<string, string[]>(),
    dmesg: [] as string[],
  };
  const pending = new Map<number, { links?: Buffer; modes?: Buffer }>();
  const lines = text
    .slice(begin + FORENSICS_BEGIN.length, end)
    .split("\n")
    .map((l) => l.replace(/\r$/, ""))
    .filter((l) => l !== "");
  for (const line of lines) {
    const [tag, a = "", b = ""] = line.split(" ");
    if (tag === "self") view.viewerPid = nonNegative(a, line);
    else if (tag === "net") view.net = { parent: nonNegative(a, line), child: nonNegative(b, line) };
    else if (tag === "box") view.box = nonNegative(a, line);
    else if (tag?.startsWith("net-")) view.procNet.set(tag.slice(4), textLines(hexBytes(a, line)));
    else if (tag === "dmesg") view.dmesg = textLines(hexBytes(a, line)).map(rendered);
    else {
      const pid = nonNegative(a, line);
      const bytes = hexBytes(b, line);
      const p = pending.get(pid) ?? {};
      pending.set(pid, p);
      if (tag === "fds") p.links = bytes;
      else if (tag === "fdmodes") p.modes = bytes;
      else if (tag === "fdinfo")
        view.fds.set(pid, fdEntries(p.links ?? Buffer.alloc(0), p.modes ?? Buffer.alloc(0), bytes, line));
      else if (tag === "environ") view.environ.set(pid, nulStrings(bytes).map(renderGuestBytes));
      else if (tag === "mountinfo") view.mountinfo.set(pid, textLines(bytes).map(rendered));
      else if (tag === "cgroup") view.cgroup.set(pid, textLines(bytes));
      else if (tag === "ns")
        view.ns.set(pid, new Map([...symlinks(bytes)].map(([k, v]) => [k, v.toString("latin1")])));
      else bad("unknown record", line);
    }
  }
  return view;
}
