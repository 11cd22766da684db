/**
 * Bundles the CLI (and the watchdog process it spawns) into dist/src/bundle: a `vmsight` run
 * then loads a few files instead of about a hundred modules, which is a third of a second run's
 * start-up. Code only a few commands need (serve, discover, the guest builder) stays in chunks
 * of its own, loaded when those commands run. npm packages stay external.
 * The bundle sits at the same depth as dist/src/cli, so paths the code resolves from its own
 * location (../web/, ../../../native/) land where they do unbundled.
 */
import { rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

/** The repository root, from dist/scripts/build-cli.js. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export async function buildCli(root = ROOT): Promise<string> {
  const out = join(root, "dist/src/bundle");
  // Chunk names carry content hashes: without this, every build would leave the last one's behind.
  rmSync(out, { recursive: true, force: true });
  await build({
    entryPoints: [join(root, "dist/src/cli/main.js"), join(root, "dist/src/events/watchdog-main.js")],
    bundle: true,
    splitting: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    outdir: out,
    entryNames: "[name]",
    logLevel: "warning",
  });
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  buildCli().then(
    (out) => console.log(`CLI bundled in ${out}`),
    (error: unknown) => {
      console.error(String(error));
      process.exitCode = 1;
    },
  );
}
