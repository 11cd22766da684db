/**
 * Fuzzing harness for the parsers of guest and peer bytes. Each target runs in a worker thread
 * with a capped heap, and posts every input before it runs it, so a hang or a blow-up is caught
 * from outside (the worker is stopped) and the input that caused it is saved to the corpus.
 *
 * A target passes on an input when it returns, or throws a VmsightError whose code is in
 * ERROR_CODES; any other exception, an assertion of the target's own bounds, a run longer than
 * the input budget, or running out of heap is a failure.
 *
 * Environment: VMSIGHT_FUZZ_RUNS (inputs per target; default each target's CI count),
 * VMSIGHT_FUZZ_SCALE (multiplies each target's CI count instead; `npm run fuzz` sets it),
 * VMSIGHT_FUZZ_SEED (fast-check seed; default random, printed on failure),
 * VMSIGHT_FUZZ_INPUT_MS (per-input budget, default 5000).
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import fc from "fast-check";
import { ERROR_CODES, VmsightError } from "../../src/util/errors.js";
import { type Mutation, inputs } from "./mutate.js";

export interface FuzzTarget {
  readonly name: string;
  /** Valid inputs to mutate (built in the worker only). */
  readonly seeds: () => Uint8Array[];
  /** Parses one input; throws a plain Error (or fails an assertion) when a bound is broken. */
  readonly run: (input: Uint8Array) => unknown;
  /** Inputs per CI run. */
  readonly runs: number;
  /** Longest random (non-seed) input; mutated seeds stay within twice their seed's length. */
  readonly maxRandomBytes?: number;
  /** Inputs built from scratch, valid by construction, mixed in with the mutated ones. */
  readonly generate?: () => fc.Arbitrary<Uint8Array>;
  /** Extra mutations for this format (e.g. pointers into the seed). */
  readonly mutations?: (seeds: Uint8Array[]) => fc.WeightedArbitrary<Mutation>[];
}

/** The source tree's corpus, also when running from dist/test/fuzz. */
export const CORPUS = join(dirname(fileURLToPath(import.meta.url)), "../../../test/fuzz/corpus");

const HEAP_MB = 512;
const env = (name: string) => {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : Number(v);
};

type Mode = "corpus" | "fuzz";
/** How inputs ended: a result, or a typed error (mostly rejected early means a weak fuzzer). */
interface Stats {
  results: number;
  typedErrors: number;
}
type FromWorker =
  | { kind: "input"; bytes: Uint8Array; label: string }
  | { kind: "done"; ok: true; runs: number; stats: Stats }
  | { kind: "done"; ok: false; message: string; bytes?: Uint8Array };

/**
 * Registers, in the main thread, one corpus test and one fuzz test per target; in a worker,
 * runs the target the main thread asked for.
 */
export function fuzzTargets(moduleUrl: string, targets: readonly FuzzTarget[]): void {
  if (!isMainThread) {
    const wanted = workerData as { target: string; mode: Mode; runs: number; seed: number; inputMs: number };
    const target = targets.find((t) => t.name === wanted.target);
    if (target) runInWorker(target, wanted);
    return;
  }
  for (const target of targets) {
    describe(`fuzz ${target.name}`, () => {
      test("corpus of inputs that once failed", async (t) => {
        t.diagnostic(await inWorker(moduleUrl, target, "corpus"));
      });
      test("mutated and random inputs", async (t) => {
        t.diagnostic(await inWorker(moduleUrl, target, "fuzz"));
      });
    });
  }
}

