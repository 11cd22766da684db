import type { CachedPhysicalMemory } from "../memory/page-cache.js";
import type { ControlRegisters } from "./hmp-registers.js";

/**
 * What reading a guest needs, whether it is a live QEMU (Target) or a memory dump (DumpMachine):
 * guest-physical memory, vCPU registers, and word of when the guest runs (caches go stale).
 */
export interface Machine {
  readonly memory: CachedPhysicalMemory;
  registers(cpu?: number): Promise<Map<string, bigint>>;
  /** CR0/CR3/CR4/EFER alone, where the machine has a cheaper way to them than `registers`. */
  controlRegisters?(cpu?: number): Promise<ControlRegisters>;
  onRun(listener: () => void): () => void;
  vcpuCount(): number;
  close(): Promise<void>;
}
