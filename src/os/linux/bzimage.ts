import { spawnSync } from "node:child_process";
import { VmsightError } from "../../util/errors.js";

const COMPRESSORS: { magic: number[]; cmd: string; args: string[] }[] = [
  { magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], cmd: "xz", args: ["-dc", "--single-stream"] },
  { magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: "zstd", args: ["-dc"] },
  { magic: [0x02, 0x21, 0x4c, 0x18], cmd: "lz4", args: ["-dc"] },
  { magic: [0x1f, 0x8b, 0x08], cmd: "gzip", args: ["-dc"] },
];

/**
 * Finds the compressed payload in a bzImage the way the kernel's scripts/extract-vmlinux does:
 * try each compressor's magic and keep the first output that is an ELF file. Trailing bytes
 * after the stream make some tools exit non-zero, so success is judged by the output.
 */
export function extractVmlinux(bzImage: Buffer): Buffer {
  for (const { magic, cmd, args } of COMPRESSORS) {
    let at = bzImage.indexOf(Buffer.from(magic));
    while (at >= 0) {
      const r = spawnSync(cmd, args, { input: bzImage.subarray(at), maxBuffer: 1 << 30 });
      const out = r.stdout;
      if (out && out.length > 4 && out.readUInt32BE(0) === 0x7f454c46) return out;
      at = bzImage.indexOf(Buffer.from(magic), at + 1);
    }
  }
  throw new VmsightError("E_KERNEL_FORMAT", "no compressed ELF kernel found in this bzImage");
}
