import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { hex, pa } from "../util/address.js";
import { PT_LOAD, PT_NOTE, parseElf64 } from "../util/elf.js";
import { GuestDataError, VmsightError } from "../util/errors.js";
import { FdPhysicalMemory, type FdRegion, mapFileRegions } from "./fd-memory.js";

/** One vCPU's registers as the dump recorded them, keyed like the gdbstub's names. */
export type DumpCpu = ReadonlyMap<string, bigint>;

export interface ElfCore {
  readonly memory: FdPhysicalMemory;
  readonly cpus: readonly DumpCpu[];
}

const MAX_HEADERS = 1 << 20;
const MAKE_ONE =
  "make one with QMP dump-guest-memory (paging: false, format elf) or `virsh dump --memory-only`";
const MAX_NOTES = 64 << 20;
const GPRS = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "eflags",
];
const SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"];

/**
 * Opens an ELF core written by QEMU's `dump-guest-memory` (or `virsh dump`): each PT_LOAD's
 * physical address is guest-physical, and each vCPU has a "QEMU" note (QEMUCPUState in QEMU's
 * target/i386/arch_dump.c) carrying the control registers that page walks need.
 */
export function openElfCore(path: string): ElfCore {
  const fd = openOrExplain(path);
  try {
    return readCore(fd, path);
  } catch (error) {
    closeSync(fd);
    if (error instanceof GuestDataError) {
      throw new VmsightError("E_DUMP", `${path}: ${error.message.replace(/^dump: /, "")}`, {
        hint: `the file is truncated or is not a QEMU ELF memory dump; ${MAKE_ONE}`,
        cause: error,
      });
    }
    throw error;
  }
}

function readCore(fd: number, path: string): ElfCore {
  const size = fstatSync(fd).size;
  if (size < 64) throw new GuestDataError(`the file is ${size} bytes, shorter than an ELF header`);
  const head = readAt(fd, 0, 64, size);
  const phoff = Number(head.readBigUInt64LE(32));
  const phnum = head.readUInt16LE(56);
  if (phoff + phnum * 56 > Math.min(size, MAX_HEADERS))
    throw new GuestDataError("program headers lie past the end");
  const elf = parseElf64(readAt(fd, 0, Math.max(64, phoff + phnum * 56), size));
  const regions: FdRegion[] = elf.segments
    .filter((s) => s.type === PT_LOAD && s.fileSize > 0)
    .map((s) => {
      if (s.offset + s.fileSize > size)
        throw new GuestDataError(
          `a memory segment (${s.fileSize} bytes at file offset ${s.offset}) lies past the end of the ${size}-byte file`,
        );
      if (s.paddr + BigInt(s.fileSize) > 1n << 64n)
        throw new GuestDataError(`a memory segment at ${hex(s.paddr)} runs past the end of physical memory`);
      return {
        start: pa(s.paddr),
        size: BigInt(s.fileSize),
        name: "dump",
        writable: false,
        fd,
        fdOffset: BigInt(s.offset),
      };
    });
  if (regions.length === 0) throw new GuestDataError("no memory segments: not a guest memory dump");
  const notes = elf.segments.filter((s) => s.type === PT_NOTE);
  const cpus = notes.flatMap((n) =>
    qemuCpuNotes(readAt(fd, n.offset, Math.min(n.fileSize, MAX_NOTES), size)),
  );
  return { memory: new FdPhysicalMemory(`dump ${path}`, mapFileRegions(regions)), cpus };
}

function readAt(fd: number, offset: number, length: number, size: number): Buffer {
  const out = Buffer.alloc(length);
  // Checked before reading: offsets from the file can exceed what readSync accepts.
  if (offset + length > size || readSync(fd, out, 0, length, offset) !== length)
    throw new GuestDataError(
      `the file is shorter than its headers say (wanted ${length} bytes at ${offset})`,
    );
  return out;
}

/** Walks an ELF note segment and decodes every "QEMU" note (one per vCPU, in CPU order). */
export function qemuCpuNotes(notes: Buffer): DumpCpu[] {
  const cpus: DumpCpu[] = [];
  // Not `& ~3`: note sizes are u32 and bit operations would wrap them negative.
  const align4 = (n: number) => Math.ceil(n / 4) * 4;
  for (let off = 0; off + 12 <= notes.length; ) {
    const nameSize = notes.readUInt32LE(off);
    const descSize = notes.readUInt32LE(off + 4);
    const name = notes.toString("latin1", off + 12, off + 12 + Math.max(0, nameSize - 1));
    const desc = off + 12 + align4(nameSize);
    if (desc + descSize > notes.length) throw new GuestDataError("dump: an ELF note runs past its segment");
    if (name === "QEMU") cpus.push(decodeQemuCpuState(notes.subarray(desc, desc + descSize)));
    off = desc + align4(descSize);
  }
  return cpus;
}

/**
 * QEMUCPUState: version and size (u32 each), rax…r15, rip, rflags (u64 each), ten segments of
 * 24 bytes (selector, limit, flags, pad: u32; base: u64), cr[0..4], kernel_gs_base. The dump
 * has no EFER: a 64-bit ELF dump of a CPU with paging and PAE on is in long mode, so LMA is set.
 */
export function decodeQemuCpuState(d: Buffer): DumpCpu {
  const regs = new Map<string, bigint>();
  const u64 = (o: number) => (o + 8 <= d.length ? d.readBigUInt64LE(o) : 0n);
  GPRS.forEach((name, i) => regs.set(name, u64(8 + i * 8)));
  SEGMENTS.forEach((name, i) => {
    const at = 152 + i * 24;
    if (i < 6 && at + 4 <= d.length) regs.set(name, BigInt(d.readUInt32LE(at)));
    regs.set(`${name}_base`, u64(at + 16));
  });
  for (let i = 0; i < 5; i++) regs.set(`cr${i}`, u64(392 + i * 8));
  regs.set("k_gs_base", u64(432));
  const longMode = (regs.get("cr0")! & (1n << 31n)) !== 0n && (regs.get("cr4")! & (1n << 5n)) !== 0n;
  regs.set("efer", longMode ? 0x500n : 0n);
  return regs;
}

function openOrExplain(path: string): number {
  try {
    return openSync(path, "r");
  } catch (error) {
    throw new VmsightError("E_DUMP", `cannot open dump ${path} (${(error as NodeJS.ErrnoException).code})`, {
      hint: MAKE_ONE,
    });
  }
}
