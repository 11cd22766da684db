/**
 * An open-addressing hash table from symbol name to the index of the first symbol (in address
 * order) of that name, as a plain Uint32Array: it is stored with a kernel build and used as it
 * is loaded, so a lookup by name costs a hash and a probe or two, with nothing built per symbol.
 * Building it is linear (sorting 150,000 names by name cost ~200 ms; this ~15 ms).
 */
const EMPTY = 0xffffffff;

/** FNV-1a over UTF-16 units: stable across runs and processes, which the stored table needs. */
function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Slots: a power of two at least twice the count, so probe chains stay short. */
function slotsFor(count: number): number {
  let size = 16;
  while (size < count * 2) size *= 2;
  return size;
}

export function buildNameIndex(count: number, nameAt: (i: number) => string): Uint32Array {
  const table = new Uint32Array(slotsFor(count)).fill(EMPTY);
  const mask = table.length - 1;
  for (let i = 0; i < count; i++) {
    const name = nameAt(i);
    for (let slot = hashName(name) & mask; ; slot = (slot + 1) & mask) {
      const at = table[slot]!;
      if (at === EMPTY) {
        table[slot] = i;
        break;
      }
      if (nameAt(at) === name) break; // an alias later in address order: the first one stays
    }
  }
  return table;
}

/** The first index of `name`, or undefined; bounded by the table size whatever it holds. */
export function lookupName(
  table: Uint32Array,
  count: number,
  nameAt: (i: number) => string,
  name: string,
): number | undefined {
  if (table.length === 0 || (table.length & (table.length - 1)) !== 0) return undefined;
  const mask = table.length - 1;
  let slot = hashName(name) & mask;
  for (let probes = 0; probes < table.length; probes++, slot = (slot + 1) & mask) {
    const at = table[slot]!;
    if (at === EMPTY || at >= count) return undefined;
    if (nameAt(at) === name) return at;
  }
  return undefined;
}
