/**
 * `vmsight serve`: the VM registry, the protocol core, the WebSocket listeners and the optional
 * NATS publisher, put together and run until a signal. The VM factory is injected (the library's
 * attached Vm by default; tests give a fake).
 */
import { join } from "node:path";
import { UsageError } from "../util/errors.js";
import { privateDir } from "../util/private-dir.js";
import { announce } from "./announce.js";
import type { OpenVm } from "./backend.js";
import { ProtocolCore } from "./core.js";
import { DEFAULT_WEB_DIR } from "./http.js";
import { openLibVm } from "./lib-vm.js";
import { DEFAULT_PUBLISHED, NatsPublisher } from "./nats.js";
import { EVENT_TYPES, type EventType } from "./schema.js";
import { userToken } from "./token.js";
import { VmRegistry } from "./vms.js";
import { listen } from "./ws.js";

export interface ServeOptions {
  readonly vms: readonly string[];
  readonly scan: readonly string[];
  readonly socket?: string | undefined;
  readonly listen?: string | undefined;
  readonly publish?: string | undefined;
  readonly publishTypes?: string | undefined;
  readonly open?: OpenVm;
  readonly out: (line: string) => void;
  readonly log: (line: string) => void;
  readonly signal: AbortSignal;
  /** The bundled dashboard; the package's own by default. */
  readonly webDir?: string;
}

/** In vmsight's private directory: one that another user planted is refused, not trusted. */
export function defaultSocketPath(): string {
  return join(privateDir(), "serve.sock");
}

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535)
    throw new UsageError(`--listen wants HOST:PORT or PORT, got "${text}"`, "e.g. --listen 127.0.0.1:7000");
  return { host: m[1] || m[2] || "127.0.0.1", port };
}

export function parseVm(text: string): { name: string; qmp: string } {
  const i = text.indexOf("=");
  if (i <= 0 || i === text.length - 1) throw new UsageError(`--vm wants NAME=QMP_SOCKET, got "${text}"`);
  return { name: text.slice(0, i), qmp: text.slice(i + 1) };
}

export function parseTypes(text: string | undefined): readonly EventType[] {
  if (text === undefined) return DEFAULT_PUBLISHED;
  if (text.trim() === "all") return EVENT_TYPES;
  const types = text.split(",").map((t) => t.trim());
  const bad = types.filter((t) => !(EVENT_TYPES as readonly string[]).includes(t));
  if (bad.length)
    throw new UsageError(
      `unknown event type ${bad.join(", ")}`,
      `--publish-types takes "all" or a comma-separated list of ${EVENT_TYPES.join(", ")}`,
    );
  return types as EventType[];
}

export async function serve(opts: ServeOptions): Promise<void> {
  const vms = opts.vms.map(parseVm);
  const tcp = opts.listen === undefined ? undefined : parseListen(opts.listen);
  const types = parseTypes(opts.publishTypes);
  if (vms.length === 0 && opts.scan.length === 0) {
    throw new UsageError("serve needs VMs", "give --vm NAME=QMP_SOCKET (repeatable) or --scan DIR");
  }
  const registry = new VmRegistry(opts.open ?? openLibVm);
  for (const v of vms) registry.follow(v.name, v.qmp);
  for (const d of opts.scan) registry.scan(d);
  const core = new ProtocolCore(registry);
  const server = await listen(core, {
    unixPath: opts.socket ?? defaultSocketPath(),
    ...(tcp ? { tcp, webDir: opts.webDir ?? DEFAULT_WEB_DIR, token: userToken() } : {}),
    onShed: () => opts.log("serve: a client stopped reading and was disconnected"),
  });
  // The WebSocket URL stays first (programs read it); the dashboard's comes next.
  const [first, ...rest] = server.urls;
  for (const url of [first, server.dashboard, ...rest]) if (url !== undefined) opts.out(url);
  // So that `vmsight ps` and friends for these guests come here instead of to their QMP sockets.
  const unixUrl = server.urls.find((u) => u.startsWith("ws+unix:"));
  const announced = unixUrl ? announce(unixUrl, () => registry.list().filter((v) => v.present)) : undefined;
  const offChange = registry.onChange(() => announced?.update());
  const publisher = opts.publish
    ? await NatsPublisher.start(core, { url: opts.publish, types, log: opts.log })
    : undefined;
  if (publisher) opts.log(`serve: publishing ${types.join(", ")} to ${opts.publish}`);
  await new Promise<void>((resolve) => {
    if (opts.signal.aborted) resolve();
    opts.signal.addEventListener("abort", () => resolve(), { once: true });
  });
  offChange();
  announced?.remove();
  await publisher?.close();
  await server.close();
  await core.close();
  await registry.close();
}

/** The CLI's entry: its parsed option values (repeatable ones as arrays) and its output. */
export function serveFromCli(
  values: Readonly<Record<string, unknown>>,
  io: { out: (line: string) => void; log: (line: string) => void; signal: AbortSignal },
): Promise<void> {
  const list = (v: unknown) => (Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : []);
  const text = (v: unknown) => (typeof v === "string" ? v : undefined);
  return serve({
    vms: list(values.vm),
    scan: list(values.scan),
    socket: text(values.socket),
    listen: text(values.listen),
    publish: text(values.publish),
    publishTypes: text(values["publish-types"]),
    ...io,
  });
}
