import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, GuestDataError, VmsightError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";

/** No kernel list vmsight walks is longer than this; a longer one is corrupt or looping. */
export const MAX_LIST_LENGTH = 1 << 20;

/**
 * Where user and kernel addresses lie on x86-64 under one paging mode. With 4-level paging the
 * kernel half starts at 0xffff800000000000; with 5-level (CR4.LA57, e.g. QEMU's `-cpu max`) at
 * 0xff00000000000000, and the direct map, vmalloc and vmemmap all move below the 4-level start.
 */
export interface AddressBounds {
  readonly levels: 4 | 5;
  /** One past the highest user address: the top of the lower canonical half. */
  readonly userEnd: bigint;
  /** The lowest kernel address: the bottom of the upper canonical half. */
  readonly kernelStart: bigint;
}

const halves = (levels: 4 | 5, vaBits: bigint): AddressBounds =>
  Object.freeze({ levels, userEnd: 1n << (vaBits - 1n), kernelStart: (1n << 64n) - (1n << (vaBits - 1n)) });
const BOUNDS_4LEVEL = halves(4, 48n);
const BOUNDS_5LEVEL = halves(5, 57n);
/** The last page of the address space holds ERR_PTR values (-MAX_ERRNO..-1), never an object. */
const ERR_PTR_START = 0xfffffffffffff000n;

/** The bounds of a 64-bit paging format (`vaBits` 48 or 57, as CR4.LA57 of the vCPU chose). */
export function addressBounds(format: { readonly vaBits: number } | undefined): AddressBounds {
  if (format?.vaBits === 48) return BOUNDS_4LEVEL;
  if (format?.vaBits === 57) return BOUNDS_5LEVEL;
  throw new VmsightError(
    "E_NOT_LINUX64",
    `no x86-64 kernel half in a ${format?.vaBits ?? 0}-bit address space`,
    {
      hint: "attach once the guest kernel runs in 64-bit mode",
    },
  );
}

/** A pointer to a kernel object: in the kernel half, and not an ERR_PTR. */
export function isKernelPointer(p: bigint, bounds: AddressBounds): boolean {
  return p >= bounds.kernelStart && p < ERR_PTR_START;
}

/** A user-space address (NULL included): below the top of the lower half. */
export function isUserAddress(p: bigint, bounds: AddressBounds): boolean {
  return p >= 0n && p < bounds.userEnd;
}

export function checkKernelPointer(p: bigint, bounds: AddressBounds, what: string): VirtAddr {
  if (!isKernelPointer(p, bounds)) throw new GuestDataError(`${what} is not a kernel pointer: ${hex(p)}`);
  return va(p);
}

/** A kernel list that could not be walked to its end: which list, and the node where it broke. */
export class BrokenListError extends GuestDataError {
  constructor(
    readonly list: string,
    readonly at: bigint,
    message: string,
    options: { cause?: unknown } = {},
  ) {
    super(message, options);
  }
}

/**
 * What a walk does with a broken list (a loop, more than `max` entries, a pointer out of the
 * kernel or into unmapped memory). "throw" (the default) raises BrokenListError; "stop" ends the
 * walk with the entries before the break and hands the same error to `warn`. Either way the
 * walk is bounded: guest memory never makes it hang.
 */
export interface ListPolicy {
  readonly onBroken?: "throw" | "stop";
  readonly warn?: (problem: BrokenListError) => void;
  readonly max?: number;
  /** Also require each node's `prev` (the word after `next`) to point back: a list_head, not noise. */
  readonly checkBack?: boolean;
}

/**
 * What a walk reads through: a word of kernel memory (throwing FaultError where nothing is
 * mapped) and the paging mode's kernel half. A KernelContext is one; discovery, which tests
 * candidate offsets on a booting guest, supplies its own.
 */
export interface LinkMemory {
  readU64(addr: bigint): bigint;
  readonly bounds: AddressBounds;
}

function linkMemory(ctx: KernelContext): LinkMemory {
  return { readU64: (a) => ctx.kernel.readU64(va(a)), bounds: ctx.bounds };
}

/**
 * `list_for_each` over bare list_head nodes: yields each node after `head` until the walk
 * returns to it. For rings whose container is not known (yet), e.g. a candidate offset.
 */
