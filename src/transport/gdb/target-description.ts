/**
 * GDB target descriptions (`qXfer:features:read`): the XML names the registers, and their order
 * and sizes fix where each sits in the `g` packet. Only the few elements that matter for the
 * layout are read; this is not a general XML parser.
 */
import { ProtocolError } from "../../util/errors.js";
import { preview } from "./hex.js";

export interface RegisterInfo {
  /** Lower-case, as register names are compared case-insensitively. */
  name: string;
  regnum: number;
  bitsize: number;
  /** Byte offset of the register in the `g` packet. */
  offset: number;
  type?: string;
  group?: string;
}

export interface RegisterLayout {
  architecture?: string;
  /** Sorted by regnum, which is also `g` packet order. */
  registers: RegisterInfo[];
  byName: Map<string, RegisterInfo>;
  /** Bytes in a `g` packet that carries every described register. */
  size: number;
}

export type TdescItem =
  | { kind: "reg"; attrs: Map<string, string> }
  | { kind: "include"; href: string }
  | { kind: "architecture"; name: string };

const MAX_INCLUDE_DEPTH = 8;
const MAX_DOCUMENTS = 64;
const MAX_REGISTERS = 4096;
/** AVX-512 registers are 512 bits; leave room, but refuse absurd sizes from a broken stub. */
const MAX_REG_BITS = 4096;

function badTdesc(message: string): ProtocolError {
  return new ProtocolError("E_GDB_BAD_TDESC", `target description: ${message}`);
}

/**
 * Comments go first: QEMU's i386-64bit.xml keeps `<reg>` lines for cs_base…es_base inside one,
 * and counting them shifts every later register (the layout comes out 632 bytes, not 608).
 */
