import type { DumpFormat } from "../commands/dump-image.js";
import { UsageError } from "../util/errors.js";
import { stringValue } from "./args.js";
import { type CliCommand, needLocalVm } from "./command.js";
import { toJson } from "./render.js";

const FORMATS: readonly DumpFormat[] = ["elf", "lime", "raw"];
const MIB = 1n << 20n;

function formatOf(text: string | undefined): DumpFormat {
  const f = (text ?? "elf") as DumpFormat;
  if (!FORMATS.includes(f)) throw new UsageError(`--format ${text}: not one of ${FORMATS.join(", ")}`);
  return f;
}

export const dumpCommand: CliCommand = {
  name: "dump",
  usage: "dump [--format elf|lime|raw] [--live] OUT",
  summary:
    "write a memory image of the guest (paused while copied unless --live); every reading command opens it with --dump",
  options: { format: { type: "string" }, live: { type: "boolean" } },
  needsTarget: true,
  // The image is written here, from guest RAM read here.
  local: true,
  check(ctx) {
    formatOf(stringValue(ctx.values, "format"));
    if (ctx.positionals.length !== 1)
      throw new UsageError("dump needs one output file", `usage: vmsight ${this.usage}`);
  },
  async run(ctx) {
    const format = formatOf(stringValue(ctx.values, "format"));
    const live = ctx.values.live === true;
    if (live && format === "elf")
      ctx.log("vmsight: --live has no effect on ELF: QEMU stops the guest while it writes");
    else if (live)
      ctx.log("vmsight: copying while the guest runs (--live): the image is not one instant of it");
    let shown = -1;
    const r = await needLocalVm(ctx).dump(ctx.positionals[0]!, {
      format,
      live,
      progress: (done, total) => {
        const pct = total === 0n ? 100 : Number((done * 100n) / total);
        if (pct < shown + 10 && done !== total) return;
        shown = pct;
        ctx.log(`vmsight: dump ${pct}% (${done / MIB} of ${total / MIB} MiB)`);
      },
    });
    ctx.out(
      ctx.json
        ? toJson([r])
        : `wrote ${r.format} image ${r.path} (${BigInt(r.bytes) / MIB} MiB of RAM)${r.sidecar ? `, sidecar ${r.sidecar}` : ""}`,
    );
    return 0;
  },
};
