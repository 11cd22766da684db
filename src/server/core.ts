/**
 * The protocol core of `vmsight serve`: JSON-RPC 2.0 text in, JSON-RPC text out, through a
 * `send` callback per client. It never touches a socket (transports are thin files around it,
 * as in esbuild's JS API), so every error path is a unit test with strings.
 * A bad message gets one error reply and changes nothing else. Each client owns its
 * subscriptions, breakpoints and watches; closing the client ends them all.
 */
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { isVmsightError } from "../util/errors.js";
import type { EventRecord, EventRequest, ServedVm } from "./backend.js";
import { handlersFor } from "./handlers.js";
import {
  type EventType,
  MAX_MESSAGE_BYTES,
  METHODS,
  type MethodName,
  REQUEST,
  RPC_ERRORS,
} from "./schema.js";

export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
  }
}

export interface VmEntry {
  readonly name: string;
  readonly qmp: string;
  readonly present: boolean;
}

/** The VMs a server knows: from --vm, from --scan, or a test's fakes. */
export interface VmDirectory {
  list(): VmEntry[];
  /** Opens the VM on first use; throws RpcError UNKNOWN_VM for names it does not have. */
  get(name: string): Promise<ServedVm>;
  onChange(listener: (name: string, present: boolean) => void): () => void;
}

export interface CoreOptions {
  readonly maxMessageBytes?: number;
  /** Requests one client may have in flight before further ones are refused. */
  readonly maxInFlight?: number;
  readonly serverName?: string;
}

const envelope = TypeCompiler.Compile(REQUEST);
const validators = new Map(
  Object.entries(METHODS).map(([name, spec]) => [name, TypeCompiler.Compile(spec.params)]),
);

const RECORD_TYPES: Record<string, EventType> = {
  create: "process.create",
  exec: "process.exec",
  exit: "process.exit",
  load: "module.load",
  unload: "module.unload",
  syscall: "syscall",
  switch: "switch",
  break: "breakpoint",
  watch: "memory.access",
  state: "vm.state",
};

/** The library's watch records name the gdb stop (watch, rwatch, awatch); clients asked in these words. */
const ACCESS_WORDS: Readonly<Record<string, string>> = { watch: "write", rwatch: "read", awatch: "access" };

function accessWord(access: unknown): { access?: string } {
  const word = typeof access === "string" ? ACCESS_WORDS[access] : undefined;
  return word === undefined ? {} : { access: word };
}

/** What each protocol event type needs the library to arm. */
const KIND_OF: Record<EventType, EventRequest["types"][number] | undefined> = {
  "vm.state": "state",
  breakpoint: undefined,
  "memory.access": undefined,
  "process.create": "proc",
  "process.exec": "proc",
  "process.exit": "proc",
  "module.load": "modules",
  "module.unload": "modules",
  syscall: "syscalls",
  switch: "switch",
};

export function kindsFor(types: readonly EventType[]): EventRequest["types"] {
  return [...new Set(types.map((t) => KIND_OF[t]).filter((k) => k !== undefined))];
}

export class ProtocolCore {
  readonly clients = new Set<ClientSession>();
  readonly maxMessageBytes: number;
  readonly maxInFlight: number;
  readonly serverName: string;
  private readonly unlisten: () => void;
  private readonly observers = new Set<(event: Readonly<Record<string, unknown>>) => void>();

  constructor(
    readonly vms: VmDirectory,
    opts: CoreOptions = {},
  ) {
    this.maxMessageBytes = opts.maxMessageBytes ?? MAX_MESSAGE_BYTES;
    this.maxInFlight = opts.maxInFlight ?? 4096;
    this.serverName = opts.serverName ?? "vmsight";
    this.unlisten = vms.onChange((name, present) => {
      for (const c of this.clients) c.vmChanged(name, present);
    });
  }

  /**
   * Sees every event any client is sent. Breakpoints and watches are armed by clients, not by
   * subscribing, so this is how the NATS publisher sees theirs.
   */
  observe(listener: (event: Readonly<Record<string, unknown>>) => void): () => void {
    this.observers.add(listener);
    return () => this.observers.delete(listener);
  }

  /** @internal */
  observed(event: Readonly<Record<string, unknown>>): void {
    for (const o of this.observers) o(event);
  }

  /** A new client; `send` takes each outgoing message as JSON text. */
  connect(send: (text: string) => void): ClientSession {
    const client = new ClientSession(this, send);
    this.clients.add(client);
    return client;
  }

  async close(): Promise<void> {
    this.unlisten();
    await Promise.all([...this.clients].map((c) => c.close()));
  }
}

