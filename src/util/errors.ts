/**
 * Every code a VmsightError can carry: the public contract programs match on (the CLI's --json
 * errors, the library, the server). A new failure mode adds its code here, so the list stays whole.
 */
export const ERROR_CODES = [
  "E_ACCEL",
  "E_ALREADY_BOOTED",
  "E_BAD_LENGTH",
  "E_BOOT_TIMEOUT",
  "E_BUILDER",
  "E_BUSY",
  "E_CLOSED",
  "E_CPU",
  "E_DUMP",
  "E_ENGINE_BUSY",
  "E_ENGINE_CLOSED",
  "E_EXITING",
  "E_FAULT",
  "E_GDBSTUB",
  "E_GDB_BAD_ARGUMENT",
  "E_GDB_BAD_REPLY",
  "E_GDB_BAD_TDESC",
  "E_GDB_CLOSED",
  "E_GDB_CONNECT",
  "E_GDB_ERROR",
  "E_GDB_NO_REGISTER",
  "E_GDB_NO_TDESC",
  "E_GDB_TIMEOUT",
  "E_GDB_UNAVAILABLE",
  "E_GDB_UNSUPPORTED",
  "E_GUEST_COMMAND",
  "E_GUEST_DATA",
  "E_GUEST_GONE",
  "E_GUEST_REBOOTED",
  "E_GUEST_STOPPED",
  "E_HOLD_ENDED",
  "E_IMAGE_BUILD",
  "E_INJECT_BUSY",
  "E_INJECT_CALL",
  "E_INJECT_CLEANUP",
  "E_INJECT_PLACE",
  "E_INJECT_REGS",
  "E_INJECT_STOP",
  "E_INJECT_TIMEOUT",
  "E_INTERNAL",
  "E_INTERRUPTED",
  "E_KERNEL_FETCH",
  "E_KERNEL_FORMAT",
  "E_KERNEL_UNKNOWN",
  "E_LENGTH",
  "E_MEMBER_PATH",
  "E_MEMBER_UNKNOWN",
  "E_MEMORY_ACCESS",
  "E_NOT_LINUX64",
  "E_NOT_LIVE",
  "E_NO_BTF",
  "E_NO_KERNEL",
  "E_NO_PROCESS",
  "E_NO_SLIDE",
  "E_PROFILE",
  "E_QEMU_EXITED",
  "E_QEMU_PROCESS",
  "E_QEMU_START",
  "E_QMP_CLOSED",
  "E_QMP_COMMAND",
  "E_QMP_CONNECT",
  "E_QMP_ENCODE",
  "E_QMP_NOT_QMP",
  "E_QMP_TIMEOUT",
  "E_RAM_LAYOUT",
  "E_REFUSED",
  "E_SERIAL",
  "E_SERVER",
  "E_SYMBOL_MAP",
  "E_SYMBOL_UNKNOWN",
  "E_TRAPS_BUSY",
  "E_TRAPS_RELEASED",
  "E_TRAP_HELD",
  "E_TRAP_REFUSED",
  "E_TYPE_INCOMPLETE",
  "E_TYPE_UNKNOWN",
  "E_UNSAFE_DIR",
  "E_USAGE",
  "E_WATCHDOG",
  "E_WATCH_ADDRESS",
  "E_WATCH_LENGTH",
  "E_WATCH_UNMAPPED",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * Every error vmsight raises on purpose carries a stable `code` (for programs) and,
 * where the user can do something about it, a `hint` (for people). The CLI prints
 * `message` and `hint` on one or two lines and never a stack trace for these.
 */
export class VmsightError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }
}

/** Bad command-line input: the CLI exits with status 2. */
export class UsageError extends VmsightError {
  constructor(message: string, hint?: string) {
    super("E_USAGE", message, hint === undefined ? {} : { hint });
  }
}

/** A guest address could not be read or written; `layer` says which translation failed. */
export class FaultError extends VmsightError {
  readonly address: bigint;
  readonly layer: string;
  constructor(layer: string, address: bigint, message: string, options: { cause?: unknown } = {}) {
    super("E_FAULT", `${layer}: ${message} at 0x${address.toString(16)}`, options);
    this.address = address;
    this.layer = layer;
  }
}

/** A peer (QEMU's QMP or gdbstub) broke its protocol, went away, or refused a command. */
export class ProtocolError extends VmsightError {
  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(code, message, options);
  }
}

/** Guest data that violates a bound we rely on (a looping list, an absurd length, ...). */
export class GuestDataError extends VmsightError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super("E_GUEST_DATA", message, options);
  }
}

export function isVmsightError(e: unknown): e is VmsightError {
  return e instanceof VmsightError;
}
