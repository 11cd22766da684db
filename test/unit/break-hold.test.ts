/**
 * A breakpoint armed with `hold` (the server's `wait`) against a scripted gdbstub: the vCPU stays
 * stopped (no `c`) until the event's respond() is called or the deadline passes; set_registers
 * writes the registers before it runs on, skip moves rip past a NOP and refuses an instruction
 * of unknown length, and an answer after the first one or after the deadline is refused. A
 * stream that ends lets its held vCPUs go.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type EventBody, armTrace } from "../../src/commands/trace.js";
import { EventEngine } from "../../src/events/engine.js";
import type { Respond } from "../../src/events/hold.js";
import type { LinuxGuest } from "../../src/events/linux-guest.js";
import { type EventHub, eventStream } from "../../src/lib/events.js";
import { TrapCore } from "../../src/qemu/traps.js";
import { F_NOP, F_PUSH, FakeGdb, FakeOs } from "../support/fake-gdb.js";
import { until } from "../support/rpc-client.js";

async function held(at: string, deadlineMs = 60_000) {
  const gdb = new FakeGdb();
  const engine = new EventEngine({ traps: new TrapCore(gdb), os: new FakeOs() });
  const events: { e: EventBody; respond: Respond | undefined }[] = [];
  const guest = {} as LinuxGuest; // a breakpoint needs no Linux knowledge
  await armTrace(engine, guest, { kind: "break", at, hold: { deadlineMs } }, (e, respond) =>
    events.push({ e, respond }),
  );
  gdb.script = [gdb.at(at === "f_nop" ? F_NOP : F_PUSH), "wait"];
  const run = engine.run();
  await until(() => events.length === 1, "the breakpoint event");
  const continues = () => gdb.log.filter((p) => p === "c").length;
  const end = async () => {
    engine.stop();
    await run;
    await engine.close();
  };
  return { gdb, events, continues, end, respond: events[0]!.respond! };
}

test("a held vCPU runs on only once answered; set_registers is written before it does", async () => {
  const h = await held("f_push");
  assert.equal(h.events[0]?.e.type, "break");
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(h.continues(), 1, "no `c` while held");
  await h.respond({ action: "set_registers", registers: { rax: "0x2a", rip: "0xffffffff81002000" } });
  await until(() => h.continues() === 2, "the guest runs on");
  const after = h.gdb.log.slice(h.gdb.log.indexOf("P:rax=2a"));
  // rip moved off the breakpoint: no lift-and-step before the next `c`.
  assert.deepEqual(after.slice(0, 3), ["P:rax=2a", "P:rip=ffffffff81002000", "c"]);
  await assert.rejects(h.respond({ action: "continue" }), { code: "E_HOLD_ENDED" });
  await h.end();
});

test("with no answer the vCPU continues at the deadline; a late answer is refused", async () => {
  const h = await held("f_push", 30);
  await until(() => h.continues() === 2, "the deadline lets it go");
  const a = F_PUSH.toString(16);
  assert.ok(h.gdb.log.includes(`z0,${a},1`), "stepped off the breakpoint as usual");
  await assert.rejects(h.respond({ action: "skip" }), { code: "E_HOLD_ENDED" });
  await h.end();
});

test("skip moves rip past a NOP; an instruction of unknown length is refused and the vCPU continues", async () => {
  const nop = await held("f_nop");
  await nop.respond({ action: "skip" });
  await until(() => nop.continues() === 2, "runs on");
  assert.ok(nop.gdb.log.includes(`P:rip=${(F_NOP + 5n).toString(16)}`));
  await nop.end();

  const push = await held("f_push");
  await assert.rejects(push.respond({ action: "skip" }), { code: "E_USAGE" });
  await until(() => push.continues() === 2, "runs on anyway");
  assert.ok(!push.gdb.log.some((p) => p.startsWith("P:rip")));
  await push.end();
});

test("a stream that ends lets the vCPU it holds go (continue)", async () => {
  let out: (e: EventBody, respond?: Respond) => void = () => {};
  const hub = {
    async join(_o: unknown, o: typeof out) {
      out = o;
      return { engine: { traps: () => [] } };
    },
    async leave() {},
  } as unknown as EventHub;
  const stream = eventStream(hub, { types: ["break"], at: "f", hold: { deadlineMs: 60_000 } });
  const first = stream.next();
  await new Promise((r) => setImmediate(r));
  const answers: string[] = [];
  const body: EventBody = { type: "break", at: "f", cpu: 0, pid: 1, tid: 1, comm: "init", rip: 1n, args: [] };
  out(body, async (a) => {
    answers.push(a.action);
  });
  const e = (await first).value;
  assert.equal(typeof e?.respond, "function", "the record carries respond");
  assert.equal(e?.type, "break");
  await stream.return?.();
  assert.deepEqual(answers, ["continue"]);
});
