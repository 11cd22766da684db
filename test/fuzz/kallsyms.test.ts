import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { recoverKallsymsWithLayout } from "../../src/symbols/kallsyms/recover.js";
import { parseSystemMap } from "../../src/symbols/kallsyms/system-map.js";
import { BASE, TEXT, build, sampleSymbols } from "../fixtures/kallsyms/builder.js";
import { fuzzTargets } from "./harness.js";

fuzzTargets(import.meta.url, [
  {
    name: "kallsyms",
    seeds: () => {
      const syms = sampleSymbols().slice(0, 300);
      return (["6.1", "6.12", "5.x-absolute"] as const).map((order) => build(syms, order, BASE, TEXT).image);
    },
    run: (image) => {
      const { table } = recoverKallsymsWithLayout(image, BASE);
      // Each symbol costs at least a length byte and a token in kallsyms_names.
      assert.ok(table.size <= image.length / 2, `${table.size} symbols from ${image.length} bytes`);
      for (const s of table.symbols) assert.ok(s.name.length <= 1024, `a ${s.name.length}-byte name`);
    },
    runs: 3000,
  },
  {
    name: "system-map",
    seeds: () =>
      ["system-map-sample.txt", "proc-kallsyms-sample.txt"].map((f) =>
        readFileSync(new URL(`../../../test/fixtures/kallsyms/${f}`, import.meta.url)),
      ),
    run: (bytes) => {
      const text = Buffer.from(bytes).toString("latin1");
      const table = parseSystemMap(text);
      assert.ok(table.size <= text.split("\n").length, `${table.size} symbols`);
      for (const s of table.symbols.slice(0, 8)) table.format(s.address);
    },
    runs: 3000,
  },
]);
