/** Runs every benchmark in bench/ one after another, each in its own process (each boots a guest). */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { basename, join } from "node:path";

const here = import.meta.dirname;
const only = process.argv.slice(2);
const files = readdirSync(here)
  .filter((f) => f.endsWith(".js") && f !== "run.js")
  .filter((f) => only.length === 0 || only.includes(basename(f, ".js")))
  .sort();
let failed = 0;
for (const f of files) {
  console.log(`\n### ${basename(f, ".js")}`);
  const r = spawnSync(process.execPath, [join(here, f)], { stdio: "inherit" });
  if (r.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
