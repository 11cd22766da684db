// Kills every guest process whose name (comm) is NAME, from outside the guest.
//   node examples/kill-by-name.mjs QMP_SOCKET NAME [SIGNAL]
import { attach } from "vmsight";

const [socket, name, signal = "KILL"] = process.argv.slice(2);
if (!socket || !name) {
  console.error("usage: kill-by-name.mjs QMP_SOCKET NAME [SIGNAL]");
  process.exit(2);
}
const vm = await attach(socket);
let failed = 0;
try {
  const victims = (await vm.ps()).filter((p) => p.comm === name);
  if (victims.length === 0) console.log(`no process named ${name}`);
  for (const p of victims) {
    const r = await vm.kill(p.pid, signal);
    console.log(`${p.pid} ${r.outcome}`);
    if (!r.expected) failed++;
  }
} finally {
  await vm.close();
}
process.exit(failed > 0 ? 1 : 0);
