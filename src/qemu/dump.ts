import { type DumpCpu, openElfCore } from "../memory/elf-core.js";
import { CachedPhysicalMemory } from "../memory/page-cache.js";
import { VmsightError } from "../util/errors.js";
import type { Machine } from "./machine.js";

/** A guest frozen in an ELF memory dump: everything reads as at the moment of the dump. */
export class DumpMachine implements Machine {
  private constructor(
    readonly memory: CachedPhysicalMemory,
    private readonly cpus: readonly DumpCpu[],
  ) {}

  static open(path: string): DumpMachine {
    const core = openElfCore(path);
    if (core.cpus.length === 0) {
      core.memory.close();
      throw new VmsightError("E_DUMP", `${path} has no QEMU CPU notes, so its page tables cannot be found`, {
        hint: "use a dump from QEMU's dump-guest-memory (ELF format)",
      });
    }
    return new DumpMachine(new CachedPhysicalMemory(core.memory), core.cpus);
  }

  async registers(cpu = 0): Promise<Map<string, bigint>> {
    const regs = this.cpus[cpu];
    if (!regs)
      throw new VmsightError("E_CPU", `the dump has no vCPU ${cpu}`, {
        hint: `use --cpu 0..${this.cpus.length - 1}`,
      });
    return new Map(regs);
  }

  /** A dump never runs. */
  onRun(): () => void {
    return () => {};
  }

  vcpuCount(): number {
    return this.cpus.length;
  }

  async close(): Promise<void> {
    this.memory.close();
  }
}
