/**
 * Every error vmsight raises on purpose carries a stable `code` (for programs) and,
 * where the user can do something about it, a `hint` (for people). The CLI prints
 * `message` and `hint` on one or two lines and never a stack trace for these.
 */
export class VmsightError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, options: { hint?: string; cause?: unknown } = {}) {
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
  constructor(code: string, message: string, options: { hint?: string; cause?: unknown } = {}) {
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
