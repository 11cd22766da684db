/**
 * Issue 5 (events) end to end: the guest does known things over its serial console and prints
 * what it sees (pids, parents, exit statuses, /proc/modules); vmsight's streams must report
 * the same. Also: traps leave guest memory alone under TCG, bad traps fail cleanly, and a
 * SIGKILLed vmsight leaves the guest running with no trap behind.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { openEventSession } from "../../src/events/session.js";
import { Target } from "../../src/qemu/session.js";
import { va } from "../../src/util/address.js";
import { BackgroundCli } from "../support/background.js";
import { assertCleanError, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";
import { assertRunsWithNoTrap, guestStatus as status } from "../support/no-trap.js";

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.12,6.1").split(",");

type Json = Record<string, unknown> & { type: string; pid: number };

/** Parses `TAG n n …` lines the guest printed. */
function tagged(output: string, tag: string): number[] {
  const m = new RegExp(`^${tag} ([\\d ]+)$`, "m").exec(output);
  if (!m) throw new Error(`guest did not print ${tag}:\n${output}`);
  return m[1]!.trim().split(/\s+/).map(Number);
}

const SCRIPT = [
  'echo "OUTER $$ $PPID"',
  'sh -c "echo INNER \\$\\$ \\$PPID; exit 7"',
  'echo "RC $?"',
  "workload forkloop 3 >/dev/null & F=$!",
  'echo "FL $F"',
  "wait $F",
  "sleep 100 & K=$!",
  "sleep 1",
  "kill -9 $K",
  "wait $K",
  'echo "KILLED $K $?"',
].join("; ");

async function procStreamMatchesTheGuest(g: TestGuest): Promise<void> {
  const tracer = new BackgroundCli(["--qmp", g.qmpSocket, "trace", "proc", "--json"]);
  await tracer.ready();
  const out = await g.serial.command(`sh -c '${SCRIPT}'`, 120_000);
  // The outer sh exits after its last echo reached the console: its exit is the last event, and
  // on a loaded host (or an SMP guest) it can cross the trap a moment after the command returns.
  const [outerPid] = tagged(out, "OUTER") as [number];
  const exitLine = new RegExp(`"type":"exit","pid":${outerPid},`);
  await tracer.waitFor(exitLine, 10_000, "stdout").catch(() => {});
  tracer.kill("SIGINT");
  assert.equal(await tracer.exited, 0, tracer.stderr);
  assert.match(tracer.stderr, /traps removed/);
  const [outer, shell] = tagged(out, "OUTER") as [number, number];
  const [inner, innerParent] = tagged(out, "INNER") as [number, number];
  const [fl] = tagged(out, "FL") as [number];
  const [killed, killedRc] = tagged(out, "KILLED") as [number, number];
  assert.deepEqual(tagged(out, "RC"), [7]);
  assert.equal(innerParent, outer);
  assert.equal(killedRc, 137);

  const ev = tracer.events<Json>();
  const of = (pid: number, type: string) => ev.filter((e) => e.pid === pid && e.type === type);
  const one = (pid: number, type: string) => {
    const list = of(pid, type);
    assert.equal(
      list.length,
      1,
      `${type} events of ${pid}: ${JSON.stringify(ev.filter((e) => e.pid === pid))}`,
    );
    return list[0]!;
  };
  // The outer sh: forked by the console shell, exec'd with the script, reaped with status 0.
  assert.equal(one(outer, "create").ppid, shell);
  assert.deepEqual((one(outer, "exec").argv as string[]).slice(0, 2), ["sh", "-c"]);
  assert.equal(one(outer, "exit").exitCode, 0);
  // The inner sh exits 7.
  assert.equal(one(inner, "create").ppid, outer);
  assert.deepEqual(one(inner, "exec").argv, ["sh", "-c", "echo INNER $$ $PPID; exit 7"]);
  assert.equal(one(inner, "exit").exitCode, 7);
  // The fork loop: exec'd with its arguments, three children that each exit 0.
  assert.equal(one(fl, "create").ppid, outer);
  const flExec = one(fl, "exec");
  assert.deepEqual(flExec.argv, ["workload", "forkloop", "3"]);
  assert.match(String(flExec.filename), /workload$/);
  const kids = ev.filter((e) => e.type === "create" && e.ppid === fl);
  assert.equal(kids.length, 3);
  for (const kid of kids) {
    assert.equal(kid.comm, "wl-forkloop");
    const exit = one(kid.pid, "exit");
    assert.equal(exit.exitCode, 0);
    assert.equal(exit.ppid, fl);
  }
  assert.equal(one(fl, "exit").exitCode, 0);
  // SIGKILL: a signal, no exit code.
  const k = one(killed, "exit");
  assert.equal(k.signal, 9);
  assert.equal(k.exitCode, null);
  assert.deepEqual((one(killed, "exec").argv as string[]).slice(0, 2), ["sleep", "100"]);
  // Each process's events come in life order.
  for (const pid of [outer, inner, fl, killed]) {
    const order = ev.filter((e) => e.pid === pid && e.tid === pid).map((e) => e.type);
    assert.deepEqual(order, ["create", "exec", "exit"], `events of ${pid}`);
  }
  assert.equal(await status(g), "running");
}

