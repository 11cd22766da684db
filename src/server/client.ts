/**
 * A client of `vmsight serve`'s protocol: JSON-RPC 2.0 over one WebSocket, the handshake done
 * on connect. It knows methods only by name; failures come back as VmsightErrors carrying the
 * server's code (data.code), or E_SERVER for what the protocol itself refused.
 */
import { WebSocket } from "ws";
import { ERROR_CODES, type ErrorCode, VmsightError } from "../util/errors.js";
import { PROTOCOL_VERSION } from "./schema.js";

type Params = Record<string, unknown>;
type Listener = (params: Params) => void;

interface Pending {
  readonly method: string;
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

interface ErrorReply {
  readonly code: number;
  readonly message: string;
  readonly data?: { code?: unknown; hint?: unknown };
}

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private lost: VmsightError | undefined;

  private constructor(
    private readonly ws: WebSocket,
    private readonly where: string,
  ) {
    ws.on("message", (data) => this.receive(String(data)));
    ws.on("close", () => this.fail("the server closed the connection"));
    ws.on("error", (e) => this.fail(e.message));
  }

  /** Connects to a `ws://…?token=` or `ws+unix://PATH` URL and does the version handshake. */
  static async connect(url: string): Promise<RpcClient> {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", (e) =>
        reject(
          new VmsightError("E_SERVER", `cannot reach vmsight serve at ${url}: ${e.message}`, {
            hint: "is the server running? `vmsight serve --vm NAME=QMP_SOCKET` starts one",
          }),
        ),
      );
    });
    const client = new RpcClient(ws, url);
    await client.call("initialize", { protocolVersion: PROTOCOL_VERSION });
    return client;
  }

  call<T = Params>(method: string, params?: Params): Promise<T> {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { method, resolve: resolve as (r: unknown) => void, reject });
      this.ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, ...(params ? { params } : {}) }));
    });
  }

  /** Calls `listener` with the params of each `method` notification; returns its removal. */
  on(method: string, listener: Listener): () => void {
    const set = this.listeners.get(method) ?? new Set<Listener>();
    this.listeners.set(method, set);
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Called once if the connection goes while the client is open. */
  onClose(listener: (error: VmsightError) => void): void {
    this.ws.once("close", () => listener(this.lost ?? this.lostError("the server closed the connection")));
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => this.ws.once("close", () => resolve()));
    this.lost ??= new VmsightError("E_CLOSED", "the connection to vmsight serve is closed");
    this.ws.close();
    await closed;
  }

  private receive(text: string): void {
    let msg: { id?: unknown; result?: unknown; error?: ErrorReply; method?: unknown; params?: Params };
    try {
      msg = JSON.parse(text);
    } catch {
      return; // the server only sends JSON; a stray frame is not worth dropping the connection
    }
    if (typeof msg.method === "string") {
      for (const l of this.listeners.get(msg.method) ?? []) l(msg.params ?? {});
      return;
    }
    const pending = typeof msg.id === "number" ? this.pending.get(msg.id) : undefined;
    if (!pending) return;
    this.pending.delete(msg.id as number);
    if (msg.error) pending.reject(replyError(pending.method, msg.error));
    else pending.resolve(msg.result);
  }

  private lostError(reason: string): VmsightError {
    return new VmsightError("E_SERVER", `lost vmsight serve (${this.where}): ${reason}`, {
      hint: "the server stopped or dropped this client; run the command again",
    });
  }

  private fail(reason: string): void {
    this.lost ??= this.lostError(reason);
    for (const p of this.pending.values()) p.reject(this.lost);
    this.pending.clear();
  }
}

/** A vmsight failure keeps its code and hint; a protocol refusal becomes E_SERVER. */
function replyError(method: string, e: ErrorReply): VmsightError {
  const code = e.data?.code;
  const hint = typeof e.data?.hint === "string" ? { hint: e.data.hint } : {};
  if (typeof code === "string" && (ERROR_CODES as readonly string[]).includes(code))
    return new VmsightError(code as ErrorCode, e.message, hint);
  return new VmsightError("E_SERVER", `vmsight serve refused ${method}: ${e.message}`, hint);
}
