/**
 * `vmsight serve --publish nats://HOST:PORT`: events also go to NATS JetStream, on subject
 * `vmsight.<host>.<vm>.<type>` in a stream it creates when missing. The publisher is a client of
 * the protocol core like any other (it subscribes through the protocol), so it sees exactly what
 * clients see. Publishing waits for each acknowledgement in turn, so events keep their order; a
 * failed publish (NATS restarting, unreachable) is retried with the same message id, so the
 * stream neither loses nor duplicates it, while later events wait behind it in a bounded queue.
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { type JetStreamClient, type NatsConnection, StorageType, connect } from "nats";
import { VmsightError } from "../util/errors.js";
import type { ClientSession, ProtocolCore } from "./core.js";
import { type EventType, PROTOCOL_VERSION } from "./schema.js";

export const STREAM = "VMSIGHT";
/**
 * What `--publish` sends unless `--publish-types` says otherwise: the cheap events. Breakpoints
 * and watches need a client to set them; syscall and switch stop a vCPU on every system call or
 * context switch of every guest served, which a default must not do.
 */
export const DEFAULT_PUBLISHED: readonly EventType[] = [
  "vm.state",
  "process.create",
  "process.exec",
  "process.exit",
  "module.load",
  "module.unload",
];
/** About 30 MB of typical process events: hours of a fork loop's worth while NATS is away. */
export const DEFAULT_MAX_QUEUE = 100_000;
/** Armed by clients (breakpoint.set, memory.set_access), not by subscribing: observed instead. */
const CLIENT_ARMED: readonly EventType[] = ["breakpoint", "memory.access"];
const RETRY_FIRST_MS = 50;
const RETRY_MAX_MS = 2_000;
const CLOSE_GRACE_MS = 5_000;
// A publish that NATS took before going down has no ack coming: give up on it soon and retry.
const PUBLISH_TIMEOUT_MS = 3_000;

export interface PublishOptions {
  readonly url: string;
  readonly types?: readonly EventType[];
  readonly host?: string;
  readonly log?: (line: string) => void;
  /** Events waiting for NATS beyond this are dropped, with a warning. */
  readonly maxQueue?: number;
}

interface Pending {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly msgID: string;
}

/** NATS subject tokens may not hold dots, spaces or wildcards. */
export function token(text: string): string {
  return text.replace(/[.\s*>]/g, "_") || "_";
}

