/**
 * Candidate offsets per struct member, and the record of what removed them. Step 1 of the
 * method: every member starts with every offset its size and alignment allow inside the
 * object; the rules (rules/, run by constraints.ts) only ever remove candidates, never add them.
 */

export interface MemberHistory {
  /** Events at which some constraint of this member was evaluated. */
  evaluated: number;
  /** Events at which a constraint removed at least one candidate. */
  narrowing: number;
  /** Index of the event after which one candidate was left (undefined: not yet). */
  convergedAt: number | undefined;
  /** Candidates removed, by rule name. */
  readonly removedBy: Record<string, number>;
  /** Candidates at the start. */
  initial: number;
}

export interface MemberStatus {
  readonly key: string;
  readonly candidates: readonly number[];
  readonly history: Readonly<MemberHistory>;
  /** How the last candidate was chosen when constraints alone left two ("twin"). */
  readonly note: string | undefined;
}

/** Offsets from `from` (inclusive) to `to` (exclusive) in steps of `align`. */
export function offsetRange(from: number, to: number, align: number): number[] {
  const out: number[] = [];
  const start = Math.ceil(from / align) * align;
  for (let o = start; o < to; o += align) out.push(o);
  return out;
}

export class Candidates {
  private readonly sets = new Map<string, number[]>();
  private readonly histories = new Map<string, MemberHistory>();
  private readonly notes = new Map<string, string>();
  /** Event index being processed, stamped on narrowing and convergence. */
  event = 0;
  private readonly touched = new Set<string>();
  private readonly narrowed = new Set<string>();

  define(key: string, initial: readonly number[]): void {
    this.sets.set(key, [...initial]);
    this.histories.set(key, {
      evaluated: 0,
      narrowing: 0,
      convergedAt: initial.length === 1 ? -1 : undefined,
      removedBy: {},
      initial: initial.length,
    });
  }

  has(key: string): boolean {
    return this.sets.has(key);
  }

  keys(): string[] {
    return [...this.sets.keys()];
  }

  get(key: string): readonly number[] {
    return this.sets.get(key) ?? [];
  }

  /** The offset, once exactly one candidate is left. */
  one(key: string): number | undefined {
    const s = this.sets.get(key);
    return s?.length === 1 ? s[0] : undefined;
  }

  /** Keeps the candidates `keep` accepts; the rule name is kept for the report. */
  filter(key: string, rule: string, keep: (offset: number) => boolean): void {
    const s = this.sets.get(key);
    // A converged member is not re-checked: an event costs guest time.
    if (!s || s.length <= 1) return;
    this.touched.add(key);
    const kept = s.filter((o) => keep(o));
    this.replace(key, rule, kept);
  }

  /** Sets the survivors directly (for rules that judge candidates jointly). */
  replace(key: string, rule: string, kept: readonly number[]): void {
    const s = this.sets.get(key);
    const h = this.histories.get(key);
    if (!s || !h) return;
    this.touched.add(key);
    const removed = s.length - kept.length;
    if (removed <= 0) return;
    h.removedBy[rule] = (h.removedBy[rule] ?? 0) + removed;
    this.narrowed.add(key);
    this.sets.set(key, [...kept]);
    if (kept.length === 1 && h.convergedAt === undefined) h.convergedAt = this.event;
    if (kept.length !== 1) h.convergedAt = undefined;
  }

  /** Records that a choice between two survivors was made by a rule outside the constraints. */
  resolve(key: string, offset: number, note: string): void {
    this.replace(key, "twin", [offset]);
    this.notes.set(key, note);
  }

  /** Closes an event: counts which members were evaluated and which narrowed. */
  endEvent(): void {
    for (const k of this.touched) this.histories.get(k)!.evaluated++;
    for (const k of this.narrowed) this.histories.get(k)!.narrowing++;
    this.touched.clear();
    this.narrowed.clear();
  }

  status(key: string): MemberStatus {
    return {
      key,
      candidates: this.get(key),
      history: { ...this.histories.get(key)!, removedBy: { ...this.histories.get(key)!.removedBy } },
      note: this.notes.get(key),
    };
  }

  /** Every one of `keys` has exactly one candidate left. */
  done(...keys: string[]): boolean {
    return keys.every((k) => this.sets.get(k)?.length === 1);
  }

  allConverged(): boolean {
    for (const s of this.sets.values()) if (s.length !== 1) return false;
    return true;
  }
}
