import type { StructLayout } from "../../symbols/layout.js";
import { type VirtAddr, va } from "../../util/address.js";
import { VmsightError } from "../../util/errors.js";
import type { KernelContext, Symbols } from "./context.js";

/**
 * Where `current` sits in every CPU's per-CPU area: the per-CPU variable `current_task` (up to
 * 6.1) or `pcpu_hot.current_task` (6.2+). Without a layout (boot discovery learns offsets, it
 * has none yet) the member is taken to be pcpu_hot's first, as it is in every 6.x build.
 */
export function currentTaskOffset(symbols: Symbols, layout?: StructLayout): bigint {
  const direct = symbols.findAddress("current_task");
  if (direct !== undefined) return direct;
  const hot = symbols.findAddress("pcpu_hot");
  if (hot === undefined)
    throw new VmsightError(
      "E_SYMBOL_UNKNOWN",
      "neither current_task nor pcpu_hot is in the kernel's symbols",
    );
  return hot + BigInt(layout?.findOffset("pcpu_hot", "current_task") ?? 0);
}

/** The per-CPU address holding `current` on `cpu` (a watchpoint there fires at every task switch). */
export function currentTaskSlot(ctx: KernelContext, cpu: number): VirtAddr {
  const base = ctx.perCpuOffsets[cpu];
  if (base === undefined) throw new VmsightError("E_CPU", `no per-CPU area for CPU ${cpu}`);
  return va(base + currentTaskOffset(ctx.symbols, ctx.layout));
}

/** `current` on a CPU: the task_struct it runs. */
export function currentTask(ctx: KernelContext, cpu: number): VirtAddr {
  return va(ctx.kernel.readU64(currentTaskSlot(ctx, cpu)));
}