export function subjectOf(host: string, vm: string, type: string): string {
  return `vmsight.${token(host)}.${token(vm)}.${type}`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function connectTo(url: string): Promise<NatsConnection> {
  try {
    // Reconnect forever: a nats-server restart must not end publishing.
    return await connect({
      servers: url.replace(/^nats:\/\//, ""),
      name: "vmsight serve",
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
    });
  } catch (e) {
    throw new VmsightError("E_SERVER", `cannot reach NATS at ${url}: ${messageOf(e)}`, {
      hint: "start nats-server with JetStream (nats-server -js) or fix --publish",
      cause: e,
    });
  }
}

export class NatsPublisher {
  published = 0;
  dropped = 0;
  /** Publishes that failed and were retried. */
  retries = 0;
  private queue: Pending[] = [];
  private pumping: Promise<void> | undefined;
  private session: ClientSession | undefined;
  private id = 1;
  private wildcardRequest = -1;
  private wildcard: string | undefined;
  private sequence = 0;
  private readonly origin = randomUUID();
  private droppedThisOverflow = 0;
  private failingSince: string | undefined;
  private stopped = false;
  private unobserve: (() => void) | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly url: string,
    private readonly host: string,
    private readonly types: readonly EventType[],
    private readonly log: (line: string) => void,
    private readonly maxQueue: number,
  ) {}

  static async start(core: ProtocolCore, opts: PublishOptions): Promise<NatsPublisher> {
    const nc = await connectTo(opts.url);
    const jsm = await nc.jetstreamManager();
    try {
      await jsm.streams.info(STREAM);
    } catch {
      await jsm.streams.add({ name: STREAM, subjects: ["vmsight.>"], storage: StorageType.File });
    }
    const p = new NatsPublisher(
      nc,
      nc.jetstream(),
      opts.url,
      opts.host ?? hostname(),
      opts.types ?? DEFAULT_PUBLISHED,
      opts.log ?? (() => {}),
      opts.maxQueue ?? DEFAULT_MAX_QUEUE,
    );
    await p.attach(core);
    return p;
  }

  /** Events waiting to be acknowledged by JetStream. */
  get queued(): number {
    return this.queue.length;
  }

  private request(method: string, params: object): Promise<void> | undefined {
    return this.session?.receive(JSON.stringify({ jsonrpc: "2.0", id: this.id++, method, params }));
  }

  private async attach(core: ProtocolCore): Promise<void> {
    const session = core.connect((text) => this.onMessage(text));
    this.session = session;
    const armed = CLIENT_ARMED.filter((t) => this.types.includes(t));
    if (armed.length) this.unobserve = core.observe((e) => this.onClientEvent(e, armed));
    await session.receive(
      JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: { protocolVersion: PROTOCOL_VERSION },
      }),
    );
    this.wildcardRequest = this.id;
    await this.request("events.subscribe", { vm: "*", types: ["vm.state"] });
    await Promise.all(
      core.vms
        .list()
        .filter((v) => v.present)
        .map((v) => this.watch(v.name)),
    );
  }

  private async watch(vm: string): Promise<void> {
    const types = this.types.filter((t) => !CLIENT_ARMED.includes(t));
    if (types.length) await this.request("events.subscribe", { vm, types });
  }

  private onClientEvent(e: Readonly<Record<string, unknown>>, armed: readonly EventType[]): void {
    if (!armed.includes(e.type as EventType)) return;
    const { subscription, reply, ...fields } = e as { vm: string; type: string; [k: string]: unknown };
    this.publishRecord(fields);
  }

  private publishRecord(fields: { vm: string; type: string; [k: string]: unknown }): void {
    const record = { ...fields, host: this.host, time: new Date().toISOString() };
    this.enqueue(subjectOf(this.host, fields.vm, fields.type), record);
  }

  private onMessage(text: string): void {
    const m = JSON.parse(text) as {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: { subscription?: string };
      error?: { message: string };
    };
    if (m.error) this.log(`publish: ${m.error.message}`);
    if (m.id === this.wildcardRequest) this.wildcard = m.result?.subscription;
    if (m.method !== "event" || !m.params) return;
    const { vm, type, event, subscription, ...rest } = m.params as {
      vm: string;
      type: string;
      event?: string;
      subscription?: string;
    };
    // APPEARED and VANISHED reach both the "*" subscription and the VM's own: publish them once.
    const membership = event === "APPEARED" || event === "VANISHED";
    if (membership && subscription !== this.wildcard) return;
    if (event === "APPEARED") void this.watch(vm);
    if (!this.types.includes(type as EventType)) return;
    this.publishRecord({ vm, type, ...(event === undefined ? {} : { event }), ...rest });
  }

  private enqueue(subject: string, record: object): void {
    if (this.stopped) return;
    if (this.queue.length >= this.maxQueue) {
      if (this.droppedThisOverflow === 0)
        this.log(
          `publish: WARNING: ${this.maxQueue} events wait for NATS at ${this.url}; newer events are DROPPED until it catches up (is nats-server up?)`,
        );
      this.droppedThisOverflow++;
      this.dropped++;
      return;
    }
    this.queue.push({
      subject,
      data: new TextEncoder().encode(JSON.stringify(record)),
      msgID: `${this.origin}-${this.sequence++}`,
    });
    this.pumping ??= this.pump();
  }

  private async pump(): Promise<void> {
    let wait = RETRY_FIRST_MS;
    for (let next = this.queue[0]; next && !this.stopped; next = this.queue[0]) {
      if (await this.send(next)) {
        this.queue.shift();
        this.published++;
        wait = RETRY_FIRST_MS;
        this.noteDrained();
      } else {
        this.retries++;
        await sleep(wait);
        wait = Math.min(wait * 2, RETRY_MAX_MS);
      }
    }
    this.pumping = undefined;
  }

  /** One attempt; the message id makes JetStream ignore a retry of a publish that did land. */
  private async send(p: Pending): Promise<boolean> {
    try {
      await this.js.publish(p.subject, p.data, { msgID: p.msgID, timeout: PUBLISH_TIMEOUT_MS });
      if (this.failingSince !== undefined)
        this.log(`publish: NATS acknowledges again (failing since ${this.failingSince}); nothing lost`);
      this.failingSince = undefined;
      return true;
    } catch (e) {
      if (this.failingSince === undefined) {
        this.failingSince = new Date().toISOString();
        this.log(
          `publish to ${p.subject} failed: ${messageOf(e)}; retrying, ${this.queue.length} events wait in order`,
        );
      }
      return false;
    }
  }

  private noteDrained(): void {
    if (this.droppedThisOverflow === 0 || this.queue.length > this.maxQueue / 2) return;
    this.log(`publish: caught up; ${this.droppedThisOverflow} events were dropped while the queue was full`);
    this.droppedThisOverflow = 0;
  }

  /** Resolves once everything queued so far is acknowledged by JetStream. */
  async flush(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  /** Gives NATS a few seconds to take what is queued, then says what it did not. */
  async close(graceMs = CLOSE_GRACE_MS): Promise<void> {
    this.unobserve?.();
    await this.session?.close();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise((r) => {
      timer = setTimeout(r, graceMs);
    });
    await Promise.race([this.flush(), late]);
    clearTimeout(timer);
    this.stopped = true;
    if (this.queue.length)
      this.log(`publish: ${this.queue.length} events were never acknowledged by NATS at ${this.url}`);
    await (this.queue.length ? this.nc.close() : this.nc.drain());
  }
}
