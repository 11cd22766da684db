import { spawn } from "node:child_process";
import { statSync } from "node:fs";
import { resolve } from "node:path";

/**
 * The `vmsight` command as installed: the bundle (scripts/build-cli.ts), so the tests run what
 * users run. A bundle older than the compiled sources would test old code: refused, with the fix.
 */
export function cliMain(): string {
  const dist = resolve(import.meta.dirname, "../../src");
  const bundle = resolve(dist, "bundle/main.js");
  const compiled = resolve(dist, "cli/main.js");
  const age = (f: string) => statSync(f, { throwIfNoEntry: false })?.mtimeMs;
  const b = age(bundle);
  const c = age(compiled);
  if (b === undefined || (c !== undefined && b < c)) {
    throw new Error(
      `${bundle} is missing or older than ${compiled}: run \`npm run build\` (or scripts/setup.sh)`,
    );
  }
  return bundle;
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Sees stderr as it comes, whole so far. */
  readonly onStderr?: (text: string) => void;
  readonly timeoutMs?: number;
}

/** Runs a program in its own process and collects its output; fails if it cannot start or outlives its time. */
export function runProcess(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<CliResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((done, fail) => {
    const child = spawn(cmd, args, {
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.env === undefined ? {} : { env: { ...process.env, ...opts.env } }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      opts.onStderr?.(stderr);
    });
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`${args.join(" ")} did not finish within ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      fail(new Error(`${cmd} did not start: ${error.message}`));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

/** Runs a script with this node, in its own process; fails if it outlives its time. */
export function runNode(file: string, args: readonly string[], opts: RunOptions = {}): Promise<CliResult> {
  return runProcess(process.execPath, [file, ...args], opts);
}

/** Runs the built `vmsight` CLI as a user would, in its own process. */
export function runCli(args: readonly string[], timeoutMs = 60_000): Promise<CliResult> {
  return runNode(cliMain(), args, { timeoutMs });
}

/** Runs the CLI and parses its --json output; fails the test with stderr when it exits non-zero. */
export async function cliJson<T = unknown>(args: readonly string[]): Promise<T> {
  const r = await runCli([...args, "--json"]);
  if (r.code !== 0) throw new Error(`vmsight ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** A user error is one line ("vmsight: …") plus an optional hint, and never a stack trace. */
export function assertCleanError(r: CliResult): void {
  if (r.code === 0) throw new Error(`expected failure, got success: ${r.stdout}`);
  const lines = r.stderr.trimEnd().split("\n");
  if (!lines[0]?.startsWith("vmsight: ") || lines.length > 2 || /\n\s+at /.test(r.stderr)) {
    throw new Error(`not a clean one-line error:\n${r.stderr}`);
  }
  if (lines[1] !== undefined && !lines[1].startsWith("  hint: "))
    throw new Error(`second line is not a hint: ${lines[1]}`);
}
