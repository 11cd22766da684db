import { type VirtAddr, hex, va } from "../../util/address.js";
import { FaultError, GuestDataError } from "../../util/errors.js";
import { decodeGuestBytes } from "../../util/guest-text.js";
import type { KernelContext } from "./context.js";

/** No kernel list vmsight walks is longer than this; a longer one is corrupt or looping. */
export const MAX_LIST_LENGTH = 1 << 20;

/** x86-64 kernel pointers live in the upper canonical half. */
export function isKernelPointer(p: bigint): boolean {
  return p >= 0xffff800000000000n && p < 0xfffffffffffff000n;
}

export function checkKernelPointer(p: bigint, what: string): VirtAddr {
  if (!isKernelPointer(p)) throw new GuestDataError(`${what} is not a kernel pointer: ${hex(p)}`);
  return va(p);
}

/**
 * `list_for_each_entry`: yields the address of each structure containing a `list_head` member,
 * starting after `head`. Bounded: a list that revisits a node other than its head (a loop the
 * guest built or tore while running), exceeds `max` entries, or points outside the kernel
 * raises GuestDataError naming the list, instead of hanging.
 */
export function* listForEachEntry(
  ctx: KernelContext,
  head: VirtAddr,
  struct: string,
  member: string,
  max = MAX_LIST_LENGTH,
): Generator<VirtAddr> {
  const offset = BigInt(ctx.layout.offsetof(struct, member));
  const seen = new Set<bigint>();
  let node = readNext(ctx, head, struct, member);
  while (node !== head) {
    if (seen.has(node))
      throw new GuestDataError(
        `${struct}.${member} list loops back to ${hex(node)} without reaching its head`,
      );
    if (seen.size >= max) throw new GuestDataError(`${struct}.${member} list is longer than ${max} entries`);
    seen.add(node);
    yield va(node - offset);
    node = readNext(ctx, node, struct, member);
  }
}

function readNext(ctx: KernelContext, node: VirtAddr, struct: string, member: string): VirtAddr {
  let next: bigint;
  try {
    next = ctx.kernel.readU64(node);
  } catch (error) {
    if (error instanceof FaultError) {
      throw new GuestDataError(`${struct}.${member} list node ${hex(node)} is unreadable`, { cause: error });
    }
    throw error;
  }
  return checkKernelPointer(next, `${struct}.${member} next pointer at ${hex(node)}`);
}

/** Reads a NUL-terminated string of at most `max` bytes; no NUL within `max` is not an error (comm is padded). */
export function readFixedString(bytes: Uint8Array, offset: number, max: number): string {
  const slice = bytes.subarray(offset, offset + max);
  const end = slice.indexOf(0);
  return decodeGuestBytes(end < 0 ? slice : slice.subarray(0, end));
}
