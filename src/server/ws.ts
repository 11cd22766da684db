/**
 * The WebSocket transport: a thin file that wires sockets to the protocol core. It listens on
 * a unix socket (mode 0600) and, only when asked, on TCP, where a client must present the
 * server's random token (`?token=`), or the dashboard's cookie (src/server/http.ts, which also
 * serves the page on that port). A client whose unsent data passes `maxBufferedBytes`
 * (it stopped reading) is disconnected, which ends its subscriptions, so one slow client
 * neither stalls the others nor grows the server's memory.
 */
import { rmSync } from "node:fs";
import { type IncomingMessage, type Server, createServer } from "node:http";
import { type WebSocket, WebSocketServer } from "ws";
import type { ProtocolCore } from "./core.js";
import { dashboardHandler, upgradeAllowed } from "./http.js";
import { newToken } from "./token.js";

export { newToken, tokenMatches } from "./token.js";

/** Frames above this close the connection; between MAX_MESSAGE_BYTES and this, an error reply. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;
export const DEFAULT_MAX_BUFFERED = 8 * 1024 * 1024;

export interface ListenOptions {
  readonly unixPath?: string;
  readonly tcp?: { readonly host: string; readonly port: number };
  readonly token?: string;
  /** Serve the dashboard (the bundled page in this directory) over HTTP on the TCP port. */
  readonly webDir?: string;
  readonly maxBufferedBytes?: number;
  /** Called when a client is disconnected for not reading. */
  readonly onShed?: () => void;
}

export interface Listening {
  /** The unix socket URL (ws+unix://…) and/or the TCP URL with its token. */
  readonly urls: readonly string[];
  readonly token: string;
  readonly tcpPort: number | undefined;
  /** The dashboard's URL with the token, when served. */
  readonly dashboard: string | undefined;
  close(): Promise<void>;
}

export async function listen(core: ProtocolCore, opts: ListenOptions): Promise<Listening> {
  const token = opts.token ?? newToken();
  const maxBuffered = opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED;
  const servers: Server[] = [];
  const wsServers: WebSocketServer[] = [];
  const urls: string[] = [];
  let tcpPort: number | undefined;
  let dashboard: string | undefined;

  const serve = (http: Server, needToken: boolean) => {
    const wss = new WebSocketServer({
      server: http,
      maxPayload: MAX_FRAME_BYTES,
      verifyClient: needToken
        ? (info: { req: IncomingMessage }) => upgradeAllowed(info.req, token)
        : undefined,
    } as ConstructorParameters<typeof WebSocketServer>[0]);
    wss.on("connection", (ws) => attach(core, ws, maxBuffered, opts.onShed));
    wsServers.push(wss);
    servers.push(http);
  };

  if (opts.unixPath !== undefined) {
    const path = opts.unixPath;
    rmSync(path, { force: true });
    const http = createServer();
    await listenOn(http, () => bindPrivately(http, path));
    serve(http, false);
    urls.push(`ws+unix://${path}`);
  }
  if (opts.tcp !== undefined) {
    const { host, port } = opts.tcp;
    const http = createServer(opts.webDir === undefined ? undefined : dashboardHandler(token, opts.webDir));
    await listenOn(http, () => http.listen(port, host));
    const addr = http.address();
    tcpPort = typeof addr === "object" && addr !== null ? addr.port : port;
    serve(http, true);
    const shown = host.includes(":") ? `[${host}]` : host;
    urls.unshift(`ws://${shown}:${tcpPort}/?token=${token}`);
    if (opts.webDir !== undefined) dashboard = `http://${shown}:${tcpPort}/?token=${token}`;
  }
  const heartbeat = setInterval(() => {
    // A client that crashed without closing answers no ping: it goes at the next beat.
    for (const wss of wsServers) {
      for (const ws of wss.clients) {
        if (!answered.has(ws)) ws.terminate();
        answered.delete(ws);
        ws.ping();
      }
    }
  }, 30_000);
  heartbeat.unref();

  return {
    urls,
    token,
    tcpPort,
    dashboard,
    async close() {
      clearInterval(heartbeat);
      for (const wss of wsServers) {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
      }
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      if (opts.unixPath !== undefined) rmSync(opts.unixPath, { force: true });
    },
  };
}

const answered = new WeakSet<WebSocket>();

function attach(core: ProtocolCore, ws: WebSocket, maxBuffered: number, onShed?: () => void): void {
  answered.add(ws);
  const session = core.connect((text) => {
    if (ws.readyState !== ws.OPEN) return;
    if (ws.bufferedAmount > maxBuffered) {
      ws.terminate();
      void session.close();
      onShed?.();
      return;
    }
    ws.send(text);
  });
  ws.on("message", (data: Buffer | Buffer[] | ArrayBuffer) => {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    void session.receive(bytes);
  });
  ws.on("pong", () => answered.add(ws));
  ws.on("close", () => void session.close());
  ws.on("error", () => void session.close());
}

/**
 * Binds under umask 0177, so the socket is 0600 from the moment it exists: a chmod after listen
 * would leave a moment in which another user could connect. Node binds a pipe synchronously inside
 * listen(), so the umask is back before anything else in the process runs.
 */
function bindPrivately(http: Server, path: string): void {
  const old = process.umask(0o177);
  try {
    http.listen(path);
  } finally {
    process.umask(old);
  }
}

function listenOn(server: Server, start: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.once("listening", () => {
      server.off("error", reject);
      resolve();
    });
    start();
  });
}
