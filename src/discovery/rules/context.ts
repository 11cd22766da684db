import { Candidates } from "../candidates.js";
import { BEST_EFFORT, type MemberGroup, TASK_MEMBERS } from "../members.js";
import type { GuestView, KernelFacts, Observation } from "../types.js";
import { TASK_COMM_LEN } from "./abi.js";
import { Obj } from "./reader.js";

/**
 * What the rules of every subsystem share: the candidate sets, the kernel's facts, how a task
 * is read, and the bookkeeping of members whose last two candidates are told apart by
 * something outside the constraints.
 */
export class RuleContext {
  readonly cands = new Candidates();
  /** Members whose surviving candidates have held different values at some event. */
  readonly differed = new Set<string>();
  /** Members placed by a structural fact (not filtered) whose check failed, with why. */
  readonly fixedFailures: string[] = [];
  private span: [number, number] | undefined;

  constructor(
    readonly facts: KernelFacts,
    readonly groups: ReadonlySet<MemberGroup>,
  ) {}

  /**
   * A task_struct: all of it while candidates are spread over it, only the span of the found
   * members once every awaited task member has converged (a boot has ~60 tasks per event).
   */
  readTask(view: GuestView, addr: bigint, whole = false): Obj | undefined {
    if (whole) {
      const b = view.read(addr, this.facts.taskSize);
      return b ? Obj.of(addr, b) : undefined;
    }
    const span = this.taskSpan();
    return Obj.lazy(view, addr, span?.[0] ?? 0, span?.[1] ?? this.facts.taskSize);
  }

  /** The span of the awaited task members, once they have all converged. */
  taskSpan(): [number, number] | undefined {
    if (this.span !== undefined) return this.span;
    const keys = TASK_MEMBERS.filter((k) => !BEST_EFFORT.has(k));
    if (!this.cands.done(...keys)) return undefined;
    const offs = keys.map((k) => this.cands.one(k)!);
    this.span = [Math.min(...offs), Math.max(...offs) + TASK_COMM_LEN];
    return this.span;
  }

  /**
   * A name array is also "a printable string" at any offset inside its text: when every
   * survivor lies within one array's length of the lowest, and the constraints held for all
   * of them at every event, they are one buffer seen from inside, and the member starts at the
   * lowest. (A survivor further away is a different field, and the member stays unresolved.)
   */
  innermostString(key: string, len: number): void {
    const s = this.cands.get(key);
    if (s.length < 2) return;
    const lo = s[0]!;
    if (s.every((o) => o - lo < len)) this.cands.replace(key, "suffix of a longer candidate", [lo]);
  }

  /** Notes whether the survivors of `key` disagree on some object. */
  trackTwins(key: string, objs: readonly Obj[], width: 4 | 8): void {
    const s = this.cands.get(key);
    if (s.length < 2 || this.differed.has(key)) return;
    const v = (o: Obj, off: number) => (width === 4 ? BigInt(o.u32(off)) : o.u64(off));
    if (objs.some((o) => s.some((off) => v(o, off) !== v(o, s[0]!)))) this.differed.add(key);
  }

  /**
   * Two adjacent pointers that held the same value at every event (`real_parent`/`parent`,
   * `real_cred`/`cred`): the first declared is taken, and the report says why.
   */
  declaredFirst(key: string, note: (a: number, b: number) => string): void {
    const s = this.cands.get(key);
    if (s.length === 2 && s[1]! - s[0]! === 8 && !this.differed.has(key))
      this.cands.resolve(key, s[0]!, note(s[0]!, s[1]!));
  }
}

/** One trapped event as the task rules see it. */
export interface TaskEvent {
  readonly obs: Observation;
  /** The task that was running. */
  readonly cur: Obj;
  /** The running task is the idle task (init_task). */
  readonly idle: boolean;
  /** Every process on the tasks list, once `tasks` is known (init_task excluded). */
  readonly tasks: Obj[] | undefined;
  /** The process this event created, when it could be told. */
  readonly child: Obj | undefined;
  readonly threadCreated: boolean;
  /** The running task, the listed ones and the child. */
  readonly all: Obj[];
}
