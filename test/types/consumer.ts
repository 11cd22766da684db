/**
 * A program written against the published API, type-checked (not run) by
 * test/unit/library-types.test.ts against the emitted .d.ts, reached as `vmsight` through the
 * package's `exports` map. The @ts-expect-error lines must fail to type-check: if one passed,
 * the type it guards would have gone loose.
 */
import {
  ERROR_CODES,
  type ErrorCode,
  type KernelInfoRow,
  type MapRow,
  type ProcessRow,
  type Vm,
  type VmEvent,
  VmsightError,
  attach,
  openDump,
} from "vmsight";

export async function consumer(socket: string): Promise<void> {
  await using vm = await attach(socket);
  const k: KernelInfoRow = await vm.kernel();
  const slide: `0x${string}` = k.slide;
  const ps: ProcessRow[] = await vm.ps();
  const pid: number = ps[0]?.pid ?? 1;
  const uid: number | null = ps[0]?.uid ?? null;
  const maps: MapRow[] = await vm.maps(pid);
  // @ts-expect-error addresses leave as "0x…" strings, not bigints
  const start: bigint = maps[0]!.start;
  const bytes: Buffer = await vm.read(0xffffffff81000000n, 16);
  await vm.read("0x1000", 8, "physical");
  await vm.read(0x400000, 8, { pid });
  await vm.write(0x1000n, bytes, { cr3: "0x1000" });
  // @ts-expect-error a space is physical, kernel, { cpu }, { pid } or { cr3 }
  await vm.read(0, 1, "user");
  const t = await vm.translate(0xffffffff81000000n, { cpu: 0 });
  const phys: string = t.phys;
  const regs = await vm.regs(0);
  const rip: string | undefined = regs.rip;
  await vm.setRegs(0, { rax: 1n, rbx: "0x2" });
  const state: { status: string; running: boolean } = await vm.pause();
  await vm.resume();
  const status = await vm.status();
  const qemuPid: number = status.qemuPid;
  const killed = await vm.kill(pid, "TERM");
  const outcome: string = killed.outcome;
  for await (const e of vm.events({ types: ["proc", "modules"], comm: "sh" })) {
    const ev: VmEvent = e;
    if (e.type === "load") {
      const base: string = e.base;
      const size: number = e.size;
      void [base, size];
    }
    if (ev.type === "exec") break;
  }
  // @ts-expect-error not an event stream vmsight has
  vm.events({ types: ["everything"] });
  void [slide, uid, start, phys, rip, state, qemuPid, outcome, (await vm.threads())[0]?.tid];
  void [await vm.pstree(), await vm.lsmod(), await vm.pids()];
}

export async function dump(path: string): Promise<Vm> {
  const vm = await openDump(path, { systemMap: "/boot/System.map" });
  try {
    await vm.pause();
  } catch (error) {
    if (error instanceof VmsightError) {
      const code: ErrorCode = error.code;
      if (code === "E_NOT_LIVE") console.log(error.message, error.hint);
    }
  }
  return vm;
}

const codes: readonly ErrorCode[] = ERROR_CODES;
// @ts-expect-error not an error code
const wrong: ErrorCode = "E_NOT_A_CODE";
void [codes, wrong];
