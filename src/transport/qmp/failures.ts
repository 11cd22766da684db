/**
 * The errors a QMP user actually hits, each worded so the fix is obvious.
 * Kept apart from the client so the wording can be tested without sockets.
 */
import { ProtocolError } from "../../util/errors.js";
import { NOT_QMP } from "./codec.js";

export const CONNECT = "E_QMP_CONNECT";
export const CLOSED = "E_QMP_CLOSED";
export const TIMEOUT = "E_QMP_TIMEOUT";
export const COMMAND = "E_QMP_COMMAND";

/** Linux's sockaddr_un.sun_path is 108 bytes with the terminating NUL; Node silently truncates longer paths. */
export const MAX_SOCKET_PATH_BYTES = 107;

const qmpFlag = (path: string) => `-qmp unix:${path},server=on,wait=off`;

/** A QMP error reply; `qmpClass` is QEMU's class ("GenericError", "CommandNotFound", ...). */
export class QmpCommandError extends ProtocolError {
  readonly qmpClass: string;
  constructor(command: string, qmpClass: string, desc: string) {
    const hint =
      qmpClass === "CommandNotFound"
        ? "this QEMU does not have that command (see query-commands)"
        : undefined;
    super(COMMAND, `${command}: ${desc}`, hint === undefined ? {} : { hint });
    this.qmpClass = qmpClass;
  }
}

/** What lstat found at the path, for telling a stale socket from a regular file. */
export type PathKind = "socket" | "file" | "directory" | "other" | "missing";

export function pathTooLong(path: string): ProtocolError {
  const bytes = Buffer.byteLength(path);
  return new ProtocolError(
    CONNECT,
    `QMP socket path is ${bytes} bytes, longer than the ${MAX_SOCKET_PATH_BYTES} a unix socket allows: ${path}`,
    { hint: "use a shorter path (for example under /tmp or /run) for both QEMU's -qmp and vmsight" },
  );
}

/** Turns a failed connect() into a message naming the path and what is (or is not) there. */
export function connectFailure(path: string, cause: NodeJS.ErrnoException, kind: PathKind): ProtocolError {
  const opts = (hint: string) => ({ hint, cause });
  switch (cause.code) {
    case "ENOENT":
      return new ProtocolError(
        CONNECT,
        `no QMP socket at ${path}`,
        opts(`start QEMU with \`${qmpFlag(path)}\``),
      );
    case "ENOTDIR":
      return new ProtocolError(CONNECT, `no QMP socket at ${path}: a parent of it is not a directory`, {
        ...opts(`start QEMU with \`${qmpFlag(path)}\``),
      });
    case "EACCES":
    case "EPERM":
      return new ProtocolError(CONNECT, `permission denied connecting to the QMP socket ${path}`, {
        ...opts(
          "run vmsight as the user QEMU runs as (or root), or make the socket and its directory accessible",
        ),
      });
    case "ECONNREFUSED":
      return refused(path, cause, kind);
    default:
      return new ProtocolError(CONNECT, `cannot connect to the QMP socket ${path}: ${cause.message}`, {
        ...opts(`check that QEMU is running with \`${qmpFlag(path)}\``),
      });
  }
}

function refused(path: string, cause: Error, kind: PathKind): ProtocolError {
  if (kind !== "socket" && kind !== "missing") {
    const what = kind === "other" ? "not a file or directory" : `a ${kind}`;
    return new ProtocolError(CONNECT, `${path} is not a socket (it is ${what})`, {
      hint: `give the path QEMU was started with in \`${qmpFlag("PATH")}\``,
      cause,
    });
  }
  return new ProtocolError(CONNECT, `nothing is listening on the QMP socket ${path}`, {
    hint: "QEMU may have exited and left the socket file behind; restart it",
    cause,
  });
}

export function connectTimeout(path: string, ms: number): ProtocolError {
  return new ProtocolError(CONNECT, `connecting to the QMP socket ${path} did not finish within ${ms} ms`, {
    hint: "the listener's backlog may be full; is QEMU stopped (SIGSTOP) or hung?",
  });
}

export function noGreeting(path: string, ms: number): ProtocolError {
  return new ProtocolError(TIMEOUT, `no QMP greeting from ${path} within ${ms} ms`, {
    hint:
      "QEMU serves one QMP client at a time: another client (vmsight, a QMP shell, libvirt) may be connected " +
      "to this socket. Disconnect it, or give QEMU a second -qmp socket",
  });
}

/** A peer that answered, but not in QMP: a human monitor, a serial console, something else entirely. */
export function notQmpPeer(path: string, err: ProtocolError, line: string): ProtocolError {
  const hmp = /^QEMU .*monitor/.test(line) || line.startsWith("(qemu)");
  const hint = hmp
    ? `${path} is QEMU's human monitor (-monitor); vmsight needs a QMP socket: \`${qmpFlag(path)}\``
    : pretty(line)
      ? "the QMP monitor seems to run with pretty=on; vmsight needs one JSON object per line (pretty=off)"
      : `is ${path} a QMP socket? QEMU needs \`${qmpFlag(path)}\``;
  return new ProtocolError(NOT_QMP, `${path}: ${err.message}`, { hint, cause: err });
}

function pretty(line: string): boolean {
  return line.trim() === "{";
}

export function notGreeting(path: string, line: string, preview: string): ProtocolError {
  const err = new ProtocolError(NOT_QMP, `the first message is not a QMP greeting: ${preview}`);
  return notQmpPeer(path, err, line);
}

export function closedBeforeGreeting(path: string, cause?: unknown): ProtocolError {
  return new ProtocolError(CLOSED, `${path} closed the connection before sending a QMP greeting`, {
    hint: "QEMU may be exiting, or the socket is not a QMP monitor",
    cause,
  });
}

export function closedByPeer(cause?: unknown): ProtocolError {
  return new ProtocolError(CLOSED, "QEMU closed the QMP connection — did it exit?", {
    hint: "check that the QEMU process is still running (it may have crashed, been killed, or been quit)",
    cause,
  });
}

export function closedByUs(): ProtocolError {
  return new ProtocolError(CLOSED, "the QMP client was closed");
}

export function commandTimeout(command: string, ms: number): ProtocolError {
  return new ProtocolError(TIMEOUT, `${command}: no reply from QEMU within ${ms} ms`, {
    hint: "QEMU may be hung or stopped (SIGSTOP), or the command is slow; pass a longer timeout",
  });
}

export function eventTimeout(name: string, ms: number): ProtocolError {
  return new ProtocolError(TIMEOUT, `no ${name} event from QEMU within ${ms} ms`);
}

/** Each caller gets its own error object (own stack), carrying the same code, text and hint. */
export function copyError(err: ProtocolError): ProtocolError {
  const options: { hint?: string; cause?: unknown } = { cause: err.cause };
  if (err.hint !== undefined) options.hint = err.hint;
  return new ProtocolError(err.code, err.message, options);
}
