/**
 * The page's only data source: JSON-RPC 2.0 over the server's WebSocket (docs/protocol.md).
 * The socket authenticates with the session cookie. When it drops, every pending call fails,
 * the page is told, and the client dials again (backing off to 5 s) until the server is back;
 * then `onOpen` runs again so the page can subscribe anew.
 */
import type { RpcFailure, VmEvent } from "./types.js";

type Pending = { resolve: (v: unknown) => void; reject: (e: RpcFailure) => void; method: string };

/** A call with no answer by then fails with a message rather than leaving a view waiting forever. */
const CALL_TIMEOUT_MS = 120_000;

export type Connection = "connecting" | "open" | "closed";

export class RpcClient {
  private ws: WebSocket | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private retryMs = 500;
  state: Connection = "connecting";

  constructor(
    private readonly url: string,
    private readonly hooks: {
      onOpen: () => void;
      onState: (state: Connection) => void;
      onEvent: (e: VmEvent) => void;
      onEnded: (subscription: string, error: RpcFailure | undefined) => void;
    },
  ) {
    this.dial();
  }

  private dial(): void {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 500;
      void this.call("initialize", { protocolVersion: 1, client: "vmsight dashboard" }).then(
        () => {
          this.setState("open");
          this.hooks.onOpen();
        },
        () => ws.close(),
      );
    };
    ws.onmessage = (m) => this.receive(String(m.data));
    ws.onclose = () => {
      this.ws = undefined;
      for (const [, p] of this.pending)
        p.reject({ message: "disconnected from the server", method: p.method });
      this.pending.clear();
      this.setState("closed");
      setTimeout(() => this.dial(), this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 5000);
    };
  }

  private setState(state: Connection): void {
    if (this.state === state) return;
    this.state = state;
    this.hooks.onState(state);
  }

  private receive(text: string): void {
    let msg: {
      id?: number;
      method?: string;
      params?: Record<string, unknown>;
      result?: unknown;
      error?: { code: number; message: string; data?: { code?: string; hint?: string } };
    };
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.method === "event" && msg.params) this.hooks.onEvent(msg.params as unknown as VmEvent);
    else if (msg.method === "subscription.ended" && msg.params) {
      const p = msg.params as { subscription: string; error?: RpcFailure };
      this.hooks.onEnded(p.subscription, p.error);
    } else if (typeof msg.id === "number") this.settle(msg.id, msg);
  }

  private settle(
    id: number,
    msg: { result?: unknown; error?: { message: string; data?: { code?: string; hint?: string } } },
  ): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (msg.error) {
      p.reject({
        method: p.method,
        message: msg.error.message,
        ...(msg.error.data?.code ? { code: msg.error.data.code } : {}),
        ...(msg.error.data?.hint ? { hint: msg.error.data.hint } : {}),
      });
    } else p.resolve(msg.result);
  }

  call<T>(method: string, params: unknown = {}): Promise<T> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN)
      return Promise.reject({ method, message: "not connected to the server" } satisfies RpcFailure);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id))
          reject({ method, message: `no answer from the server in ${CALL_TIMEOUT_MS / 1000} s` });
      }, CALL_TIMEOUT_MS);
      const done =
        <A extends unknown[]>(f: (...a: A) => void) =>
        (...a: A) => {
          clearTimeout(timer);
          f(...a);
        };
      this.pending.set(id, { resolve: done(resolve as (v: unknown) => void), reject: done(reject), method });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }
}

/** One line for a failed call, as the page shows it. */
export function describeFailure(e: unknown): string {
  if (typeof e === "object" && e !== null && "message" in e) {
    const f = e as RpcFailure;
    return `${f.method ? `${f.method}: ` : ""}${f.message}${f.code ? ` (${f.code})` : ""}${f.hint ? ` — ${f.hint}` : ""}`;
  }
  return String(e);
}
