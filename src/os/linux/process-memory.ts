import type { AddressSpace } from "../../arch/x86/address-space.js";
import { translateMany } from "../../arch/x86/walk.js";
import type { StructLayout } from "../../symbols/layout.js";
import { PAGE_SIZE, hex, va } from "../../util/address.js";
import { viewOf } from "../../util/data-view.js";
import { FaultError, GuestDataError, VmsightError } from "../../util/errors.js";
import { decodeGuestStrings } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";
import { type AddressBounds, checkKernelPointer, isKernelPointer, isUserAddress } from "./walk.js";

/**
 * /proc/<pid>/cmdline and /proc/<pid>/environ, read from the process's own pages through its
 * page tables. The kernel faults swapped-out or never-touched pages in; from outside we
 * cannot, so a read stops at the first unreadable page and says so (`partial`).
 */
export interface ProcessStrings {
  /** The bytes /proc would return (as far as they were readable). */
  readonly bytes: Buffer;
  /** The NUL-separated strings, each decoded by `decodeGuestBytes`; a trailing unterminated piece is kept. */
  readonly strings: string[];
  /** The strings joined by spaces, as `ps` shows a command line. */
  readonly text: string;
  /** A page in the range could not be read: `bytes` stops before it. */
  readonly partial: boolean;
  /** The range was longer than MAX_PROCESS_STRINGS and was cut there. */
  readonly truncated: boolean;
  /** First user address that could not be read, when partial. */
  readonly faultAddress: bigint | undefined;
}

export const MAX_PROCESS_STRINGS = 128 * 1024;
const PAGE = BigInt(PAGE_SIZE);

/** What readCmdline/readEnviron need of a task: its mm (0 for kernel threads). */
export interface HasMm {
  readonly mm: bigint;
}

interface MmRanges {
  readonly pgd: bigint;
  readonly argStart: bigint;
  readonly argEnd: bigint;
  readonly envStart: bigint;
  readonly envEnd: bigint;
}

const EMPTY: ProcessStrings = {
  bytes: Buffer.alloc(0),
  strings: [],
  text: "",
  partial: false,
  truncated: false,
  faultAddress: undefined,
};

/**
 * The command line as `get_mm_cmdline()` (fs/proc/base.c) returns it: [arg_start, arg_end),
 * or, when the last argv byte is not NUL because the process rewrote its title
 * (setproctitle), the first string from arg_start, at most one page, which may run on into
 * the environment.
 */
export function readCmdline(ctx: KernelContext, task: HasMm): ProcessStrings {
  if (task.mm === 0n) return EMPTY;
  const mm = readMm(ctx, task.mm);
  if (mm.argStart >= mm.argEnd) return EMPTY;
  const space = ctx.userSpace(checkKernelPointer(mm.pgd, ctx.bounds, `mm ${hex(task.mm)} pgd`));
  let envEnd = mm.envEnd;
  if (mm.envStart !== mm.argEnd || mm.envEnd < mm.envStart) envEnd = mm.argEnd;
  const whole = readUserRange(space, ctx.bounds, mm.argStart, mm.argEnd - mm.argStart);
  // Read in one go first: a complete argv ending in NUL (nearly every process) is the answer.
  const complete = !whole.partial && !whole.truncated;
  const last = complete ? whole.bytes[whole.bytes.length - 1] : readUserByte(space, mm.argEnd - 1n);
  if (last !== undefined && last !== 0) {
    const len = envEnd - mm.argStart < PAGE ? envEnd - mm.argStart : PAGE;
    const r = readUserRange(space, ctx.bounds, mm.argStart, len);
    const nul = r.bytes.indexOf(0);
    // get_mm_proctitle() includes the NUL when it found one.
    return nul < 0 ? r : finish(r.bytes.subarray(0, nul + 1), false, false, undefined);
  }
  return whole;
}

/**
 * `readCmdline` of each task, answered for all of them together where the answer is the common
 * one (argv in one page, ending in NUL): their mm fields, each level of their page walks and
 * their argv pages are read one batch each, so that on memory read by system calls a listing
 * costs a few batches instead of a chain of dependent reads per process, and on any memory no
 * process gets an address space of its own. undefined where `readCmdline` must answer (and
 * report what it could not read).
 */
export function readCmdlines(ctx: KernelContext, tasks: readonly HasMm[]): (ProcessStrings | undefined)[] {
  const found: (ProcessStrings | undefined)[] = tasks.map((t) => (t.mm === 0n ? EMPTY : undefined));
  const format = ctx.kernel.format;
  if (!format) return found;
  const { start, length, at } = mmFields(ctx.layout);
  const users = tasks.flatMap((t, i) => (t.mm !== 0n && isKernelPointer(t.mm, ctx.bounds) ? [i] : []));
  const mms = ctx.kernel.readPacked(
    users.map((i) => tasks[i]!.mm),
    length,
    start,
  );
  const view = viewOf(mms.out);
  const walks: { root: bigint; addr: bigint; length: number }[] = [];
  const whose: number[] = [];
  for (let u = 0; u < users.length; u++) {
    const argv = mms.ok[u] === 1 ? oneArgvPage(ctx, mmAt(view, u * length, at)) : undefined;
    if (argv) {
      walks.push(argv);
      whose.push(users[u]!);
    }
  }
  translateMany(ctx.kernel.mem, format, walks).forEach((landed, k) => {
    const argv = landed?.bytes;
    if (argv === undefined || argv.length !== walks[k]!.length || argv[argv.length - 1] !== 0) return;
    found[whose[k]!] = finish(Buffer.from(argv), false, false, undefined);
  });
  return found;
}

