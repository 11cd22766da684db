/** A client of the protocol core made of strings: what it sent, what came back. */
import type { ClientSession, ProtocolCore } from "../../src/server/core.js";

export interface Reply {
  readonly jsonrpc: "2.0";
  readonly id?: string | number | null;
  readonly result?: Record<string, unknown>;
  readonly error?: { code: number; message: string; data?: Record<string, unknown> };
  readonly method?: string;
  readonly params?: Record<string, unknown>;
}

export class CoreClient {
  readonly received: Reply[] = [];
  readonly session: ClientSession;
  private nextId = 1;
  constructor(core: ProtocolCore) {
    this.session = core.connect((text) => this.received.push(JSON.parse(text) as Reply));
  }

  /** Sends a request and resolves with its reply. */
  async call(method: string, params?: unknown): Promise<Reply> {
    const id = this.nextId++;
    await this.session.receive(
      JSON.stringify({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) }),
    );
    const reply = this.received.find((r) => r.id === id);
    if (!reply) throw new Error(`no reply to ${method}`);
    return reply;
  }

  async ok(method: string, params?: unknown): Promise<Record<string, unknown>> {
    const r = await this.call(method, params);
    if (r.error) throw new Error(`${method}: ${r.error.message}`);
    return r.result ?? {};
  }

  async init(): Promise<this> {
    await this.ok("initialize", { protocolVersion: 1 });
    return this;
  }

  events(): Record<string, unknown>[] {
    return this.received.filter((r) => r.method === "event").map((r) => r.params ?? {});
  }
}

/**
 * Resolves once `cond()` holds, checking after each turn of the event loop and, as turns add
 * up, after short sleeps so sockets get their chance; gives up after `limitMs` (a bound, not a
 * timing assertion).
 */
export async function until(cond: () => boolean, what: string, limitMs = 30_000): Promise<void> {
  const end = Date.now() + limitMs;
  for (let turn = 0; Date.now() < end; turn++) {
    if (cond()) return;
    await new Promise((r) => (turn < 1000 ? setImmediate(r) : setTimeout(r, 2)));
  }
  if (cond()) return;
  throw new Error(`never happened: ${what}`);
}
