/** The ELF reader lives in util/ (guest dumps in memory/ use it too); kept here for symbol code. */
export * from "../util/elf.js";
