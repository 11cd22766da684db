import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { cliMain, runNode } from "../support/cli.js";

/**
 * The `vmsight` executable keeps V8's compiled code of the CLI bundle (src/cli/bin.ts). Loading
 * it is running it, so: the file is named by the bundle's SHA-256, lives in a directory only we
 * may write, and anything wrong with it costs a recompile, never the command.
 */
const home = mkdtempSync(join(tmpdir(), "vmsight-code-cache-"));
after(() => rmSync(home, { recursive: true, force: true }));

const bundleSha = createHash("sha256")
  .update(readFileSync(join(dirname(cliMain()), "cli.cjs")))
  .digest("hex");

async function help(cacheRoot: string): Promise<string> {
  const r = await runNode(cliMain(), ["help"], { env: { VMSIGHT_CACHE: cacheRoot } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  return r.stdout;
}

test("the first successful run keeps the code, named by the bundle's hash, in a 0700 directory", async () => {
  const root = join(home, "fresh");
  const text = await help(root);
  assert.match(text, /vmsight/);
  const dir = join(root, "code");
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  const files = readdirSync(dir);
  assert.equal(files.length, 1, files.join(", "));
  assert.ok(files[0]!.startsWith(bundleSha.slice(0, 24)), `${files[0]} is not named by ${bundleSha}`);
  assert.ok(files[0]!.endsWith(`-${process.version}-${process.arch}-help.bin`), files[0]);
  const file = join(dir, files[0]!);
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.ok(statSync(file).size > 10_000, "the cache holds compiled code");

  // Accepted by the next run: left as it is.
  const before = statSync(file).mtimeMs;
  assert.equal(await help(root), text);
  assert.equal(statSync(file).mtimeMs, before);
});

test("a damaged cache is recompiled and replaced; the command is unaffected", async () => {
  const root = join(home, "damaged");
  const text = await help(root);
  const dir = join(root, "code");
  const file = join(dir, readdirSync(dir)[0]!);
  const garbage = Buffer.alloc(statSync(file).size, 0x5a);
  writeFileSync(file, garbage);
  assert.equal(await help(root), text);
  assert.notDeepEqual(readFileSync(file), garbage, "the rejected cache was written anew");
});

test("a code directory others may write is not used", async () => {
  const root = join(home, "planted");
  mkdirSync(join(root, "code"), { recursive: true });
  chmodSync(join(root, "code"), 0o777);
  await help(root);
  assert.deepEqual(readdirSync(join(root, "code")), []);
});