export function stripXmlComments(xml: string): string {
  let out = "";
  let pos = 0;
  for (;;) {
    const start = xml.indexOf("<!--", pos);
    if (start < 0) return out + xml.slice(pos);
    const end = xml.indexOf("-->", start + 4);
    if (end < 0) throw badTdesc("unterminated XML comment");
    out += `${xml.slice(pos, start)} `;
    pos = end + 3;
  }
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function decodeEntities(text: string): string {
  return text.replace(/&(amp|lt|gt|quot|apos);/g, (_, name: string) => ENTITIES[name]!);
}

export function parseAttributes(text: string): Map<string, string> {
  const attrs = new Map<string, string>();
  for (const m of text.matchAll(/([A-Za-z_:][-\w:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    attrs.set(m[1]!, decodeEntities(m[2] ?? m[3] ?? ""));
  }
  return attrs;
}

/** The layout-relevant elements of one document, in document order. */
export function parseTargetXml(xml: string): TdescItem[] {
  const items: TdescItem[] = [];
  const text = stripXmlComments(xml);
  const tag = /<(reg|xi:include|architecture)\b([^>]*)>/g;
  for (const m of text.matchAll(tag)) {
    const attrs = parseAttributes(m[2]!);
    if (m[1] === "reg") {
      items.push({ kind: "reg", attrs });
    } else if (m[1] === "xi:include") {
      const href = attrs.get("href");
      if (href === undefined || href === "") throw badTdesc("<xi:include> without href");
      items.push({ kind: "include", href });
    } else {
      const close = text.indexOf("</architecture>", m.index + m[0].length);
      if (close < 0) throw badTdesc("unterminated <architecture>");
      items.push({ kind: "architecture", name: text.slice(m.index + m[0].length, close).trim() });
    }
  }
  return items;
}

function parseIntAttr(attrs: Map<string, string>, key: string): number | undefined {
  const raw = attrs.get(key);
  if (raw === undefined) return undefined;
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(raw.trim())) throw badTdesc(`bad ${key}="${preview(raw)}"`);
  return Number(raw.trim());
}

/**
 * Registers are numbered in document order from 0, a `regnum=` attribute resets the count, and
 * the `g` packet holds them in regnum order with no padding.
 */
export function buildLayout(items: TdescItem[]): RegisterLayout {
  const regs: RegisterInfo[] = [];
  let next = 0;
  let architecture: string | undefined;
  for (const item of items) {
    if (item.kind === "architecture") architecture = item.name;
    if (item.kind !== "reg") continue;
    if (regs.length >= MAX_REGISTERS) throw badTdesc(`more than ${MAX_REGISTERS} registers`);
    const name = item.attrs.get("name")?.toLowerCase();
    if (!name) throw badTdesc("<reg> without a name");
    const bitsize = parseIntAttr(item.attrs, "bitsize");
    if (bitsize === undefined || bitsize <= 0 || bitsize % 8 !== 0 || bitsize > MAX_REG_BITS) {
      throw badTdesc(`register ${name} has an unusable bitsize`);
    }
    const regnum = parseIntAttr(item.attrs, "regnum") ?? next;
    next = regnum + 1;
    const reg: RegisterInfo = { name, regnum, bitsize, offset: 0 };
    const type = item.attrs.get("type");
    const group = item.attrs.get("group");
    if (type !== undefined) reg.type = type;
    if (group !== undefined) reg.group = group;
    regs.push(reg);
  }
  return finishLayout(regs, architecture);
}

function finishLayout(regs: RegisterInfo[], architecture: string | undefined): RegisterLayout {
  regs.sort((a, b) => a.regnum - b.regnum);
  const byName = new Map<string, RegisterInfo>();
  let offset = 0;
  for (let i = 0; i < regs.length; i++) {
    const reg = regs[i]!;
    if (i > 0 && regs[i - 1]!.regnum === reg.regnum) throw badTdesc(`two registers numbered ${reg.regnum}`);
    if (byName.has(reg.name)) throw badTdesc(`register ${reg.name} described twice`);
    reg.offset = offset;
    offset += reg.bitsize / 8;
    byName.set(reg.name, reg);
  }
  const layout: RegisterLayout = { registers: regs, byName, size: offset };
  if (architecture !== undefined) layout.architecture = architecture;
  return layout;
}

/**
 * Reads a whole document, expanding `<xi:include>` in place, so registers keep document order
 * across files. `readAnnex` returns one annex's full text (see readXferObject).
 */
export async function loadTargetDescription(
  readAnnex: (annex: string) => Promise<string>,
  root = "target.xml",
): Promise<RegisterLayout> {
  let documents = 0;
  const expand = async (annex: string, depth: number): Promise<TdescItem[]> => {
    if (depth > MAX_INCLUDE_DEPTH) throw badTdesc(`includes nested deeper than ${MAX_INCLUDE_DEPTH}`);
    if (++documents > MAX_DOCUMENTS) throw badTdesc(`more than ${MAX_DOCUMENTS} documents`);
    const out: TdescItem[] = [];
    for (const item of parseTargetXml(await readAnnex(annex))) {
      if (item.kind === "include") out.push(...(await expand(item.href, depth + 1)));
      else out.push(item);
    }
    return out;
  };
  return buildLayout(await expand(root, 0));
}

export interface XferOptions {
  /** Bytes asked for per request; keep the reply inside the stub's PacketSize. */
  chunkSize: number;
  /** Upper bound on the object's size: a stub that never says `l` must not make us loop forever. */
  maxBytes?: number;
}

/**
 * `qXfer:OBJECT:read:ANNEX:OFF,LEN` until the stub answers `l` (last). `m` means more; both carry
 * binary data that the codec has already unescaped.
 */
export async function readXferObject(
  request: (packet: string) => Promise<Buffer>,
  object: string,
  annex: string,
  options: XferOptions,
): Promise<Buffer> {
  const maxBytes = options.maxBytes ?? 1 << 20;
  const parts: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const packet = `qXfer:${object}:read:${annex}:${offset.toString(16)},${options.chunkSize.toString(16)}`;
    const reply = await request(packet);
    const tag = String.fromCharCode(reply[0] ?? 0);
    if (reply.length === 0)
      throw new ProtocolError("E_GDB_UNSUPPORTED", `gdbstub does not support ${packet}`);
    if (tag !== "m" && tag !== "l") {
      throw new ProtocolError(
        "E_GDB_ERROR",
        `gdbstub refused ${packet}: ${preview(reply.toString("latin1"))}`,
      );
    }
    const data = reply.subarray(1);
    parts.push(data);
    offset += data.length;
    if (offset > maxBytes) throw badTdesc(`${annex} is larger than ${maxBytes} bytes`);
    if (tag === "l") return Buffer.concat(parts);
    if (data.length === 0) throw badTdesc(`${annex}: stub said "more" but sent nothing`);
  }
}
