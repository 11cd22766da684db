/**
 * Enforces the one-way layering of src/: a folder may import only from itself, from util/,
 * and from folders listed before it in LAYERS. Run by `npm run lint` and by the unit tests.
 */
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

export const LAYERS = [
  "transport",
  "memory",
  "arch",
  "qemu",
  "symbols",
  "os",
  "discovery",
  "events",
  "guests",
  "commands",
  "lib",
  "server",
  "cli",
  "web",
] as const;

/**
 * The terminal and the page sit side by side at the top and must not import each other. The
 * server is below the CLI: `vmsight serve` starts it, and the CLI will be one of its clients.
 */
const PEERS = new Set(["cli", "web"]);

function layerOf(srcRoot: string, file: string): string {
  return relative(srcRoot, file).split(/[\\/]/)[0] ?? "";
}

function* sourceFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* sourceFiles(path);
    else if (path.endsWith(".ts")) yield path;
  }
}

/** A folder the layer list does not name would escape the check, so it is a violation itself. */
function unknownFolders(srcRoot: string): string[] {
  const known = new Set<string>([...LAYERS, "util"]);
  return readdirSync(srcRoot)
    .filter((name) => statSync(join(srcRoot, name)).isDirectory() && !known.has(name))
    .map((name) => `${name}/ is not in the layer list of scripts/check-layers.ts`);
}

/** The README's layout section is the map a new reader uses: every src/ folder must be on it. */
export function readmeOmissions(srcRoot: string, readme: string): string[] {
  return readdirSync(srcRoot)
    .filter((name) => statSync(join(srcRoot, name)).isDirectory() && !readme.includes(`src/${name}/`))
    .map((name) => `src/${name}/ is missing from the README's layout section`);
}

export function layerViolations(srcRoot: string): string[] {
  const rank = new Map<string, number>(LAYERS.map((l, i) => [l, i]));
  const problems: string[] = unknownFolders(srcRoot);
  for (const file of sourceFiles(srcRoot)) {
    const from = layerOf(srcRoot, file);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["'](\.[^"']+)["']/g)) {
      const target = resolve(dirname(file), m[1] ?? "");
      const to = layerOf(srcRoot, target);
      if (to === from || to === "util") continue;
      const ok =
        from !== "util" &&
        rank.has(to) &&
        rank.has(from) &&
        (rank.get(to) ?? 0) < (rank.get(from) ?? 0) &&
        !(PEERS.has(from) && PEERS.has(to));
      if (!ok) problems.push(`${relative(srcRoot, file)} imports ${m[1]} (${from} -> ${to})`);
    }
  }
  return problems;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, "/"))) {
  const root = resolve(process.argv[2] ?? "src");
  const readme = join(root, "..", "README.md");
  const problems = [...layerViolations(root), ...readmeOmissions(root, readFileSync(readme, "utf8"))];
  for (const p of problems) console.error(`layer violation: ${p}`);
  process.exit(problems.length === 0 ? 0 : 1);
}
