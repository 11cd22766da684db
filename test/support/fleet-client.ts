/**
 * A protocol client in a process of its own, for tests that run several clients at once and
 * kill one: `node fleet-client.js URL PLAN`, where PLAN is JSON, either
 *   {"subscribe": {…events.subscribe params}}: prints {"subscribed": ID}, then {"event": params}
 *     for every event notification and {"ended": params} if the subscription ends;
 *   {"poll": [{"method": M, "params": P}, …], "everyMs": N}: calls each in turn, again and
 *     again, N ms apart, printing {"method", "params", "result"} or {"method", "params", "error"}.
 * One JSON object a line on stdout; it exits when the server closes the connection.
 */
import { WebSocket } from "ws";

interface Plan {
  readonly subscribe?: Record<string, unknown>;
  readonly poll?: readonly { method: string; params: unknown }[];
  readonly everyMs?: number;
}

interface Message {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: unknown;
  error?: unknown;
}

const [url, planText] = process.argv.slice(2);
const plan = JSON.parse(planText ?? "{}") as Plan;
const print = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

const ws = new WebSocket(url ?? "");
const waiting = new Map<number, (m: Message) => void>();
let nextId = 1;
ws.on("message", (data) => {
  const m = JSON.parse(String(data)) as Message;
  if (m.method === "event") print({ event: m.params });
  else if (m.method === "subscription.ended") print({ ended: m.params });
  else if (typeof m.id === "number") waiting.get(m.id)?.(m);
});
ws.on("close", () => process.exit(0));
ws.on("error", (e) => {
  print({ failed: String(e) });
  process.exit(1);
});

function call(method: string, params: unknown): Promise<Message> {
  const id = nextId++;
  return new Promise((resolve) => {
    waiting.set(id, (m) => {
      waiting.delete(id);
      resolve(m);
    });
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  });
}

ws.once("open", async () => {
  const init = await call("initialize", { protocolVersion: 1, client: "fleet-client" });
  if (init.error) throw new Error(JSON.stringify(init.error));
  if (plan.subscribe) {
    const r = await call("events.subscribe", plan.subscribe);
    print(r.error ? { error: r.error } : { subscribed: (r.result as { subscription: string }).subscription });
    return;
  }
  for (;;) {
    for (const c of plan.poll ?? []) {
      const r = await call(c.method, c.params);
      print({ method: c.method, params: c.params, ...(r.error ? { error: r.error } : { result: r.result }) });
    }
    await new Promise((r) => setTimeout(r, plan.everyMs ?? 200));
  }
});
