import { VmsightError } from "../../util/errors.js";
import { type KernelSymbol, SymbolTable } from "./table.js";

/** `ffffffff81000000 T _text` with an optional `\t[module]` (the /proc/kallsyms form). */
const LINE = /^([0-9a-fA-F]{1,16})\s+([A-Za-z?])\s+(\S+)(?:\s+\[([^\]\s]+)\])?\s*$/;

/**
 * Parses System.map or /proc/kallsyms text. Malformed lines are skipped (these files get
 * hand-edited and truncated); text with no valid line at all is rejected, as is a
 * /proc/kallsyms read without privileges, where kptr_restrict turns every address into 0.
 *
 * Per-CPU variables appear at small offsets (System.map) or as type "A" (/proc/kallsyms);
 * both are marked absolute so `rebase` leaves them alone.
 */
export function parseSystemMap(text: string): SymbolTable {
  const symbols: KernelSymbol[] = [];
  let nonZero = false;
  let topHalf = 0;
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    const address = BigInt(`0x${m[1]}`);
    const type = m[2]!;
    const sym: KernelSymbol =
      m[4] === undefined ? { name: m[3]!, address, type } : { name: m[3]!, address, type, module: m[4] };
    symbols.push(sym);
    if (address !== 0n) nonZero = true;
    if (address >= 1n << 63n) topHalf++;
  }
  if (symbols.length === 0) {
    throw new VmsightError("E_SYMBOL_MAP", "no symbol lines in this System.map / kallsyms text", {
      hint: 'expected lines like "ffffffff81000000 T _text"; Debian ships a one-line stub in /boot, the real map is in the -dbg package',
    });
  }
  if (!nonZero && symbols.length > 1) {
    throw new VmsightError("E_SYMBOL_MAP", "every symbol address is 0", {
      hint: "this /proc/kallsyms was read without privileges (kptr_restrict); read it as root",
    });
  }
  // In a kernel living in the top half of the address space, values below 4 GiB are per-CPU offsets.
  const kernelHigh = topHalf > symbols.length / 2;
  return new SymbolTable(
    symbols.map((s) =>
      s.type === "A" || s.type === "a" || (kernelHigh && s.address < 1n << 32n)
        ? { ...s, absolute: true }
        : s,
    ),
  );
}