async function inWorker(moduleUrl: string, target: FuzzTarget, mode: Mode): Promise<string> {
  const runs = env("VMSIGHT_FUZZ_RUNS") ?? Math.round(target.runs * (env("VMSIGHT_FUZZ_SCALE") ?? 1));
  const seed = env("VMSIGHT_FUZZ_SEED") ?? (Math.random() * 2 ** 31) | 0;
  const inputMs = env("VMSIGHT_FUZZ_INPUT_MS") ?? 5000;
  const worker = new Worker(new URL(moduleUrl), {
    workerData: { target: target.name, mode, runs, seed, inputMs },
    resourceLimits: { maxOldGenerationSizeMb: HEAP_MB },
  });
  let last: { bytes: Uint8Array; label: string } | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stats: Stats | undefined;
  const outcome = await new Promise<string | undefined>((resolve) => {
    // The worker checks each input's time itself; this catches the ones that never return.
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        void worker.terminate();
        resolve(`an input ran for more than ${(4 * inputMs) / 1000} s (hang?)`);
      }, 4 * inputMs);
    };
    arm();
    worker.on("message", (m: FromWorker) => {
      if (m.kind === "input") {
        last = m;
        arm();
      } else if (m.ok) {
        stats = m.stats;
        resolve(undefined);
      } else {
        if (m.bytes) last = { bytes: m.bytes, label: "shrunk counterexample" };
        resolve(m.message);
      }
    });
    worker.on("error", (e) => resolve(`worker died: ${(e as Error).message}`));
    worker.on("exit", (code) => resolve(`worker exited (${code}) before reporting`));
  });
  clearTimeout(timer);
  await worker.terminate();
  if (outcome === undefined) {
    return `${target.name}: ${stats?.results} results, ${stats?.typedErrors} typed errors (seed ${seed})`;
  }
  const where = last && mode === "fuzz" ? `; input saved as ${save(target.name, last.bytes)}` : "";
  const input = last ? ` on ${last.label}` : "";
  throw new Error(`${target.name}${input}: ${outcome} (seed ${seed}, VMSIGHT_FUZZ_SEED to replay)${where}`);
}

function save(name: string, bytes: Uint8Array): string {
  const dir = join(CORPUS, name);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${createHash("sha256").update(bytes).digest("hex").slice(0, 16)}.bin`);
  writeFileSync(file, bytes);
  return file;
}

function corpusFiles(name: string): string[] {
  try {
    return readdirSync(join(CORPUS, name))
      .filter((f) => f.endsWith(".bin"))
      .sort();
  } catch {
    return [];
  }
}

function runInWorker(
  target: FuzzTarget,
  o: { mode: Mode; runs: number; seed: number; inputMs: number },
): void {
  const post = (m: FromWorker) => parentPort!.postMessage(m);
  const stats: Stats = { results: 0, typedErrors: 0 };
  const once = (bytes: Uint8Array, label: string) => {
    post({ kind: "input", bytes, label });
    if (checkOne(target, bytes, o.inputMs)) stats.results++;
    else stats.typedErrors++;
  };
  if (o.mode === "corpus") {
    const files = corpusFiles(target.name);
    for (const f of files) {
      try {
        once(readFileSync(join(CORPUS, target.name, f)), f);
      } catch (e) {
        post({ kind: "done", ok: false, message: (e as Error).message });
        return;
      }
    }
    post({ kind: "done", ok: true, runs: files.length, stats });
    return;
  }
  const seeds = target.seeds();
  // Valid inputs first: they must pass too, and they show the harness reaches the parser.
  for (const [i, s] of seeds.entries()) {
    try {
      once(s, `seed ${i}`);
    } catch (e) {
      post({ kind: "done", ok: false, message: `seed ${i}: ${(e as Error).message}` });
      return;
    }
  }
  const mutated = inputs(seeds, target.maxRandomBytes ?? 4096, target.mutations?.(seeds) ?? []);
  const arb = target.generate ? fc.oneof(mutated, target.generate()) : mutated;
  const details = fc.check(
    fc.property(arb, (bytes) => once(bytes, "a generated input")),
    { numRuns: o.runs, seed: o.seed },
  );
  if (!details.failed) {
    post({ kind: "done", ok: true, runs: details.numRuns, stats });
    return;
  }
  const bytes = details.counterexample?.[0];
  const message = (details.errorInstance as Error | undefined)?.message ?? "property failed";
  post({ kind: "done", ok: false, message: `${message} (after ${details.numShrinks} shrinks)`, bytes });
}

/** One input: a result (true) or a typed error (false), within the time budget. */
export function checkOne(target: FuzzTarget, bytes: Uint8Array, inputMs: number): boolean {
  const started = performance.now();
  let result = true;
  try {
    target.run(bytes);
  } catch (e) {
    if (!(e instanceof VmsightError) || !ERROR_CODES.includes(e.code)) {
      const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
      throw new Error(`untyped exception ${what}`, { cause: e });
    }
    result = false;
  }
  const ms = performance.now() - started;
  if (ms > inputMs) throw new Error(`one input took ${Math.round(ms)} ms (budget ${inputMs} ms)`);
  return result;
}
