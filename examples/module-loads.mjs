// Prints kernel module loads and unloads as they happen, until COUNT of them (or Ctrl-C).
//   node examples/module-loads.mjs QMP_SOCKET [COUNT]
import { attach } from "vmsight";

const [socket, count] = process.argv.slice(2);
if (!socket) {
  console.error("usage: module-loads.mjs QMP_SOCKET [COUNT]");
  process.exit(2);
}
const vm = await attach(socket);
const stop = new AbortController();
process.once("SIGINT", () => stop.abort());
try {
  let seen = 0;
  const events = vm.events({
    types: ["modules"],
    signal: stop.signal,
    onReady: () => console.error("watching module loads; Ctrl-C to stop"),
  });
  for await (const e of events) {
    if (e.type === "load") console.log(`load ${e.name} at ${e.base} size ${e.size}`);
    if (e.type === "unload") console.log(`unload ${e.name} at ${e.base}`);
    if (count !== undefined && ++seen >= Number(count)) break; // removes the traps
  }
} finally {
  await vm.close();
}
