/**
 * The watchdog process (spawned by watchdog.ts, detached in its own session so a terminal's ^C
 * does not reach it). It reads one JSON message a line on stdin: the plan, then `add`/`remove`
 * of each trap as vmsight inserts and removes them, then `bye` on a clean exit. If stdin ends
 * without `bye`, vmsight died: undo its traps.
 */
import { appendFileSync } from "node:fs";
import { type RawTrap, rawKey } from "../qemu/traps.js";
import { VmsightError } from "../util/errors.js";
import { cleanupTraps } from "./watchdog-cleanup.js";

interface Message {
  readonly plan?: { gdbPath: string; qmpPath: string; resume: boolean };
  readonly add?: { type: number; addr: string; kind: number };
  readonly remove?: { type: number; addr: string; kind: number };
  readonly bye?: boolean;
}

const MAX_TRAPS = 100_000;
const logFile = process.env.VMSIGHT_WATCHDOG_LOG;
const log = (line: string) => {
  if (logFile) appendFileSync(logFile, `${new Date().toISOString()} [${process.pid}] ${line}\n`);
};

let plan: Message["plan"];
let bye = false;
const traps = new Map<string, RawTrap>();

function toRaw(m: { type: number; addr: string; kind: number }): RawTrap {
  if (![0, 1, 2, 3, 4].includes(m.type)) throw new VmsightError("E_WATCHDOG", `bad trap type ${m.type}`);
  return { type: m.type as RawTrap["type"], addr: BigInt(m.addr), kind: m.kind };
}

function onMessage(m: Message): void {
  if (m.plan) plan = m.plan;
  if (m.add && traps.size < MAX_TRAPS) {
    const t = toRaw(m.add);
    traps.set(rawKey(t), t);
  }
  if (m.remove) traps.delete(rawKey(toRaw(m.remove)));
  if (m.bye) bye = true;
}

let buffered = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk: string) => {
  buffered += chunk;
  for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    try {
      onMessage(JSON.parse(line) as Message);
    } catch (error) {
      log(`bad message ${line.slice(0, 200)}: ${(error as Error).message}`);
    }
  }
});
process.stdin.on("error", () => {});
process.stdin.on("close", () => {
  if (bye || !plan) {
    log(bye ? "clean goodbye" : "no plan received");
    process.exit(0);
  }
  log(`vmsight went away without goodbye: removing ${traps.size} trap(s)`);
  cleanupTraps({ ...plan, traps: [...traps.values()], log }).then(
    (r) => {
      log(`done: ${JSON.stringify(r)}`);
      process.exit(0);
    },
    (error) => {
      log(`cleanup failed: ${(error as Error).message}`);
      process.exit(1);
    },
  );
});
