/** GuestOs for a Linux guest: symbols from kallsyms, memory through the kernel's page tables. */
import type { AddressSpace } from "../arch/x86/address-space.js";
import type { KernelInfo } from "../os/linux/kernel.js";
import { listTasks } from "../os/linux/tasks.js";
import { checkKernelPointer, isKernelPointer, isUserAddress } from "../os/linux/walk.js";
import { hex, parseAddress, va } from "../util/address.js";
import { FaultError, VmsightError } from "../util/errors.js";
import { TaskReader } from "./linux-task.js";
import type { GuestOs, ProcessSpace, TaskBrief } from "./types.js";

export class LinuxGuest implements GuestOs {
  readonly tasks: TaskReader;
  private readonly spaces = new Map<bigint, AddressSpace>();
  private readonly pgdOffset: number;

  constructor(readonly k: KernelInfo) {
    this.tasks = new TaskReader(k);
    this.pgdOffset = k.layout.offsetof("mm_struct", "pgd");
  }

  resolveSymbol(spec: string): bigint {
    const m = /^([A-Za-z_.$][\w.$]*)(?:\+(0x[0-9a-fA-F]+|\d+))?$/.exec(spec.trim());
    if (!m) {
      const n = parseAddress(spec);
      if (n !== undefined && n < 1n << 64n) return n;
      throw new VmsightError("E_SYMBOL_UNKNOWN", `"${spec}" is neither a kernel symbol nor an address`, {
        hint: "write a symbol (do_exit, do_exit+0x10) or an address (0xffffffff81000000)",
      });
    }
    const base = this.k.symbols.findAddress(m[1]!);
    if (base === undefined) {
      const near = this.k.symbols.symbols
        .filter((s) => s.name.includes(m[1]!))
        .slice(0, 3)
        .map((s) => s.name);
      throw new VmsightError("E_SYMBOL_UNKNOWN", `no kernel symbol named "${m[1]}"`, {
        hint: near.length > 0 ? `did you mean ${near.join(", ")}?` : "module symbols are not searched",
      });
    }
    return base + (m[2] === undefined ? 0n : BigInt(m[2]));
  }

  symbolize(addr: bigint): string | undefined {
    if (!isKernelPointer(addr, this.k.bounds)) return undefined; // per-CPU symbols are small offsets, not user code
    return this.k.symbols.symbolize(addr) ? this.k.symbols.format(addr) : undefined;
  }

  readKernel(addr: bigint, length: number): Buffer {
    return this.k.kernel.read(va(addr), length);
  }

  currentTask(cpu: number): TaskBrief {
    return this.tasks.brief(this.tasks.current(cpu));
  }

  processSpace(pid: number, addr: bigint, length: number): ProcessSpace {
    if (!isUserAddress(addr, this.k.bounds)) {
      throw new VmsightError("E_WATCH_ADDRESS", `${hex(addr)} is a kernel address`, {
        hint: "leave out the pid to watch kernel addresses",
      });
    }
    const task = listTasks(this.k).find((t) => t.tgid === pid);
    if (!task) throw new VmsightError("E_NO_PROCESS", `no process with pid ${pid} in the guest`);
    if (task.mm === 0n)
      throw new VmsightError("E_NO_PROCESS", `pid ${pid} is a kernel thread: it has no user address space`);
    try {
      this.space(task.mm).read(va(addr), length);
    } catch (error) {
      if (!(error instanceof FaultError)) throw error;
      throw new VmsightError("E_WATCH_UNMAPPED", `${hex(addr)} is not mapped in pid ${pid} (${task.comm})`, {
        hint: `see its mappings with \`vmsight maps ${pid}\``,
        cause: error,
      });
    }
    return { pid, mm: task.mm };
  }

  private space(mm: bigint): AddressSpace {
    let s = this.spaces.get(mm);
    if (!s) {
      const pgd = this.k.kernel.readU64(va(mm + BigInt(this.pgdOffset)));
      s = this.k.userSpace(checkKernelPointer(pgd, this.k.bounds, `pgd of mm ${hex(mm)}`));
      this.spaces.set(mm, s);
    }
    return s;
  }

  /** The address space of `task`'s user half (a kernel thread's borrowed mm), or the kernel's. */
  spaceFor(task: TaskBrief, addr: bigint): AddressSpace {
    if (!isUserAddress(addr, this.k.bounds)) return this.k.kernel;
    const mm = task.mm !== 0n ? task.mm : this.tasks.activeMm(task.addr);
    if (mm === 0n) throw new FaultError("user", addr, `task ${task.pid} has no user address space`);
    return this.space(mm);
  }

  read(task: TaskBrief, addr: bigint, length: number): Buffer {
    return this.spaceFor(task, addr).read(va(addr), length);
  }

  write(task: TaskBrief, addr: bigint, data: Uint8Array): void {
    this.spaceFor(task, addr).write(va(addr), data);
  }

  invalidate(): void {
    this.k.kernel.invalidate();
    this.spaces.clear();
  }
}
