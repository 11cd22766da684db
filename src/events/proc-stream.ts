import { filePath } from "../os/linux/dpath.js";
/**
 * Process events from watchpoints only (no breakpoint, so no TCG re-translation and nothing in
 * guest memory):
 *   - `nr_threads` is written twice in a task's life: `nr_threads++` in copy_process() right
 *     after the child is on the task lists (create), and `nr_threads--` in __unhash_process()
 *     when the dead task is released, i.e. reaped by its parent's wait() or by itself (exit,
 *     reported with the status wait() sees).
 *   - `binfmt_lock` is read-locked (an atomic write) around each binfmt handler's load_binary():
 *     the first lock after begin_new_exec() has bumped `self_exec_id` is a finished exec, seen
 *     with the new mm, comm and argv in place.
 * A fork + exit costs two stops, an exec four; nothing else stops the guest.
 */
import { readCmdline } from "../os/linux/process-memory.js";
import { type ListPolicy, isKernelPointer, listForEachEntry } from "../os/linux/walk.js";
import { va } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { EventEngine, Trap, TrapHit } from "./engine.js";
import type { LinuxGuest } from "./linux-guest.js";
import { EXIT_DEAD, type TaskDetail } from "./linux-task.js";

export interface ProcCreate {
  readonly type: "create";
  readonly pid: number;
  readonly tid: number;
  readonly ppid: number;
  readonly comm: string;
  /** A new thread of an existing process (CLONE_THREAD) rather than a new process. */
  readonly thread: boolean;
}

export interface ProcExec {
  readonly type: "exec";
  readonly pid: number;
  readonly tid: number;
  readonly ppid: number;
  readonly comm: string;
  readonly filename: string;
  readonly argv: readonly string[];
}

export interface ProcExit {
  readonly type: "exit";
  readonly pid: number;
  readonly tid: number;
  readonly ppid: number;
  readonly comm: string;
  /** The wait() status: exit code << 8, or the signal (| 0x80 with a core dump). */
  readonly status: number;
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly thread: boolean;
}

export type ProcEvent = ProcCreate | ProcExec | ProcExit;

const MAX_TRACKED = 8192;
const MAX_GROUP_SCAN = 4096;
const MAX_FILENAME = 4096;

/** A Map with FIFO eviction: the guest decides how many tasks exist, not our memory. */
class Bounded<V> extends Map<string, V> {
  override set(key: string, value: V): this {
    if (!this.has(key) && this.size >= MAX_TRACKED) {
      const oldest = this.keys().next();
      if (!oldest.done) this.delete(oldest.value);
    }
    return super.set(key, value);
  }
}

const keyOf = (t: TaskDetail) => `${t.addr.toString(16)}:${t.pid}`;

export interface ProcOptions {
  /** Which events to report (default all three); the others cost no stops. */
  readonly create?: boolean;
  readonly exec?: boolean;
  readonly exit?: boolean;
  /** Told when a task list the stream reads is broken (the events it hides are lost). */
  readonly warn?: (message: string) => void;
}

/**
 * Finished execs, from `binfmt_lock` stops: a task whose `self_exec_id` moved since its
 * previous stop there has just passed begin_new_exec().
 */
export class ExecDetector {
  private readonly ids = new Bounded<number>();

  constructor(private readonly guest: LinuxGuest) {}

  /** True when this stop ends an exec of `t`. */
  finished(t: TaskDetail): boolean {
    const id = this.guest.tasks.selfExecId(t.addr);
    const key = keyOf(t);
    const seen = this.ids.get(key);
    this.ids.set(key, id);
    return seen !== undefined && seen !== id;
  }

  /** Forget a released task, so a task_struct reused at that address starts afresh. */
  forget(t: TaskDetail): void {
    this.ids.delete(keyOf(t));
  }

  static lockAddress(guest: LinuxGuest): bigint {
    return required(guest, "binfmt_lock");
  }
}

function required(guest: LinuxGuest, name: string): bigint {
  const a = guest.k.symbols.findAddress(name);
  if (a === undefined) {
    throw new VmsightError(
      "E_SYMBOL_UNKNOWN",
      `process events need the kernel symbol ${name}, which is missing`,
      {
        hint: "this kernel build lacks it (KALLSYMS_ALL off?)",
      },
    );
  }
  return a;
}

