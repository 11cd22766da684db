/**
 * Inputs for the fuzz targets: mostly valid inputs with a few edits (what finds bugs in a
 * parser that checks its magic numbers), some random bytes. Edits are data, so fast-check
 * shrinks a failure to the fewest and smallest edits.
 */
import fc from "fast-check";

export type Mutation =
  | { readonly k: "byte"; readonly at: number; readonly v: number }
  | { readonly k: "word"; readonly at: number; readonly size: 2 | 4 | 8; readonly v: bigint }
  | { readonly k: "truncate"; readonly at: number }
  | { readonly k: "insert"; readonly at: number; readonly bytes: Uint8Array }
  | { readonly k: "delete"; readonly at: number; readonly n: number }
  | { readonly k: "copy"; readonly from: number; readonly to: number; readonly n: number };

/** Values that sit on the edges parsers get wrong. */
const EDGES = [
  0n,
  1n,
  0x7fn,
  0x80n,
  0xffn,
  0x7fffn,
  0xffffn,
  0x7fff_ffffn,
  0x8000_0000n,
  0xffff_ffffn,
].concat([1n << 63n, (1n << 64n) - 1n, 0x1000n, 0x10_0000n]);

/** Unbiased: fast-check's default leans to small numbers, which would all land in a header. */
const position = fc.noBias(fc.nat());
const mutation: fc.WeightedArbitrary<Mutation>[] = [
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("byte" as const),
      at: position,
      v: fc.integer({ min: 0, max: 255 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant("word" as const),
      at: position,
      size: fc.constantFrom(2 as const, 4 as const, 8 as const),
      v: fc.oneof(fc.constantFrom(...EDGES), fc.bigInt({ min: 0n, max: (1n << 64n) - 1n })),
    }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant("truncate" as const), at: position }) },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("insert" as const),
      at: position,
      bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant("delete" as const),
      at: position,
      n: fc.integer({ min: 1, max: 64 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      k: fc.constant("copy" as const),
      from: position,
      to: position,
      n: fc.integer({ min: 1, max: 64 }),
    }),
  },
];

/** A u64 pointer into the input, for formats whose words point at each other (tagged as `tag`). */
export function pointerInto(
  base: bigint,
  length: number,
  tags: readonly bigint[] = [0n],
  weight = 4,
): fc.WeightedArbitrary<Mutation> {
  const arbitrary = fc
    .record({ at: position, target: fc.nat({ max: Math.max(0, length - 1) }), tag: fc.constantFrom(...tags) })
    .map(({ at, target, tag }) => ({
      k: "word" as const,
      at: at & ~7,
      size: 8 as const,
      v: (base + BigInt(target & ~7)) | tag,
    }));
  return { weight, arbitrary };
}

export function apply(seed: Uint8Array, edits: readonly Mutation[]): Uint8Array {
  let b = Buffer.from(seed);
  const cap = Math.max(64, 2 * seed.length);
  for (const m of edits) {
    const at = b.length === 0 ? 0 : m.k === "copy" ? 0 : m.at % (b.length + 1);
    switch (m.k) {
      case "byte":
        if (at < b.length) b[at] = m.v;
        break;
      case "word":
        for (let i = 0; i < m.size && at + i < b.length; i++)
          b[at + i] = Number((m.v >> BigInt(8 * i)) & 0xffn);
        break;
      case "truncate":
        b = b.subarray(0, at);
        break;
      case "insert":
        if (b.length + m.bytes.length <= cap) b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
        break;
      case "copy":
        if (b.length > 0) b.copy(b, m.to % b.length, m.from % b.length, (m.from % b.length) + m.n);
        break;
    }
  }
  return new Uint8Array(b);
}

export function inputs(
  seeds: readonly Uint8Array[],
  maxRandomBytes: number,
  extra: readonly fc.WeightedArbitrary<Mutation>[],
): fc.Arbitrary<Uint8Array> {
  const random = fc.uint8Array({ maxLength: maxRandomBytes });
  if (seeds.length === 0) return random;
  const mutated = (edit: fc.Arbitrary<Mutation>) =>
    fc
      .record({
        seed: fc.nat({ max: seeds.length - 1 }),
        edits: fc.array(edit, { minLength: 1, maxLength: 6 }),
      })
      .map(({ seed, edits }) => apply(seeds[seed]!, edits));
  // Edits that keep the length keep the offsets in headers right, so they reach deeper.
  const inPlace = mutation.filter((m) => m.weight >= 2);
  return fc.oneof(
    { weight: 6, arbitrary: mutated(fc.oneof(...inPlace, ...extra)) },
    { weight: 3, arbitrary: mutated(fc.oneof(...mutation, ...extra)) },
    { weight: 1, arbitrary: random },
  );
}
