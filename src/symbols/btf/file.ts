import { readFileSync } from "node:fs";
import { parseElf64 } from "../../util/elf.js";
import { VmsightError } from "../../util/errors.js";
import type { Btf } from "./btf.js";
import { parseBtf } from "./parse.js";

/** The .BTF section of a vmlinux (or module) ELF file on the host. */
export function btfFromElfFile(path: string, opts: { base?: Btf } = {}): Btf {
  const bytes = parseElf64(readFileSync(path)).sectionBytes(".BTF");
  if (bytes === undefined) {
    throw new VmsightError("E_NO_BTF", `${path} has no .BTF section`, {
      hint: "the kernel must be built with CONFIG_DEBUG_INFO_BTF=y",
    });
  }
  return parseBtf(bytes, opts);
}