export async function traceProc(
  engine: EventEngine,
  guest: LinuxGuest,
  emit: (e: ProcEvent) => void,
  opts: ProcOptions = {},
): Promise<readonly Trap[]> {
  const want = { create: opts.create ?? true, exec: opts.exec ?? true, exit: opts.exit ?? true };
  const k = guest.k;
  const tr = guest.tasks;
  const threadHead = BigInt(k.layout.offsetof("signal_struct", "thread_head"));
  const execs = new ExecDetector(guest);
  const reported = new Bounded<true>();
  const traps: Trap[] = [];

  const onCreate = (current: TaskDetail) => {
    const made = tr.newTask(current.addr);
    if (!made) return; // not a task we can place; never guess
    const child = made.task;
    emit({
      type: "create",
      pid: child.tgid,
      tid: child.pid,
      ppid: tr.parentTgid(child),
      comm: child.comm,
      thread: made.thread,
    });
  };

  // A broken list costs the exits it hides, with a warning, not the whole trace.
  const policy: ListPolicy = {
    onBroken: "stop",
    max: MAX_GROUP_SCAN,
    warn: (e) => opts.warn?.(`process events: ${e.message}`),
  };
  const listAt = (head: bigint, member: string): bigint[] => [
    ...listForEachEntry(k, va(head), "task_struct", member, policy),
  ];
  const groupOf = (t: TaskDetail): bigint[] => {
    const signal = tr.u64(t.addr + BigInt(tr.offset("signal")));
    return isKernelPointer(signal, k.bounds) ? listAt(signal + threadHead, "thread_node") : [];
  };

  /** The task being released is EXIT_DEAD: the reaper itself, one of its threads or children. */
  const onRelease = (current: TaskDetail) => {
    const children = listAt(current.addr + BigInt(tr.offset("children")), "sibling");
    for (const addr of new Set([current.addr, ...groupOf(current), ...children])) {
      const t = addr === current.addr ? current : tr.brief(addr);
      if (t.exitState !== EXIT_DEAD || reported.has(keyOf(t))) continue;
      reported.set(keyOf(t), true);
      execs.forget(t);
      const status = t.exitCode;
      const sig = status & 0x7f;
      emit({
        type: "exit",
        pid: t.tgid,
        tid: t.pid,
        ppid: tr.parentTgid(t),
        comm: t.comm,
        status,
        exitCode: sig === 0 ? (status >> 8) & 0xff : null,
        signal: sig === 0 ? null : sig,
        thread: t.pid !== t.tgid,
      });
    }
  };

  if (want.exit) {
    const nrThreads = required(guest, "nr_threads");
    let count = tr.i32(nrThreads);
    const trap = await engine.watch(
      nrThreads,
      (hit) => {
        const now = tr.i32(nrThreads);
        const before = count;
        count = now;
        const current = tr.brief(hit.task().addr);
        if (now > before && want.create) onCreate(current);
        else if (now < before) onRelease(current);
        return undefined;
      },
      { kind: "write", length: 4 },
    );
    traps.push(trap);
  } else if (want.create) {
    // Written once per fork only: half the stops of nr_threads when exits are not wanted.
    const trap = await engine.watch(
      required(guest, "total_forks"),
      (hit) => {
        onCreate(tr.brief(hit.task().addr));
        return undefined;
      },
      { kind: "write", length: 8 },
    );
    traps.push(trap);
  }

  if (want.exec) {
    const trap = await engine.watch(
      ExecDetector.lockAddress(guest),
      async (hit) => {
        const t = tr.brief(hit.task().addr);
        if (!execs.finished(t)) return undefined;
        emit({
          type: "exec",
          pid: t.tgid,
          tid: t.pid,
          ppid: tr.parentTgid(t),
          comm: t.comm,
          filename: await execFilename(guest, hit, t),
          argv: readCmdline(k, t).strings,
        });
        return undefined;
      },
      { kind: "write", length: 4 },
    );
    traps.push(trap);
  }
  return traps;
}

/**
 * The name exec was given (`bprm->filename`, as `execve` passed it: `/bin/ls`, not the busybox
 * it links to). The linux_binprm is found in a callee-saved register or on the stack of
 * search_binary_handler(), and recognised by `bprm->file == mm->exe_file`; failing that, the
 * path of the executable itself.
 */
async function execFilename(guest: LinuxGuest, hit: TrapHit, t: TaskDetail): Promise<string> {
  const k = guest.k;
  const L = k.layout;
  const exeFile = t.mm === 0n ? 0n : guest.tasks.u64(t.mm + BigInt(L.offsetof("mm_struct", "exe_file")));
  if (!isKernelPointer(exeFile, guest.k.bounds)) return "";
  const fileOff = BigInt(L.offsetof("linux_binprm", "file"));
  const nameOff = BigInt(L.offsetof("linux_binprm", "filename"));
  const regs = await hit.registers();
  const candidates = ["rbx", "rbp", "r12", "r13", "r14", "r15"].map((r) => regs.get(r) ?? 0n);
  const rsp = regs.get("rsp") ?? 0n;
  if (isKernelPointer(rsp, guest.k.bounds)) {
    try {
      const stack = k.kernel.read(va(rsp), 512);
      for (let i = 0; i < stack.length; i += 8) candidates.push(stack.readBigUInt64LE(i));
    } catch {
      // the top of the stack page: registers only
    }
  }
  for (const p of candidates) {
    if (!isKernelPointer(p, guest.k.bounds)) continue;
    try {
      if (guest.tasks.u64(p + fileOff) !== exeFile) continue;
      const name = guest.tasks.u64(p + nameOff);
      if (isKernelPointer(name, guest.k.bounds)) return k.kernel.readCString(va(name), MAX_FILENAME);
    } catch {
      // not a readable linux_binprm
    }
  }
  try {
    return filePath(k, va(exeFile));
  } catch {
    return "";
  }
}
