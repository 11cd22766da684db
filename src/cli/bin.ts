#!/usr/bin/env node
/**
 * The `vmsight` executable (bundled as dist/src/bundle/main.js): runs the CLI bundle beside it
 * (cli.cjs) through V8's code cache, as Node 22's module.enableCompileCache() does and Node 20
 * does not. Without it every run parses the bundle and compiles each function it calls anew:
 * ~20 ms of a 300 ms `ps`. The cache is the bytecode V8 held when a run ended, so it covers the
 * functions that run used; one file per command word, as `ps` and `serve` use different code.
 *
 * Loading bytecode is running code: the cache lives in a private directory (ours, 0700), and its
 * name carries the bundle's SHA-256 (set at build time), because V8 checks only the source's
 * length and would run a stale cache against a new bundle of the same size. Any trouble with
 * the cache (unwritable home, a rejected file) costs speed only: the bundle then compiles as usual.
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Script } from "node:vm";
import { cacheRoot } from "../guests/cache.js";
import { ensurePrivateDir } from "../util/private-dir.js";

/** SHA-256 of cli.cjs, hex; put in by scripts/build-cli.ts. */
declare const VMSIGHT_CLI_SHA256: string;

/** Where compiled code is kept: `rm -rf` it to start cold. */
export function codeCacheDir(): string {
  return join(cacheRoot(), "code");
}

/** The command word (`ps`, `serve`, …), for the cache file name; "none" when there is none. */
function commandWord(argv: readonly string[]): string {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    // The global options that take a value (cli/main.ts): a socket called "ps" is not the command.
    if (a === "--qmp" || a === "--dump") i++;
    else if (/^[a-z][a-z0-9-]{0,31}$/.test(a)) return a;
  }
  return "none";
}

function cacheFile(): string | undefined {
  try {
    mkdirSync(cacheRoot(), { recursive: true, mode: 0o700 });
    const dir = ensurePrivateDir(codeCacheDir());
    const key = `${VMSIGHT_CLI_SHA256.slice(0, 24)}-${process.version}-${process.arch}`;
    return join(dir, `${key}-${commandWord(process.argv.slice(2))}.bin`);
  } catch {
    return undefined;
  }
}

function readCache(file: string | undefined): Buffer | undefined {
  try {
    return file === undefined ? undefined : readFileSync(file);
  } catch {
    return undefined;
  }
}

/** Written once, by a run that succeeded (a failed run may have used little of the code). */
function keepOnExit(script: Script, file: string): void {
  process.once("exit", (code) => {
    if (code !== 0) return;
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
      renameSync(tmp, file);
    } catch {
      // Speed only: the next run compiles again.
      try {
        rmSync(tmp, { force: true });
      } catch {}
    }
  });
}

function runCli(): void {
  const bundle = join(dirname(fileURLToPath(import.meta.url)), "cli.cjs");
  // ASCII, and one function expression as Node wraps a CommonJS module (scripts/build-cli.ts
  // makes it so): Latin-1 reads it as it is, faster than UTF-8, and V8 compiles the string read.
  const source = readFileSync(bundle, "latin1");
  const file = cacheFile();
  const cachedData = readCache(file);
  const script = new Script(source, { filename: bundle, cachedData });
  if (file !== undefined && (cachedData === undefined || script.cachedDataRejected)) keepOnExit(script, file);
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dirname(bundle));
}

runCli();
