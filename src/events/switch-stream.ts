/**
 * Task switches as the scheduler makes them: __switch_to() stores the next task in the per-CPU
 * `current_task` (6.1) / `pcpu_hot.current_task` (6.2+), after switch_mm() has loaded the next
 * address space. A write watchpoint on that slot of each CPU stops once per switch; CR3 then is
 * the page-table root the next task runs on (a kernel thread keeps the previous one: lazy TLB).
 */
import type { EventEngine } from "./engine.js";
import type { LinuxGuest } from "./linux-guest.js";

export interface SwitchEvent {
  readonly type: "switch";
  readonly cpu: number;
  readonly prev: { readonly pid: number; readonly tgid: number; readonly comm: string };
  readonly next: { readonly pid: number; readonly tgid: number; readonly comm: string };
  readonly cr3: bigint;
}

export async function traceSwitches(
  engine: EventEngine,
  guest: LinuxGuest,
  emit: (e: SwitchEvent) => void,
): Promise<void> {
  const tr = guest.tasks;
  const cpus = guest.k.perCpuOffsets.length || 1;
  for (let cpu = 0; cpu < cpus; cpu++) {
    const slot = tr.currentSlot(cpu);
    let prev = tr.u64(slot);
    await engine.watch(
      slot,
      async (hit) => {
        const next = tr.u64(slot);
        if (next === prev) return undefined;
        const from = tr.brief(prev);
        prev = next;
        const to = tr.brief(next);
        const cr3 = await hit.register("cr3");
        emit({
          type: "switch",
          cpu,
          prev: { pid: from.pid, tgid: from.tgid, comm: from.comm },
          next: { pid: to.pid, tgid: to.tgid, comm: to.comm },
          cr3,
        });
        return undefined;
      },
      { kind: "write", length: 8 },
    );
  }
}