/** The walk to a process's argv when it is non-empty, in user space and within one page. */
function oneArgvPage(
  ctx: KernelContext,
  mm: MmRanges,
): { root: bigint; addr: bigint; length: number } | undefined {
  try {
    const length = mm.argEnd - mm.argStart;
    if (length <= 0n || length > PAGE - (mm.argStart & (PAGE - 1n))) return undefined;
    if (!isUserAddress(mm.argStart, ctx.bounds) || mm.argEnd > ctx.bounds.userEnd) return undefined;
    return { root: ctx.directToPhys(va(mm.pgd)), addr: mm.argStart, length: Number(length) };
  } catch (error) {
    if (!(error instanceof VmsightError)) throw error;
    return undefined;
  }
}

/** The environment: [env_start, env_end), as environ_read() returns it. */
export function readEnviron(ctx: KernelContext, task: HasMm): ProcessStrings {
  if (task.mm === 0n) return EMPTY;
  const mm = readMm(ctx, task.mm);
  if (mm.envStart >= mm.envEnd) return EMPTY;
  const space = ctx.userSpace(checkKernelPointer(mm.pgd, ctx.bounds, `mm ${hex(task.mm)} pgd`));
  return readUserRange(space, ctx.bounds, mm.envStart, mm.envEnd - mm.envStart);
}

/** Where pgd, arg_start, arg_end, env_start and env_end lie, relative to the span read. */
interface MmFields {
  readonly start: number;
  readonly length: number;
  readonly at: readonly [number, number, number, number, number];
}

const mmFieldsCache = new WeakMap<StructLayout, MmFields>();

/** The mm_struct span from pgd to env_end (whichever comes first and last), looked up once per layout. */
function mmFields(L: StructLayout): MmFields {
  const cached = mmFieldsCache.get(L);
  if (cached) return cached;
  const offs = ["pgd", "arg_start", "arg_end", "env_start", "env_end"].map((m) => {
    const o = L.findOffset("mm_struct", m);
    if (o === undefined) {
      throw new VmsightError("E_MEMBER_UNKNOWN", `mm_struct.${m} is needed to read a command line`, {
        hint: `layout source: ${L.source}`,
      });
    }
    return o;
  });
  const start = Math.min(...offs);
  const at = offs.map((o) => o - start) as unknown as MmFields["at"];
  const fields = { start, length: Math.max(...offs) + 8 - start, at };
  mmFieldsCache.set(L, fields);
  return fields;
}

function readMm(ctx: KernelContext, mmPtr: bigint): MmRanges {
  const mm = checkKernelPointer(mmPtr, ctx.bounds, "task mm");
  const { start, length, at } = mmFields(ctx.layout);
  return mmAt(viewOf(ctx.kernel.peek(va(mm + BigInt(start)), length)), 0, at);
}

/** The fields of an mm_struct whose span (see MmFields) starts at byte `from` of `v`. */
function mmAt(v: DataView, from: number, at: MmFields["at"]): MmRanges {
  return {
    pgd: v.getBigUint64(from + at[0], true),
    argStart: v.getBigUint64(from + at[1], true),
    argEnd: v.getBigUint64(from + at[2], true),
    envStart: v.getBigUint64(from + at[3], true),
    envEnd: v.getBigUint64(from + at[4], true),
  };
}

function readUserByte(space: AddressSpace, addr: bigint): number | undefined {
  try {
    return space.readU8(va(addr));
  } catch (error) {
    if (error instanceof FaultError) return undefined;
    throw error;
  }
}

/** Reads page by page so one missing page keeps the pages before it. */
function readUserRange(
  space: AddressSpace,
  bounds: AddressBounds,
  start: bigint,
  length: bigint,
): ProcessStrings {
  if (!isUserAddress(start, bounds) || start + length > bounds.userEnd) {
    throw new GuestDataError(`user range ${hex(start)}+${hex(length)} is outside user space`);
  }
  const truncated = length > BigInt(MAX_PROCESS_STRINGS);
  const end = start + (truncated ? BigInt(MAX_PROCESS_STRINGS) : length);
  const chunks: Buffer[] = [];
  for (let cur = start; cur < end; ) {
    const next = (cur / PAGE + 1n) * PAGE;
    const n = Number((next < end ? next : end) - cur);
    try {
      chunks.push(space.read(va(cur), n));
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      return finish(Buffer.concat(chunks), true, truncated, cur);
    }
    cur += BigInt(n);
  }
  return finish(Buffer.concat(chunks), false, truncated, undefined);
}

function finish(
  bytes: Buffer,
  partial: boolean,
  truncated: boolean,
  faultAddress: bigint | undefined,
): ProcessStrings {
  const strings = decodeGuestStrings(bytes);
  return { bytes, strings, text: strings.join(" "), partial, truncated, faultAddress };
}
