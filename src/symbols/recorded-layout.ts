import type { StructLayout } from "./layout.js";

/**
 * Answers a layout gave, as JSON-safe values: a number, an enum value as a decimal string, or
 * null for "no such member / struct / enumerator".
 */
export type LayoutAnswers = Record<string, number | string | null>;

export interface RecordedLayout {
  readonly layout: StructLayout;
  /** Every answer known so far: the ones given at the start and the ones asked since. */
  readonly answers: LayoutAnswers;
  /** Whether a question not in the starting answers was asked. */
  changed(): boolean;
}

/**
 * A StructLayout that answers from `known` and asks `inner` (built on first need: parsing BTF
 * is the expensive part) only for questions it has not seen, recording the answers. A command
 * asks the same few dozen questions each run, so the answers of one run, kept with the kernel
 * build they came from, spare the next run the BTF parse. An unknown member still throws
 * through `inner`, with its message.
 */
export function recordedLayout(
  inner: () => StructLayout,
  known: LayoutAnswers,
  source: string,
): RecordedLayout {
  const answers: LayoutAnswers = { ...known };
  let changed = false;
  let real: StructLayout | undefined;
  const get = () => {
    real ??= inner();
    return real;
  };
  const ask = <T extends number | bigint | undefined>(
    key: string,
    fn: (l: StructLayout) => T,
    decode: (v: number | string) => T,
  ): T => {
    const v = answers[key];
    if (v !== undefined) return v === null ? (undefined as T) : decode(v);
    const a = fn(get());
    answers[key] = a === undefined ? null : typeof a === "bigint" ? a.toString() : a;
    changed = true;
    return a;
  };
  const num = (v: number | string) => Number(v);
  const findOffset = (s: string, p: string) => ask(`off\0${s}\0${p}`, (l) => l.findOffset(s, p), num);
  const findSize = (s: string) => ask(`size\0${s}`, (l) => l.findSize(s), num);
  const layout: StructLayout = {
    source,
    findOffset,
    offsetof: (s, p) => findOffset(s, p) ?? get().offsetof(s, p),
    findSize,
    sizeof: (s) => findSize(s) ?? get().sizeof(s),
    memberSize: (s, p) => ask(`msize\0${s}\0${p}`, (l) => l.memberSize(s, p), num),
    findEnumValue: (n) =>
      ask(
        `enum\0${n}`,
        (l) => l.findEnumValue(n),
        (v) => BigInt(v),
      ),
  };
  return { layout, answers, changed: () => changed };
}
