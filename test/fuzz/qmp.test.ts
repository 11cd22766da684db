import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { QmpDecoder, type QmpFrame } from "../../src/transport/qmp/codec.js";
import { ERROR_CODES, VmsightError } from "../../src/util/errors.js";
import { chunks } from "./chunks.js";
import { fuzzTargets } from "./harness.js";

const SESSION = new URL("../../../test/fixtures/qmp/qemu72-session.json", import.meta.url);

const MAX_LINE = 2048;

function received(): string {
  const s = JSON.parse(readFileSync(SESSION, "utf8")) as { transcript: { dir: string; line: string }[] };
  return s.transcript
    .filter((e) => e.dir === "recv")
    .map((e) => `${e.line}\r\n`)
    .join("");
}

function decodeAll(parts: Uint8Array[]): QmpFrame[] {
  const d = new QmpDecoder({ maxLineBytes: MAX_LINE });
  const frames = parts.flatMap((p) => d.push(p));
  assert.ok(d.bufferedBytes <= MAX_LINE, `${d.bufferedBytes} bytes held back`);
  d.bufferedText();
  return frames;
}

fuzzTargets(import.meta.url, [
  {
    name: "qmp-stream",
    seeds: () => [
      Buffer.from(received(), "utf8"),
      Buffer.from(
        '{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\n{"return": [], "id": "é"}\n' +
          '{"error": {"class": "GenericError", "desc": "x"}, "id": 3}\r\n\n',
        "utf8",
      ),
    ],
    run: (bytes) => {
      const frames = decodeAll(chunks(bytes));
      assert.deepEqual(frames, decodeAll([bytes]), "frames depend on how the stream was split");
      assert.ok(frames.length <= bytes.length, `${frames.length} frames from ${bytes.length} bytes`);
      for (const f of frames) {
        if (!f.ok) {
          assert.ok(
            f.error instanceof VmsightError && ERROR_CODES.includes(f.error.code),
            "an untyped frame error",
          );
        }
      }
    },
    runs: 3000,
  },
]);
