/**
 * Bundles the dashboard (src/web) into dist/src/web: one script, one stylesheet and the page,
 * all served by `vmsight serve` from the package itself (no CDN: it works offline).
 * src/web has its own tsconfig (DOM types), checked by `tsc -p src/web`.
 */
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

/** The repository root, from dist/scripts/build-web.js. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export async function buildWeb(root = ROOT): Promise<string> {
  const src = join(root, "src/web");
  const out = join(root, "dist/src/web");
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(src, "main.ts")],
    bundle: true,
    format: "esm",
    target: "es2022",
    minify: true,
    sourcemap: false,
    outfile: join(out, "app.js"),
    logLevel: "warning",
  });
  copyFileSync(join(src, "index.html"), join(out, "index.html"));
  copyFileSync(join(src, "app.css"), join(out, "app.css"));
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  buildWeb().then(
    (out) => console.log(`dashboard bundled in ${out}`),
    (error: unknown) => {
      console.error(String(error));
      process.exitCode = 1;
    },
  );
}