export function listForEach(
  mem: LinkMemory,
  head: bigint,
  name: string,
  policy: ListPolicy = {},
): Generator<VirtAddr> {
  const shape: Shape = { end: (v) => v === head, link: (v) => v, entry: (v) => v };
  return boundedWalk(mem, name, head, shape, policy);
}

/**
 * `list_for_each_entry`: yields the address of each structure containing a `list_head` member,
 * starting after `head`, until the walk returns to `head`.
 */
export function listForEachEntry(
  ctx: KernelContext,
  head: VirtAddr,
  struct: string,
  member: string,
  policy: ListPolicy = {},
): Generator<VirtAddr> {
  const offset = BigInt(ctx.layout.offsetof(struct, member));
  const shape: Shape = { end: (v) => v === head, link: (v) => v, entry: (v) => v - offset };
  return boundedWalk(linkMemory(ctx), `${struct}.${member}`, head, shape, policy);
}

/**
 * A NULL-terminated chain of structures, each pointing at the next one from its member at
 * `nextOffset` (`mm->mmap` and `vm_area_struct.vm_next` before 6.1): yields each structure,
 * starting with the one the pointer at `first` names.
 */
export function chainForEach(
  ctx: KernelContext,
  first: VirtAddr,
  name: string,
  nextOffset: number,
  policy: ListPolicy = {},
): Generator<VirtAddr> {
  const back = BigInt(nextOffset);
  const shape: Shape = { end: (v) => v === 0n, link: (v) => v + back, entry: (v) => v };
  return boundedWalk(linkMemory(ctx), name, first, shape, policy);
}

/** How one list shape stores its links: a pointer value `v` read from a link. */
interface Shape {
  /** `v` ends the walk (the head again, or NULL). */
  end(v: bigint): boolean;
  /** Where the pointer after `v` is stored. */
  link(v: bigint): bigint;
  /** The structure `v` stands for. */
  entry(v: bigint): bigint;
}

/** The walk every list shape shares: the pointer stored at `from`, and its successors. */
function* boundedWalk(
  mem: LinkMemory,
  name: string,
  from: bigint,
  shape: Shape,
  policy: ListPolicy,
): Generator<VirtAddr> {
  const max = policy.max ?? MAX_LIST_LENGTH;
  const seen = new Set<bigint>();
  let at = from;
  let v = readLink(mem, name, at, policy);
  while (v !== undefined && !shape.end(v)) {
    const problem = !isKernelPointer(v, mem.bounds)
      ? `${name} next pointer at ${hex(at)} is not a kernel pointer: ${hex(v)}`
      : seen.has(v)
        ? `${name} list loops back to ${hex(v)} (from ${hex(at)}) without reaching its head`
        : seen.size >= max
          ? `${name} list is longer than ${max} entries`
          : policy.checkBack && readLink(mem, name, v + 8n, policy) !== at
            ? `${name} node ${hex(v)} does not point back at ${hex(at)}`
            : undefined;
    if (problem !== undefined) return broken(policy, new BrokenListError(name, at, problem));
    seen.add(v);
    yield va(shape.entry(v));
    at = shape.link(v);
    v = readLink(mem, name, at, policy);
  }
  if (v !== undefined && policy.checkBack && readLink(mem, name, v + 8n, policy) !== at) {
    broken(policy, new BrokenListError(name, at, `${name} head does not point back at ${hex(at)}`));
  }
}

/** The pointer stored at `at`; undefined when it is unreadable and the walk stops there. */
function readLink(mem: LinkMemory, name: string, at: bigint, policy: ListPolicy): bigint | undefined {
  try {
    return mem.readU64(at);
  } catch (error) {
    if (!(error instanceof FaultError)) throw error;
    const message = `${name} list node ${hex(at)} is unreadable`;
    return broken(policy, new BrokenListError(name, at, message, { cause: error }));
  }
}

function broken(policy: ListPolicy, error: BrokenListError): undefined {
  if (policy.onBroken !== "stop") throw error;
  policy.warn?.(error);
  return undefined;
}

/** Reads a NUL-terminated string of at most `max` bytes; no NUL within `max` is not an error (comm is padded). */
export function readFixedString(bytes: Uint8Array, offset: number, max: number): string {
  const slice = bytes.subarray(offset, offset + max);
  const end = slice.indexOf(0);
  return decodeGuestBytes(end < 0 ? slice : slice.subarray(0, end));
}
