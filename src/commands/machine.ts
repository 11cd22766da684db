import { AddressSpace } from "../arch/x86/address-space.js";
import {
  CR3_KPTI_USER,
  type PagingFormat,
  formatFromControlRegisters,
  rootFromRegisters,
} from "../arch/x86/formats.js";
import type { Translation } from "../arch/x86/walk.js";
import type { Machine } from "../qemu/machine.js";
import type { MemoryAccess, Target } from "../qemu/session.js";
import { type PhysAddr, type VirtAddr, hex, pa, va } from "../util/address.js";
import { FaultError, VmsightError } from "../util/errors.js";
import { type Wire, hexText } from "./wire.js";

export interface RegisterRow {
  readonly name: string;
  readonly value: bigint;
}

export async function registerRows(target: Machine, cpu: number): Promise<RegisterRow[]> {
  const regs = await target.registers(cpu);
  return [...regs].map(([name, value]) => ({ name, value }));
}

export interface StatusReport {
  readonly status: string;
  readonly running: boolean;
  readonly qemuPid: number;
  readonly vcpus: number;
  readonly ramSize: bigint;
  readonly memoryPath: string;
  /** How RAM is read: "mapped", "process memory", "file" (an unmapped shared file) or "snapshot". */
  readonly memoryAccess: MemoryAccess;
  readonly ranges: readonly { start: bigint; end: bigint; name: string; writable: boolean }[];
}

export async function statusReport(target: Target): Promise<StatusReport> {
  const state = await target.runState();
  return {
    status: state.status,
    running: state.running,
    qemuPid: target.pid,
    vcpus: target.vcpuCount(),
    ramSize: target.layout.ramSize,
    memoryPath: target.memory.description,
    memoryAccess: target.memoryAccess,
    ranges: target.memory.ranges().map((r) => ({
      start: r.start,
      end: r.start + r.size,
      name: r.name,
      writable: r.writable,
    })),
  };
}

export interface SpaceOptions {
  readonly cpu?: number;
  /** A page-table root given by the user instead of the vCPU's CR3. */
  readonly cr3?: bigint;
}

/**
 * The virtual address space a vCPU sees (or the one an explicit CR3 selects, in the vCPU's paging
 * mode). With KPTI a CPU stopped in user mode has the user half of the PGD pair loaded, which
 * lacks most of the kernel: kernel addresses are then translated through the kernel half.
 */
export async function cpuSpaces(
  target: Machine,
  opts: SpaceOptions,
): Promise<{
  primary: AddressSpace;
  kernelHalf?: AddressSpace;
  cr3: bigint;
  format: PagingFormat | undefined;
}> {
  const regs = await target.registers(opts.cpu ?? 0);
  const get = (n: string) => regs.get(n) ?? 0n;
  const format = formatFromControlRegisters({ cr0: get("cr0"), cr4: get("cr4"), efer: get("efer") });
  const cr3 = opts.cr3 ?? get("cr3");
  if (!format) return { primary: AddressSpace.identity(target.memory), cr3, format };
  const cr = { cr3, cr4: get("cr4") };
  const primary = new AddressSpace(target.memory, format, rootFromRegisters(cr, format));
  if ((cr3 & CR3_KPTI_USER) === 0n) return { primary, cr3, format };
  const kernelHalf = new AddressSpace(target.memory, format, rootFromRegisters(cr, format, true));
  return { primary, kernelHalf, cr3, format };
}

/** Runs `fn` in the primary space, and for kernel addresses retries in the KPTI kernel half. */
function inSpace<T>(
  spaces: { primary: AddressSpace; kernelHalf?: AddressSpace },
  addr: bigint,
  fn: (s: AddressSpace) => T,
): T {
  try {
    return fn(spaces.primary);
  } catch (error) {
    const kernelAddress = addr >> 63n === 1n;
    if (!(error instanceof FaultError) || !spaces.kernelHalf || !kernelAddress) throw error;
    return fn(spaces.kernelHalf);
  }
}

export interface ReadRequestOptions extends SpaceOptions {
  readonly space: "phys" | "virt";
  readonly addr: bigint;
  readonly length: number;
}

export const MAX_CLI_READ = 256 * 1024 * 1024;

export async function readGuest(target: Machine, req: ReadRequestOptions): Promise<Buffer> {
  if (!Number.isSafeInteger(req.length) || req.length <= 0 || req.length > MAX_CLI_READ) {
    throw new VmsightError("E_LENGTH", `length ${req.length} is out of range`, {
      hint: `give a length from 1 to ${MAX_CLI_READ} bytes`,
    });
  }
  if (req.space === "phys") return target.memory.read(pa(req.addr) as PhysAddr, req.length);
  const spaces = await cpuSpaces(target, req);
  return inSpace(spaces, req.addr, (s) => s.read(va(req.addr) as VirtAddr, req.length));
}

export interface WriteRequestOptions extends SpaceOptions {
  readonly space: "phys" | "virt";
  readonly addr: bigint;
  readonly data: Uint8Array;
}

/** Writes guest memory: physical, or virtual through a vCPU's page tables (or `cr3`'s). */
export async function writeGuest(target: Machine, req: WriteRequestOptions): Promise<void> {
  if (req.data.length === 0 || req.data.length > MAX_CLI_READ) {
    throw new VmsightError("E_LENGTH", `a write of ${req.data.length} bytes is out of range`, {
      hint: `write from 1 to ${MAX_CLI_READ} bytes`,
    });
  }
  if (req.space === "phys") {
    target.memory.write(pa(req.addr) as PhysAddr, req.data);
    return;
  }
  const spaces = await cpuSpaces(target, req);
  inSpace(spaces, req.addr, (s) => s.write(va(req.addr) as VirtAddr, req.data));
}

/** Sets registers of one vCPU through the gdbstub (names as `regs` prints them). */
export async function writeRegisters(
  target: Target,
  cpu: number,
  values: ReadonlyMap<string, bigint>,
): Promise<void> {
  const gdb = await target.gdb();
  const threads = await gdb.threads();
  const thread = threads[cpu];
  if (thread === undefined) {
    throw new VmsightError("E_CPU", `no vCPU ${cpu}: the guest has ${threads.length}`, {
      hint: `use a vCPU from 0 to ${threads.length - 1}`,
    });
  }
  await gdb.selectThread("g", thread);
  for (const [name, value] of values) await gdb.writeRegister(name.toLowerCase(), value);
}

export interface TranslationReport extends Translation {
  readonly virtual: bigint;
  readonly cr3: bigint;
  readonly paging: string;
}

export async function translateAddress(
  target: Machine,
  addr: bigint,
  opts: SpaceOptions,
): Promise<TranslationReport> {
  const spaces = await cpuSpaces(target, opts);
  const t = inSpace(spaces, addr, (s) => s.translate(va(addr)));
  return { ...t, virtual: addr, cr3: spaces.cr3, paging: spaces.format?.name ?? "paging off" };
}

/** The text of `vmsight translate`, from the report or the same as vm.translate() returns it. */
export function describeTranslation(t: TranslationReport | Wire<TranslationReport>): string {
  const perms = `${t.user ? "user" : "kernel"} ${t.writable ? "rw" : "ro"}${t.executable ? "x" : ""}`;
  return `${hexText(t.virtual)} -> ${hexText(t.phys)}  (${t.pageSize >= 1 << 20 ? `${t.pageSize >> 20} MiB` : `${t.pageSize >> 10} KiB`} page, ${perms}, ${t.paging}, cr3 ${hexText(t.cr3)})`;
}
