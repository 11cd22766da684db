import { GuestDataError } from "./errors.js";

export interface ElfSection {
  readonly name: string;
  readonly type: number;
  readonly addr: bigint;
  readonly offset: number;
  readonly size: number;
}

export interface ElfSegment {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly vaddr: bigint;
  readonly paddr: bigint;
  readonly fileSize: number;
  readonly memSize: number;
}

export interface Elf64 {
  readonly type: number;
  readonly machine: number;
  readonly entry: bigint;
  readonly sections: readonly ElfSection[];
  readonly segments: readonly ElfSegment[];
  section(name: string): ElfSection | undefined;
  /** The bytes of a section (a view into the file, not a copy). */
  sectionBytes(name: string): Uint8Array | undefined;
}

export const PT_LOAD = 1;
export const PT_NOTE = 4;
const MAX_HEADERS = 65_536;

/** Parses an ELF64 little-endian header, its program headers and section headers (with names). */
export function parseElf64(bytes: Uint8Array): Elf64 {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (end: number, what: string) => {
    if (end > bytes.length) throw new GuestDataError(`ELF: ${what} lies past the end of the file`);
  };
  need(64, "header");
  if (view.getUint32(0, false) !== 0x7f454c46 || bytes[4] !== 2 || bytes[5] !== 1) {
    throw new GuestDataError("ELF: not a 64-bit little-endian ELF file");
  }
  const u16 = (o: number) => view.getUint16(o, true);
  const u32 = (o: number) => view.getUint32(o, true);
  const u64 = (o: number) => view.getBigUint64(o, true);
  const phoff = Number(u64(32));
  const shoff = Number(u64(40));
  const [phentsize, phnum, shentsize, shnum, shstrndx] = [u16(54), u16(56), u16(58), u16(60), u16(62)];
  if (phnum > MAX_HEADERS || shnum > MAX_HEADERS) throw new GuestDataError("ELF: absurd header count");
  // Entries shorter than the ELF64 layout would make the fields below read past the table.
  if ((phnum > 0 && phentsize < 56) || (shnum > 0 && shentsize < 64))
    throw new GuestDataError(`ELF: header entries too short (${phentsize} and ${shentsize} bytes)`);
  need(phoff + phnum * phentsize, "program headers");
  need(shoff + shnum * shentsize, "section headers");

  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    segments.push({
      type: u32(o),
      flags: u32(o + 4),
      offset: Number(u64(o + 8)),
      vaddr: u64(o + 16),
      paddr: u64(o + 24),
      fileSize: Number(u64(o + 32)),
      memSize: Number(u64(o + 40)),
    });
  }

  const raw = Array.from({ length: shnum }, (_, i) => shoff + i * shentsize);
  const strtab = raw[shstrndx];
  const strOff = strtab === undefined ? 0 : Number(u64(strtab + 24));
  const nameAt = (o: number): string => {
    if (strtab === undefined) return "";
    const start = strOff + o;
    const end = bytes.indexOf(0, start);
    return Buffer.from(bytes.subarray(start, end < 0 ? start : end)).toString("latin1");
  };
  const sections: ElfSection[] = raw.map((o) => ({
    name: nameAt(u32(o)),
    type: u32(o + 4),
    addr: u64(o + 16),
    offset: Number(u64(o + 24)),
    size: Number(u64(o + 32)),
  }));

  return {
    type: u16(16),
    machine: u16(18),
    entry: u64(24),
    sections,
    segments,
    section: (name) => sections.find((s) => s.name === name),
    sectionBytes(name) {
      const s = sections.find((x) => x.name === name);
      if (!s) return undefined;
      need(s.offset + s.size, `section ${name}`);
      return bytes.subarray(s.offset, s.offset + s.size);
    },
  };
}
