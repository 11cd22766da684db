/**
 * System calls of chosen tasks, without stopping the guest for anybody else's.
 *
 * Every task enters the kernel on its own kernel stack, and the entry code saves the user
 * registers in the `pt_regs` at the top of it (task_pt_regs). `entry_SYSCALL_64` pushes
 * `-ENOSYS` into `pt_regs->ax`, and `do_syscall_64` stores the result there. So a 8-byte write
 * watchpoint on one task's `pt_regs->ax` stops the guest twice per system call *of that task*
 * (entry: number and arguments still in the registers; exit: the return value) and never for
 * another task. Interrupts also save registers there (from other code: ignored by RIP).
 *
 * Tasks that appear later: for --pid, new threads of the process (a `total_forks` watch, one
 * stop per fork anywhere); for --comm, also processes that exec into that name (`binfmt_lock`,
 * see proc-stream.ts). Without a filter every user task is watched.
 */
import { listAllThreads } from "../os/linux/tasks.js";
import { va } from "../util/address.js";
import { GuestDataError, VmsightError } from "../util/errors.js";
import type { EventEngine, Trap, TrapHit } from "./engine.js";
import type { LinuxGuest } from "./linux-guest.js";
import type { TaskDetail } from "./linux-task.js";
import { ExecDetector } from "./proc-stream.js";

export interface SyscallEvent {
  readonly type: "syscall";
  readonly pid: number;
  readonly tid: number;
  readonly comm: string;
  readonly nr: number;
  readonly name: string;
  /** rdi, rsi, rdx, r10, r8, r9 as the task passed them. */
  readonly args: readonly bigint[];
  /** Signed return value; null for calls that do not return (exit, exit_group). */
  readonly ret: bigint | null;
}

export interface SyscallFilter {
  readonly pid?: number;
  readonly comm?: string;
}

const NO_RETURN = new Set([60, 231]); // exit, exit_group
const MAX_SYSCALLS = 1024;
const THREAD_SIZES = [16384n, 32768n, 8192n];
const USER_CS = 0x33n;
const USER_SS = 0x2bn;
const ARG_REGS = ["rdi", "rsi", "rdx", "r10", "r8", "r9"];

/**
 * Syscall names by number: each sys_call_table entry points at `__x64_sys_<name>` (often
 * aliased with `__do_sys_*`/`__ia32_sys_*` at the same address). The table ends where an entry
 * is no such function.
 */
export function syscallNames(guest: LinuxGuest): string[] {
  const k = guest.k;
  const table = k.symbols.findAddress("sys_call_table");
  if (table === undefined) return [];
  const byAddress = new Map<bigint, string>();
  for (const s of k.symbols.symbols) {
    if (s.name.startsWith("__x64_sys_")) byAddress.set(s.address, s.name.slice("__x64_sys_".length));
  }
  const names: string[] = [];
  const raw = k.kernel.read(va(table), MAX_SYSCALLS * 8);
  for (let i = 0; i < MAX_SYSCALLS; i++) {
    const name = byAddress.get(raw.readBigUInt64LE(i * 8));
    if (name === undefined) break;
    names.push(name);
  }
  return names;
}

interface Watched {
  readonly task: TaskDetail;
  readonly stack: bigint;
  trap: Trap | undefined;
  pending: { nr: number; args: bigint[] } | undefined;
}

