// Lists the guest's processes by memory use: the virtual memory each one has mapped (what
// /proc/PID/stat calls vsize), the largest first.
//   node examples/top-memory.mjs QMP_SOCKET [COUNT]
import { attach } from "vmsight";

const [socket, count = "10"] = process.argv.slice(2);
if (!socket) {
  console.error("usage: top-memory.mjs QMP_SOCKET [COUNT]");
  process.exit(2);
}
const vm = await attach(socket);
try {
  const rows = [];
  for (const p of await vm.ps()) {
    try {
      const maps = await vm.maps(p.pid);
      // [vsyscall] is the kernel's gate page, listed in every process's maps but not its own.
      const own = maps.filter((m) => m.path !== "[vsyscall]");
      const bytes = own.reduce((sum, m) => sum + (BigInt(m.end) - BigInt(m.start)), 0n);
      if (bytes > 0n) rows.push({ pid: p.pid, comm: p.comm, kib: bytes / 1024n });
    } catch (error) {
      if (error.code !== "E_NO_PROCESS") throw error; // it exited since ps
    }
  }
  rows.sort((a, b) => (a.kib === b.kib ? a.pid - b.pid : a.kib > b.kib ? -1 : 1));
  console.log("PID\tVSZ_KIB\tCOMM");
  for (const r of rows.slice(0, Number(count))) console.log(`${r.pid}\t${r.kib}\t${r.comm}`);
} finally {
  await vm.close();
}