export interface Subscription {
  readonly id: string;
  readonly vm: string;
  readonly types: ReadonlySet<EventType>;
  /** Breakpoint events hold the vCPU until breakpoint.reply or this many ms. */
  readonly replyMs: number | undefined;
  /** memory.set_access execute: breakpoint records are reported as memory.access. */
  readonly as: EventType | undefined;
  iterator: AsyncIterator<EventRecord> | undefined;
  closed: boolean;
}

interface Held {
  readonly respond: NonNullable<EventRecord["respond"]>;
  readonly timer: NodeJS.Timeout;
}

export class ClientSession {
  initialized = false;
  closed = false;
  inFlight = 0;
  readonly subscriptions = new Map<string, Subscription>();
  private readonly held = new Map<string, Held>();
  private readonly handlers: ReturnType<typeof handlersFor>;
  private nextId = 1;

  constructor(
    readonly core: ProtocolCore,
    private readonly sendText: (text: string) => void,
  ) {
    this.handlers = handlersFor(this);
  }

  send(message: object): void {
    if (!this.closed) this.sendText(JSON.stringify({ jsonrpc: "2.0", ...message }));
  }

  notify(method: string, params: object): void {
    this.send({ method, params });
  }

  /** Handles one incoming message; resolves once its reply (if any) is sent. */
  async receive(message: string | Uint8Array): Promise<void> {
    const size = typeof message === "string" ? Buffer.byteLength(message) : message.byteLength;
    if (size > this.core.maxMessageBytes) {
      return this.fail(
        null,
        RPC_ERRORS.INVALID_REQUEST.code,
        `message of ${size} bytes is over the limit of ${this.core.maxMessageBytes}`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(typeof message === "string" ? message : Buffer.from(message).toString("utf8"));
    } catch {
      return this.fail(null, RPC_ERRORS.PARSE_ERROR.code, "the message is not JSON");
    }
    if (Array.isArray(parsed))
      return this.fail(null, RPC_ERRORS.INVALID_REQUEST.code, "batches are not supported");
    if (!envelope.Check(parsed)) {
      const id = idOf(parsed);
      return this.fail(
        id,
        RPC_ERRORS.INVALID_REQUEST.code,
        "not a JSON-RPC 2.0 request",
        problems(envelope.Errors(parsed)),
      );
    }
    const { id, method } = parsed;
    const reply = id !== undefined;
    try {
      const result = await this.dispatch(method, parsed.params ?? {});
      if (reply) this.send({ id, result });
    } catch (error) {
      if (!reply) return;
      const e = toRpcError(error);
      this.send({
        id,
        error: { code: e.code, message: e.message, ...(e.data === undefined ? {} : { data: e.data }) },
      });
    }
  }

  private async dispatch(method: string, params: unknown): Promise<unknown> {
    const validator = validators.get(method);
    if (!validator) throw new RpcError(RPC_ERRORS.METHOD_NOT_FOUND.code, `no method "${method}"`);
    if (this.initialized === (method === "initialize")) {
      throw new RpcError(
        RPC_ERRORS.NOT_INITIALIZED.code,
        this.initialized ? "already initialized" : "initialize first",
      );
    }
    if (!validator.Check(params)) {
      throw new RpcError(RPC_ERRORS.INVALID_PARAMS.code, `bad params for ${method}`, {
        errors: problems(validator.Errors(params)),
      });
    }
    if (this.inFlight >= this.core.maxInFlight) {
      throw new RpcError(
        RPC_ERRORS.TOO_MANY_REQUESTS.code,
        `over ${this.core.maxInFlight} requests in flight`,
      );
    }
    this.inFlight++;
    try {
      const handler = this.handlers[method as MethodName] as (p: unknown) => Promise<unknown>;
      return await handler(params);
    } finally {
      this.inFlight--;
    }
  }

  private fail(id: unknown, code: number, message: string, data?: unknown): void {
    this.send({ id: id ?? null, error: { code, message, ...(data === undefined ? {} : { data }) } });
  }

  newId(prefix: string): string {
    return `${prefix}${this.nextId++}`;
  }

  /** Starts pumping a subscription's records into `event` notifications. */
  subscribe(
    vmName: string,
    vm: ServedVm | undefined,
    req: EventRequest,
    types: readonly EventType[],
    opts: { replyMs?: number | undefined; as?: EventType } = {},
  ): string {
    // A client that left while this request awaited its VM must not leave a stream behind.
    if (this.closed) throw new RpcError(RPC_ERRORS.INTERNAL_ERROR.code, "the connection closed");
    // The iterator first: if the backend refuses, nothing is registered.
    const iterator =
      vm !== undefined && req.types.length > 0 ? vm.events(req)[Symbol.asyncIterator]() : undefined;
    const sub: Subscription = {
      id: this.newId("s"),
      vm: vmName,
      types: new Set(types),
      replyMs: opts.replyMs,
      as: opts.as,
      iterator,
      closed: false,
    };
    this.subscriptions.set(sub.id, sub);
    if (iterator) void this.pump(sub, iterator);
    return sub.id;
  }

  private async pump(sub: Subscription, it: AsyncIterator<EventRecord>): Promise<void> {
    let error: unknown;
    try {
      for (;;) {
        const next = await it.next();
        if (next.done || sub.closed) break;
        this.deliver(sub, next.value);
      }
    } catch (e) {
      error = e;
    }
    if (sub.closed) return;
    this.subscriptions.delete(sub.id);
    sub.closed = true;
    this.notify("subscription.ended", {
      subscription: sub.id,
      vm: sub.vm,
      ...(error ? { error: errorData(error) } : {}),
    });
  }

  private deliver(sub: Subscription, record: EventRecord): void {
    const { respond, type, ...fields } = record;
    const mapped = sub.as ?? RECORD_TYPES[type];
    if (mapped === undefined || !sub.types.has(mapped)) {
      void respond?.({ action: "continue" });
      return;
    }
    const extra = sub.as === "memory.access" ? { access: "execute" } : accessWord(fields.access);
    if (respond && sub.replyMs !== undefined) {
      const event = this.newId("e");
      const timer = setTimeout(() => this.release(event, { action: "continue" }), sub.replyMs);
      this.held.set(event, { respond, timer });
      this.event(sub, mapped, { ...fields, ...extra, reply: { event, deadlineMs: sub.replyMs } });
      return;
    }
    this.event(sub, mapped, { ...fields, ...extra });
    void respond?.({ action: "continue" });
  }

  private event(sub: Subscription, type: EventType, fields: Record<string, unknown>): void {
    const params = { ...fields, vm: sub.vm, type, subscription: sub.id };
    this.notify("event", params);
    this.core.observed(params);
  }

  /** Lets a held vCPU go with `action`; false when it had already gone (deadline, unsubscribe). */
  async release(event: string, action: Parameters<Held["respond"]>[0]): Promise<boolean> {
    const h = this.held.get(event);
    if (!h) return false;
    this.held.delete(event);
    clearTimeout(h.timer);
    await h.respond(action);
    return true;
  }

  async unsubscribe(id: string): Promise<void> {
    const sub = this.subscriptions.get(id);
    if (!sub)
      throw new RpcError(RPC_ERRORS.UNKNOWN_SUBSCRIPTION.code, `no subscription "${id}" on this connection`);
    this.subscriptions.delete(id);
    sub.closed = true;
    await sub.iterator?.return?.();
  }

  vmChanged(name: string, present: boolean): void {
    for (const sub of this.subscriptions.values()) {
      if ((sub.vm === name || sub.vm === "*") && sub.types.has("vm.state")) {
        this.notify("event", {
          vm: name,
          type: "vm.state",
          event: present ? "APPEARED" : "VANISHED",
          subscription: sub.id,
        });
      }
    }
    if (present) return;
    for (const sub of [...this.subscriptions.values()].filter((s) => s.vm === name)) {
      void this.unsubscribe(sub.id).catch(() => {});
      this.notify("subscription.ended", {
        subscription: sub.id,
        vm: name,
        error: { code: "E_GUEST_GONE", message: `VM ${name} has gone` },
      });
    }
  }

  /** The client went away: every held vCPU continues, every subscription and its traps end. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.core.clients.delete(this);
    await Promise.allSettled([...this.held.keys()].map((e) => this.release(e, { action: "continue" })));
    await Promise.allSettled([...this.subscriptions.keys()].map((id) => this.unsubscribe(id)));
  }
}

function idOf(v: unknown): string | number | null {
  if (typeof v !== "object" || v === null) return null;
  const id = (v as { id?: unknown }).id;
  return typeof id === "string" || typeof id === "number" ? id : null;
}

function problems(errors: Iterable<{ path: string; message: string }>): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = [];
  for (const e of errors) {
    out.push({ path: e.path || "/", message: e.message });
    if (out.length >= 10) break;
  }
  return out;
}

function errorData(error: unknown): { code: string; message: string; hint?: string } {
  if (isVmsightError(error))
    return { code: error.code, message: error.message, ...(error.hint ? { hint: error.hint } : {}) };
  return { code: "E_INTERNAL", message: error instanceof Error ? error.message : String(error) };
}

function toRpcError(error: unknown): RpcError {
  if (error instanceof RpcError) return error;
  if (isVmsightError(error)) {
    const { message, ...data } = errorData(error);
    return new RpcError(RPC_ERRORS.SERVER_ERROR.code, message, data);
  }
  return new RpcError(RPC_ERRORS.INTERNAL_ERROR.code, error instanceof Error ? error.message : String(error));
}
