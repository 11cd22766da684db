import type { Candidates } from "../candidates.js";
import { MAX_JOINT } from "./abi.js";

/** One side of a joint rule: the member, and the rule name its removals are recorded under. */
export interface JointSide {
  readonly key: string;
  readonly rule: string;
}

/**
 * Two members judged together by a relation that must hold between their true offsets: keeps
 * the candidates of `first` that some candidate of `second` agrees with, then those of `second`
 * that some surviving candidate of `first` agrees with. (Against the survivors, not the
 * original set: it is the same answer, since a candidate of `first` that some `second` agrees
 * with survives, and it costs less.) A converged side is not re-checked, as with
 * Candidates.filter. Skipped, returning false, when more than `maxPairs` pairs would be judged:
 * the sets are still too large for the relation to be worth its cost.
 */
export function keepAgreeing(
  c: Candidates,
  first: JointSide,
  second: JointSide,
  agree: (a: number, b: number) => boolean,
  maxPairs: number = MAX_JOINT,
): boolean {
  const as = c.get(first.key);
  const bs = c.get(second.key);
  if (as.length * bs.length > maxPairs) return false;
  c.filter(first.key, first.rule, (a) => bs.some((b) => agree(a, b)));
  const kept = c.get(first.key);
  c.filter(second.key, second.rule, (b) => kept.some((a) => agree(a, b)));
  return true;
}
