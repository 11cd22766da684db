export { layoutElfImage } from "./elf-image.js";
export {
  type KallsymsLayout,
  type RecoverOptions,
  MAX_SYMS,
  kallsymsSpan,
  locateKallsyms,
  recoverKallsyms,
  recoverKallsymsWithLayout,
} from "./recover.js";
export { parseSystemMap } from "./system-map.js";
export { type KernelSymbol, type Symbolized, SymbolTable } from "./table.js";
