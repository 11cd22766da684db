import type { CliCommand } from "./command.js";

export const serveCommand: CliCommand = {
  name: "serve",
  usage:
    "serve --vm NAME=QMP_SOCKET… | --scan DIR [--socket PATH] [--listen HOST:PORT] [--publish nats://HOST:PORT] [--publish-types all|TYPE,…]",
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
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    process.once("SIGTERM", () => stop.abort());
    // Loaded here: the server pulls in its schema library, WebSocket and NATS clients, which
    // every other command would otherwise pay for at startup.
    const { serveFromCli } = await import("../server/serve.js");
    await serveFromCli(ctx.values, { out: ctx.out, log: ctx.log, signal: stop.signal });
    return 0;
  },
};
