/**
 * Bundles the CLI (and the watchdog process it spawns) into dist/src/bundle: a `vmsight` run
 * then loads one file instead of about a hundred modules, which was a third of a second run's
 * start-up. main.js (src/cli/bin.ts) runs cli.cjs through a V8 code cache. npm packages stay
 * external.
 * The bundle sits at the same depth as dist/src/cli, so paths the code resolves from its own
 * location (../web/, ../../../native/) land where they do unbundled.
 */
import { createHash } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

/** The repository root, from dist/scripts/build-cli.js. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export async function buildCli(root = ROOT): Promise<string> {
  const out = join(root, "dist/src/bundle");
  rmSync(out, { recursive: true, force: true });
  const common = {
    bundle: true,
    platform: "node",
    target: "node20",
    packages: "external",
    logLevel: "warning",
  } as const;
  // CommonJS, so that bin.ts can run it through a V8 code cache (vm.Script takes no ES module).
  // One file: code only serve, discover and the image builder need is compiled only when they
  // run (esbuild wraps each module in a function called on first import).
  const cli = join(out, "cli.cjs");
  await build({
    ...common,
    entryPoints: [join(root, "dist/src/cli/main.js")],
    format: "cjs",
    outfile: cli,
    // Paths the code resolves from its own location then start from the bundle's directory.
    define: { "import.meta.url": "__vmsightModuleUrl" },
    banner: { js: 'const __vmsightModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  });
  forBin(cli);
  const sha256 = createHash("sha256").update(readFileSync(cli)).digest("hex");
  await build({
    ...common,
    entryPoints: [join(root, "dist/src/cli/bin.js")],
    format: "esm",
    outfile: join(out, "main.js"),
    define: { VMSIGHT_CLI_SHA256: JSON.stringify(sha256) },
  });
  await build({
    ...common,
    entryPoints: [join(root, "dist/src/events/watchdog-main.js")],
    format: "esm",
    outfile: join(out, "watchdog-main.js"),
  });
  return out;
}

/**
 * What bin.ts reads must be ASCII JavaScript. esbuild escapes every non-ASCII character in code
 * but keeps some comments as written: those are escaped too (in a comment, harmlessly), so that
 * the file reads as Latin-1, 3 ms where decoding UTF-8 takes 11, and V8 keeps a one-byte string.
 * The shebang line, not JavaScript, goes. The file is one function expression, as Node wraps a
 * CommonJS module, so that bin.ts compiles the string it read: wrapping it there copied 774 KB
 * into memory the process had not touched yet (~2 ms of page faults here).
 */
function forBin(file: string): void {
  const ascii = readFileSync(file, "utf8")
    .replace(/^#!.*\n/, "")
    .replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  writeFileSync(
    file,
    `(function (exports, require, module, __filename, __dirname) {"use strict";${ascii}\n})`,
  );
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
