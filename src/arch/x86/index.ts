export { AddressSpace, MAX_ACCESS, type AddressSpaceOptions } from "./address-space.js";
export { TranslationCache } from "./cache.js";
export {
  DEFAULT_MAX_ENTRIES,
  enumerateMappings,
  type EnumerateOptions,
  type Mapping,
  type MappingList,
} from "./mappings.js";
export {
  formatFromControlRegisters,
  PAGING_FORMATS,
  rootFromCr3,
  X86_32,
  X86_32_NO_PSE,
  X86_64_4LEVEL,
  X86_64_5LEVEL,
  X86_PAE,
  type ControlRegisters,
  type LeafRule,
  type PagingFlags,
  type PagingFormat,
  type PagingLevel,
  type RootOptions,
} from "./formats.js";
export { checkAddress, findTranslation, translate, translateMany, type Translation } from "./walk.js";