for (const kernelId of KERNELS) {
  describe(`events on a ${kernelId} guest`, () => {
    let g: TestGuest;
    before(async () => {
      g = await bootTestGuest(kernelId);
      await g.waitReady(180_000);
    });
    after(async () => g?.stop());

    test("trace proc reports the creates, execs and exits the guest saw", async () => {
      await procStreamMatchesTheGuest(g);
    });

    if (kernelId !== KERNELS[0]) return; // the rest once, on the first kernel

    test("trace modules sees an rmmod and an insmod done in the guest", async () => {
      const tracer = new BackgroundCli(["--qmp", g.qmpSocket, "trace", "modules", "--json", "--count", "2"]);
      await tracer.ready();
      const out = await g.serial.command(
        "rmmod dummy && insmod $(grep /dummy /etc/vmsight/modules) && grep '^dummy ' /proc/modules",
        60_000,
      );
      assert.equal(await tracer.exited, 0, tracer.stderr);
      const [unload, load] = tracer.events<Json>();
      assert.equal(unload?.type, "unload");
      assert.equal(unload?.name, "dummy");
      assert.equal(load?.type, "load");
      // /proc/modules: "dummy 12288 0 - Live 0xffffffffc0561000"
      const [name, size, , , , base] = out.trim().split(/\s+/);
      assert.equal(load?.name, name);
      assert.equal(load?.size, Number(size));
      assert.equal(BigInt(String(load?.base)), BigInt(base!));
    });

    test("trace syscalls --comm shows the nanosleep the memwrite workload makes every second", async () => {
      const view = await g.view();
      const pid = view.roles.get("memwrite")!;
      const r = await runCli(
        ["--qmp", g.qmpSocket, "trace", "syscalls", "--comm", "wl-memwrite", "--count", "3", "--json"],
        90_000,
      );
      assert.equal(r.code, 0, r.stderr);
      const events = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Json);
      assert.equal(events.length, 3);
      for (const e of events) {
        assert.equal(e.pid, pid);
        assert.equal(e.comm, "wl-memwrite");
        // x86-64 syscall table: 230 is clock_nanosleep; sleep(1) asks CLOCK_REALTIME (0), flags 0.
        assert.equal(e.nr, 230);
        assert.equal(e.name, "clock_nanosleep");
        assert.deepEqual((e.args as string[]).slice(0, 2), ["0x0", "0x0"]);
        assert.equal(e.ret, 0);
      }
      const times = events.map((e) => Number(e.time));
      assert.ok(times[2]! - times[0]! > 1.5, `one a second: ${times}`);
    });

    test("a user-address watch fires on memwrite's counter, and not for another process", async () => {
      const view = await g.view();
      const writer = view.roles.get("memwrite")!;
      const other = view.roles.get("space")!; // the same workload binary: same address, never written
      const addr = `0x${view.counterAddress!.toString(16)}`;
      const r = await runCli(
        ["--qmp", g.qmpSocket, "trace", "watch", addr, "--pid", String(writer), "--count", "2", "--json"],
        60_000,
      );
      assert.equal(r.code, 0, r.stderr);
      const [a, b] = r.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Json);
      assert.equal(a?.pid, writer);
      assert.equal(a?.comm, "wl-memwrite");
      assert.equal(BigInt(String(b?.value)) - BigInt(String(a?.value)), 1n, "counter++ once a second");

      const quiet = await runCli(
        ["--qmp", g.qmpSocket, "trace", "watch", addr, "--pid", String(other), "--duration", "3", "--json"],
        60_000,
      );
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.equal(quiet.stdout.trim(), "");
      // The guest did stop for memwrite's writes (same virtual address): filtered out by mm.
      const stops = Number(/(\d+) guest stop/.exec(quiet.stderr)?.[1]);
      assert.ok(stops >= 1, quiet.stderr);
    });

    test("a bad symbol and an unmapped address fail cleanly and leave the guest running", async () => {
      const view = await g.view();
      const bad = await runCli(["--qmp", g.qmpSocket, "trace", "break", "no_such_function_xyz"]);
      assertCleanError(bad);
      assert.match(bad.stderr, /no kernel symbol named "no_such_function_xyz"/);
      const unmapped = await runCli([
        "--qmp",
        g.qmpSocket,
        "trace",
        "watch",
        "0x7ff000000000",
        "--pid",
        String(view.roles.get("memwrite")),
      ]);
      assertCleanError(unmapped);
      assert.match(unmapped.stderr, /not mapped in pid/);
      assert.equal(await status(g), "running");
      await g.serial.command("true"); // and the console still answers
    });

    test("under TCG a breakpoint changes no guest memory", async () => {
      const target = await Target.attach(g.qmpSocket);
      try {
        const s = await openEventSession(target, { watchdog: false });
        const at = s.kernel.symbols.getAddress("kernel_clone");
        const phys = s.kernel.kernel.translate(va(at)).phys;
        const before = Buffer.from(target.memory.read(phys, 16));
        const gdb = await target.gdb();
        await s.engine.breakpoint("kernel_clone", () => undefined);
        assert.deepEqual(target.memory.read(phys, 16), before, "RAM as the guest's loads see it");
        assert.deepEqual(await gdb.readMemory(at, 16), before, "through the gdbstub too");
        assert.notEqual(before[0], 0xcc);
        await s.close();
      } finally {
        await target.close();
      }
      assert.equal(await status(g), "running");
    });

    test("SIGKILL in the middle of a trace leaves the guest running with no trap left", async () => {
      const tracer = new BackgroundCli(["--qmp", g.qmpSocket, "trace", "proc", "--json"]);
      await tracer.ready();
      await g.serial.command("ls / >/dev/null");
      tracer.kill("SIGKILL");
      await tracer.exited;
      // The watchdog reconnects, removes the traps and detaches: the guest runs again.
      await assertRunsWithNoTrap(g);
    });
  });
}
