const MAX_SUGGESTIONS = 6;

/** Names close to `wanted` (substring or small edit distance), best first, for error hints. */
export function similarNames(wanted: string, names: Iterable<string>): string[] {
  const w = wanted.toLowerCase();
  const limit = Math.max(2, Math.floor(w.length / 3));
  const scored: { name: string; score: number }[] = [];
  for (const name of names) {
    const n = name.toLowerCase();
    if (n === w) continue;
    if (w.length >= 3 && n.length >= 3 && (n.includes(w) || w.includes(n))) {
      scored.push({ name, score: Math.abs(n.length - w.length) / 100 });
      continue;
    }
    if (Math.abs(n.length - w.length) > limit) continue;
    const d = editDistance(w, n, limit);
    if (d <= limit) scored.push({ name, score: d });
  }
  scored.sort((a, b) => a.score - b.score || a.name.localeCompare(b.name));
  return scored.slice(0, MAX_SUGGESTIONS).map((s) => s.name);
}

/** Levenshtein distance, giving up (returning limit + 1) once it exceeds `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      if (v < best) best = v;
    }
    if (best > limit) return limit + 1;
    prev = cur;
  }
  return prev[b.length]!;
}