export async function traceSyscalls(
  engine: EventEngine,
  guest: LinuxGuest,
  emit: (e: SyscallEvent) => void,
  filter: SyscallFilter = {},
): Promise<{ watched: () => number }> {
  const k = guest.k;
  const tr = guest.tasks;
  const L = k.layout;
  const names = syscallNames(guest);
  const nameOf = (nr: number) => names[nr] ?? `syscall_${nr}`;
  const regsSize = BigInt(L.sizeof("pt_regs"));
  const axOff = BigInt(L.offsetof("pt_regs", "ax"));
  const csOff = BigInt(L.offsetof("pt_regs", "cs"));
  const ssOff = BigInt(L.offsetof("pt_regs", "ss"));
  const stackOff = BigInt(tr.offset("stack"));
  const watched = new Map<bigint, Watched>();
  const matches = (t: TaskDetail) =>
    t.mm !== 0n &&
    (filter.pid === undefined || t.tgid === filter.pid) &&
    (filter.comm === undefined || t.comm === filter.comm);

  const initial = listAllThreads(k).filter((t) => !t.isKernelThread && matches(tr.brief(t.addr)));
  if (filter.pid !== undefined && initial.length === 0) {
    throw new VmsightError("E_NO_PROCESS", `no user process with pid ${filter.pid} in the guest`);
  }
  const threadSize = findThreadSize(
    guest,
    initial.map((t) => t.addr),
    { regsSize, csOff, ssOff, stackOff },
  );
  const ptRegs = (stack: bigint) => stack + threadSize - regsSize;

  const onAx = async (w: Watched, hit: TrapHit): Promise<"remove" | undefined> => {
    const cur = hit.task();
    if (cur.addr !== w.task.addr) {
      // Someone else wrote there: the stack was freed and reused (our task is gone), or rarely
      // the kernel edited our task's registers (ptrace): keep the watch only in that case.
      if (tr.u64(w.task.addr + stackOff) === w.stack && tr.brief(w.task.addr).pid === w.task.pid)
        return undefined;
      watched.delete(w.task.addr);
      return "remove";
    }
    const regs = await hit.registers();
    const where = k.symbols.symbolize(regs.get("rip") ?? 0n)?.name ?? "";
    const t = tr.brief(cur.addr);
    if (where.startsWith("entry_SYSCALL_64")) {
      if (w.pending) flush(w, t, null);
      const nr = Number(BigInt.asIntN(32, regs.get("rax") ?? -1n));
      w.pending = { nr, args: ARG_REGS.map((r) => regs.get(r) ?? 0n) };
      if (NO_RETURN.has(nr)) flush(w, t, null);
    } else if (where === "do_syscall_64" && w.pending) {
      const ret = BigInt.asIntN(64, tr.u64(ptRegs(w.stack) + axOff));
      flush(w, t, ret);
    }
    return undefined;
  };

  const flush = (w: Watched, t: TaskDetail, ret: bigint | null) => {
    const p = w.pending;
    w.pending = undefined;
    if (!p || (filter.comm !== undefined && t.comm !== filter.comm)) return;
    emit({
      type: "syscall",
      pid: t.tgid,
      tid: t.pid,
      comm: t.comm,
      nr: p.nr,
      name: nameOf(p.nr),
      args: p.args,
      ret,
    });
  };

  const follow = async (task: TaskDetail) => {
    if (watched.has(task.addr)) return;
    const stack = tr.u64(task.addr + stackOff);
    const w: Watched = { task, stack, trap: undefined, pending: undefined };
    watched.set(task.addr, w);
    w.trap = await engine.watch(ptRegs(stack) + axOff, (hit) => onAx(w, hit), { kind: "write", length: 8 });
  };

  for (const t of initial) await follow(tr.brief(t.addr));
  await engine.watch(
    k.symbols.getAddress("total_forks"),
    async (hit) => {
      const parent = tr.brief(hit.task().addr);
      if (!matches(parent)) return undefined;
      const made = tr.newTask(parent.addr);
      if (made && matches(made.task)) await follow(made.task);
      return undefined;
    },
    { kind: "write", length: 8 },
  );
  if (filter.comm !== undefined) {
    const execs = new ExecDetector(guest);
    await engine.watch(
      ExecDetector.lockAddress(guest),
      async (hit) => {
        const t = tr.brief(hit.task().addr);
        if (execs.finished(t) && matches(t)) await follow(t);
        return undefined;
      },
      { kind: "write", length: 4 },
    );
  }
  return { watched: () => watched.size };
}

/**
 * THREAD_SIZE is not in BTF (6.12 has no thread_union type): find the one that puts a user
 * task's saved CS and SS (0x33, 0x2b) where task_pt_regs() says they are.
 */
function findThreadSize(
  guest: LinuxGuest,
  tasks: readonly bigint[],
  o: { regsSize: bigint; csOff: bigint; ssOff: bigint; stackOff: bigint },
): bigint {
  const tr = guest.tasks;
  const k = guest.k;
  if (tasks.length === 0) return THREAD_SIZES[0]!;
  for (const size of THREAD_SIZES) {
    const ok = tasks.slice(0, 4).some((t) => {
      try {
        const regs = tr.u64(t + o.stackOff) + size - o.regsSize;
        const cs = k.kernel.readU64(va(regs + o.csOff)) & 0xffffn;
        const ss = k.kernel.readU64(va(regs + o.ssOff)) & 0xffffn;
        return cs === USER_CS && ss === USER_SS;
      } catch {
        return false;
      }
    });
    if (ok) return size;
  }
  throw new GuestDataError("cannot find the kernel stack size: no user task's saved registers look right");
}
