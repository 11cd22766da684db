import type { CliCommand } from "./command.js";

type ServeFromCli = (
  values: Readonly<Record<string, unknown>>,
  io: { out: (line: string) => void; log: (line: string) => void; signal: AbortSignal },
) => Promise<void>;

/**
 * The server is a peer renderer of the CLI, which scripts/check-layers.ts keeps from importing
 * it; the CLI only launches it, through this path, loaded at run time.
 */
const SERVER = "../server/serve.js";

export const serveCommand: CliCommand = {
  name: "serve",
  usage:
    "serve --vm NAME=QMP_SOCKET… | --scan DIR [--socket PATH] [--listen HOST:PORT] [--publish nats://HOST:PORT]",
  summary: "serve VMs over a KVMi-style JSON-RPC protocol on WebSocket (docs/protocol.md)",
  options: {
    vm: { type: "string", multiple: true },
    scan: { type: "string", multiple: true },
    socket: { type: "string" },
    listen: { type: "string" },
    publish: { type: "string" },
    "publish-types": { type: "string" },
  },
  needsTarget: false,
  async run(ctx) {
    const { serveFromCli } = (await import(SERVER)) as { serveFromCli: ServeFromCli };
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    process.once("SIGTERM", () => stop.abort());
    await serveFromCli(ctx.values, { out: ctx.out, log: ctx.log, signal: stop.signal });
    return 0;
  },
};
