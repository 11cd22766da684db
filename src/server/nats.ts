/**
 * `vmsight serve --publish nats://HOST:PORT`: every event also goes to NATS JetStream, on
 * subject `vmsight.<host>.<vm>.<type>` in a stream it creates when missing. The publisher is a
 * client of the protocol core like any other (it subscribes through the protocol), so it sees
 * exactly what clients see. Publishing waits for each acknowledgement in turn, so events keep
 * their order; the queue is bounded and counts what it had to drop.
 */
import { hostname } from "node:os";
import { type JetStreamClient, type NatsConnection, StorageType, connect } from "nats";
import type { ClientSession, ProtocolCore } from "./core.js";
import { type EventType, PROTOCOL_VERSION } from "./schema.js";

export const STREAM = "VMSIGHT";
export const DEFAULT_PUBLISHED: readonly EventType[] = [
  "vm.state",
  "process.create",
  "process.exec",
  "process.exit",
  "module.load",
  "module.unload",
];
const MAX_QUEUE = 100_000;

export interface PublishOptions {
  readonly url: string;
  readonly types?: readonly EventType[];
  readonly host?: string;
  readonly log?: (line: string) => void;
}

/** NATS subject tokens may not hold dots, spaces or wildcards. */
export function token(text: string): string {
  return text.replace(/[.\s*>]/g, "_") || "_";
}

export function subjectOf(host: string, vm: string, type: string): string {
  return `vmsight.${token(host)}.${token(vm)}.${type}`;
}

export class NatsPublisher {
  published = 0;
  dropped = 0;
  private queue: { subject: string; data: Uint8Array }[] = [];
  private pumping: Promise<void> | undefined;
  private session: ClientSession | undefined;
  private id = 1;
  private wildcardRequest = -1;
  private wildcard: string | undefined;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly host: string,
    private readonly types: readonly EventType[],
    private readonly log: (line: string) => void,
  ) {}

  static async start(core: ProtocolCore, opts: PublishOptions): Promise<NatsPublisher> {
    const nc = await connect({ servers: opts.url.replace(/^nats:\/\//, ""), name: "vmsight serve" });
    const jsm = await nc.jetstreamManager();
    try {
      await jsm.streams.info(STREAM);
    } catch {
      await jsm.streams.add({ name: STREAM, subjects: ["vmsight.>"], storage: StorageType.File });
    }
    const p = new NatsPublisher(
      nc,
      nc.jetstream(),
      opts.host ?? hostname(),
      opts.types ?? DEFAULT_PUBLISHED,
      opts.log ?? (() => {}),
    );
    await p.attach(core);
    return p;
  }

  private request(method: string, params: object): Promise<void> | undefined {
    return this.session?.receive(JSON.stringify({ jsonrpc: "2.0", id: this.id++, method, params }));
  }

  private async attach(core: ProtocolCore): Promise<void> {
    const session = core.connect((text) => this.onMessage(text));
    this.session = session;
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
    await this.request("events.subscribe", { vm, types: this.types });
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
    if (this.queue.length >= MAX_QUEUE) {
      this.dropped++;
      return;
    }
    const record = {
      vm,
      type,
      ...(event === undefined ? {} : { event }),
      ...rest,
      host: this.host,
      time: new Date().toISOString(),
    };
    this.queue.push({
      subject: subjectOf(this.host, vm, type),
      data: new TextEncoder().encode(JSON.stringify(record)),
    });
    this.pumping ??= this.pump();
  }

  private async pump(): Promise<void> {
    for (let next = this.queue.shift(); next; next = this.queue.shift()) {
      try {
        await this.js.publish(next.subject, next.data);
        this.published++;
      } catch (e) {
        this.dropped++;
        this.log(`publish to ${next.subject} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.pumping = undefined;
  }

  /** Resolves once everything queued so far is acknowledged by JetStream. */
  async flush(): Promise<void> {
    while (this.pumping) await this.pumping;
  }

  async close(): Promise<void> {
    await this.session?.close();
    await this.flush();
    await this.nc.drain();
  }
}
