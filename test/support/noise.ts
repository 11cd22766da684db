/** Deterministic noise for the bytes of a crafted struct nobody set: a real struct is not all zeros. */
export function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
