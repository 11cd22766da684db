/**
 * Issue 11: vmsight as a library. The README's Scripting example and the three scripts in
 * examples/ run as a user runs them (node, importing "vmsight" through the package's exports)
 * against a booted guest, and what they print is checked against the guest's own view: its
 * /proc, read over its serial console. Two event streams at once share traps and each removes
 * its own; a kill made while a stream runs leaves the stream running, and it sees the exit.
 * Memory writes, to a process and to the kernel, are read back by the guest itself.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import { type VmEvent, VmsightError, attach, openDump } from "../../src/lib/index.js";
import type { Vm } from "../../src/lib/vm.js";
import { type RunOptions, runNode } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";

const ROOT = resolve(import.meta.dirname, "../../..");
const KERNEL = (process.env.VMSIGHT_TEST_KERNELS ?? "6.12").split(",")[0]!;

/** A script run as a user runs it: from the repository, with node. */
function runScript(file: string, args: readonly string[], opts: Omit<RunOptions, "cwd"> = {}) {
  return runNode(file, args, { timeoutMs: 120_000, ...opts, cwd: ROOT });
}

const example = (name: string) => resolve(ROOT, "examples", name);
const lines = (text: string) => text.trim().split("\n").filter(Boolean);

describe(`the library on a ${KERNEL} guest`, () => {
  let g: TestGuest;
  before(async () => {
    g = await bootTestGuest(KERNEL);
    await g.waitReady(180_000);
  });
  after(async () => g?.stop());

  const inProc = async (pid: number) => (await g.serial.run(`test -e /proc/${pid}`)).status === 0;

  test("the README's Scripting example runs as written and agrees with the guest", async () => {
    const readme = readFileSync(resolve(ROOT, "README.md"), "utf8");
    const code = /```js\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf("## Scripting")))?.[1];
    assert.ok(code, "no js block in the README's Scripting section");
    // Inside the package, so that `import "vmsight"` resolves through its own exports.
    mkdirSync(resolve(ROOT, "dist/test"), { recursive: true });
    const file = resolve(ROOT, "dist/test/readme-example.mjs");
    writeFileSync(file, code);
    const r = await runScript(file, [], { env: { VMSIGHT_QMP: g.qmpSocket } });
    assert.equal(r.code, 0, r.stderr);
    const out = lines(r.stdout);
    const view = await g.view();
    assert.match(out[0]!, new RegExp(`^${view.release.replace(/[.+]/g, "\\$&")}, KASLR slide 0x[0-9a-f]+$`));
    for (const role of ["space", "threads", "piperead", "sleep", "memwrite"]) {
      const pid = view.roles.get(role)!;
      const comm = view.processes.find((p) => p.pid === pid)?.comm;
      assert.ok(out.includes(`${pid} ${comm}`), `${role} (${pid} ${comm}) missing:\n${r.stdout}`);
    }
    // The guest's own answer: its init's first mapping is the start of its executable.
    const guest = await g.serial.command("head -n1 /proc/1/maps; od -An -tx1 -N4 /proc/1/exe");
    const [mapLine, odLine] = lines(guest.replace(/\r/g, ""));
    assert.match(mapLine!, /^\S+ \S+ 00000000 /, "pid 1's first mapping is not at file offset 0");
    assert.equal(out.at(-1), `pid 1 starts with ${odLine!.trim().split(/\s+/).join("")}`);
  });

  test("examples/top-memory.mjs: every process's vsize as the guest's /proc/PID/stat has it", async () => {
    const r = await runScript(example("top-memory.mjs"), [g.qmpSocket, "10000"]);
    assert.equal(r.code, 0, r.stderr);
    const [header, ...rest] = lines(r.stdout);
    assert.equal(header, "PID\tVSZ_KIB\tCOMM");
    const rows = rest.map((l) => {
      const [pid, kib, ...comm] = l.split("\t");
      return { pid: Number(pid), kib: BigInt(kib!), comm: comm.join("\t") };
    });
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1]!.kib >= rows[i]!.kib, "not by memory use");
    const view = await g.view();
    for (const [role, pid] of view.roles) {
      const stat = view.processes.find((p) => p.pid === pid);
      if (!stat || stat.vsize === 0n) continue;
      const row = rows.find((x) => x.pid === pid);
      assert.ok(row, `${role} (pid ${pid}) not listed`);
      assert.equal(row.comm, stat.comm);
      assert.equal(row.kib * 1024n, stat.vsize, `${role}: vsize`);
    }
  });

  test("examples/module-loads.mjs prints the rmmod and insmod done in the guest", async () => {
    let armed: () => void = () => {};
    const ready = new Promise<void>((r) => {
      armed = r;
    });
    const run = runScript(example("module-loads.mjs"), [g.qmpSocket, "2"], {
      onStderr: (text) => text.includes("watching module loads") && armed(),
    });
    await Promise.race([ready, run.then((r) => assert.fail(`exited early: ${r.stderr}`))]);
    const out = await g.serial.command(
      "rmmod dummy && insmod $(grep /dummy /etc/vmsight/modules) && grep '^dummy ' /proc/modules",
      60_000,
    );
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    // /proc/modules: "dummy 12288 0 - Live 0xffffffffc0561000"
    const [name, size, , , , base] = out.trim().split(/\s+/);
    const [unload, load] = lines(r.stdout);
    assert.match(unload!, new RegExp(`^unload ${name} at 0x[0-9a-f]+$`));
    assert.equal(load, `load ${name} at 0x${BigInt(base!).toString(16)} size ${size}`);
  });

  test("examples/kill-by-name.mjs kills every process of that name, and only those", async () => {
    const spawnVictim = async () => {
      const text = await g.serial.command(
        "sh -c 'workload name victim >/dev/null 2>&1 </dev/null & echo $!'",
      );
      return Number(lines(text.replace(/\r/g, "")).pop());
    };
    const victims = [await spawnVictim(), await spawnVictim(), await spawnVictim()];
    await new Promise((r) => setTimeout(r, 500)); // until they have named themselves
    const before = await g.view();
    for (const pid of victims) assert.equal(before.processes.find((p) => p.pid === pid)?.comm, "victim");
    const r = await runScript(example("kill-by-name.mjs"), [g.qmpSocket, "victim"]);
    assert.equal(r.code, 0, r.stderr);
    const reported = lines(r.stdout).map((l) => l.split(" "));
    assert.deepEqual(reported.map(([pid]) => Number(pid)).sort(), [...victims].sort());
    for (const [, outcome] of reported) assert.ok(outcome === "gone" || outcome === "zombie", outcome);
    for (const pid of victims) assert.equal(await inProc(pid), false, `${pid} still in the guest's /proc`);
    const after = await g.view();
    for (const [role, pid] of before.roles)
      assert.ok(after.roles.get(role) === pid && (await inProc(pid)), role);
  });

  test("two event streams at once share traps and each removes its own", async () => {
    const vm: Vm = await attach(g.qmpSocket);
    try {
      let readyA = () => {};
      let readyB = () => {};
      const armedA = new Promise<void>((r) => {
        readyA = r;
      });
      const armedB = new Promise<void>((r) => {
        readyB = r;
      });
      // a traps proc and modules, b modules only: the module traps are shared.
      const a = vm.events({ types: ["proc", "modules"], onReady: readyA });
      const b = vm.events({ types: ["modules"], onReady: readyB });
      const firstA = a.next();
      await armedA;
      const core = await vm.target!.traps();
      const both = core.traps().length;
      const firstB = b.next();
      await armedB;
      assert.equal(core.traps().length, both, "b's module traps are a's, shared");
      // Reads while streams run: the trap core stops the guest for them.
      assert.ok((await vm.ps()).some((p) => p.pid === 1 && p.comm === "init"));
      assert.match((await vm.regs(0)).cr3 ?? "", /^0x[0-9a-f]+$/);
      await g.serial.command("rmmod dummy", 60_000);
      const seenA: VmEvent[] = [(await firstA).value as VmEvent];
      while (!seenA.some((e) => e.type === "unload")) seenA.push((await a.next()).value as VmEvent);
      await a.return!();
      const left = core.traps().length;
      assert.ok(left > 0 && left < both, `after a ended: ${left} of ${both} traps`);
      assert.equal(((await firstB).value as VmEvent).type, "unload");
      await g.serial.command("insmod $(grep /dummy /etc/vmsight/modules)", 60_000);
      const load = (await b.next()).value as VmEvent;
      assert.equal(load.type === "load" ? load.name : load.type, "dummy");
      await b.return!();
      assert.equal(core.traps().length, 0);
      assert.equal((await vm.status()).running, true);
    } finally {
      await vm.close();
    }
  });

  test("vm.kill while an events() loop runs: the loop goes on and reports the exit", async () => {
    const out = await g.serial.command(
      "sh -c 'workload name kill-stream >/dev/null 2>&1 </dev/null & echo $!'",
    );
    const pid = Number(lines(out.replace(/\r/g, "")).pop());
    assert.ok(pid > 1 && (await inProc(pid)), `started: ${out}`);
    const vm: Vm = await attach(g.qmpSocket);
    try {
      let ready: (traps: number) => void = () => {};
      const armed = new Promise<number>((r) => {
        ready = r;
      });
      const stream = vm.events({ types: ["proc"], onReady: ready });
      const seen: VmEvent[] = [];
      let died: () => void = () => {};
      const death = new Promise<void>((r) => {
        died = r;
      });
      // Reads on past the exit, so that the stream still runs when the kill returns.
      const loop = (async () => {
        for await (const e of stream) {
          seen.push(e);
          if (e.type === "exit" && e.pid === pid) died();
        }
      })();
      const traps = await armed;
      const core = await vm.target!.traps();
      const r = await vm.kill(pid, "KILL");
      assert.ok(r.outcome === "gone" || r.outcome === "zombie", JSON.stringify(r));
      assert.equal(core.traps().length, traps, "the kill's own breakpoint is gone, the stream's stay");
      await Promise.race([
        death,
        loop.then(() => assert.fail("the stream ended")),
        new Promise((_, reject) => setTimeout(() => reject(new Error("no exit event")), 60_000)),
      ]).catch((error: Error) => assert.fail(`${error.message}; seen ${JSON.stringify(seen.slice(-5))}`));
      assert.equal(await inProc(pid), false, `${pid} still in the guest's /proc`);
      const exit = seen.find((e) => e.type === "exit" && e.pid === pid);
      assert.equal(exit?.type === "exit" ? exit.signal : undefined, 9, "the stream saw it die of SIGKILL");
      await stream.return!();
      await loop;
      assert.equal(core.traps().length, 0);
      assert.equal((await vm.status()).running, true);
    } finally {
      await vm.close();
    }
    assert.match(await g.serial.command("echo still-running", 60_000), /still-running/);
  });

  /** 8 bytes of a process's memory as the guest reads them, through its /proc/PID/mem. */
  const guestU64 = async (pid: number, addr: bigint): Promise<bigint> => {
    const text = await g.serial.command(
      `dd if=/proc/${pid}/mem bs=8 skip=${addr / 8n} count=1 2>/dev/null | od -An -tx1`,
    );
    const bytes = text.trim().split(/\s+/);
    assert.equal(bytes.length, 8, `the guest read ${text}`);
    return Buffer.from(bytes.join(""), "hex").readBigUInt64LE(0);
  };

  test("vm.write into a process's memory is what the guest's /proc/PID/mem then reads", async () => {
    const view = await g.view();
    const pid = view.roles.get("memwrite")!;
    const addr = view.counterAddress!;
    assert.ok(addr % 8n === 0n, `counter at ${addr}`);
    assert.ok((await guestU64(pid, addr)) < 1n << 32n, "the counter counts seconds");
    const value = 0x5eed_0000_0000_0000n;
    const bytes = Buffer.alloc(8);
    bytes.writeBigUInt64LE(value);
    const vm: Vm = await attach(g.qmpSocket);
    try {
      await vm.write(addr, bytes, { pid });
    } finally {
      await vm.close();
    }
    // The process goes on counting (once a second) from what we wrote.
    const now = await guestU64(pid, addr);
    assert.ok(now >= value && now < value + 600n, `the guest reads 0x${now.toString(16)}`);
  });

  test("vm.write into kernel memory is what the guest's sysctl then reads", async () => {
    const domain = "/proc/sys/kernel/domainname";
    const original = (await g.serial.command(`cat ${domain}`)).replace(/\r/g, "").trim();
    const vm: Vm = await attach(g.qmpSocket);
    try {
      // init_uts_ns.name.domainname: a string nothing in the guest acts on (hostname shows in prompts).
      const k = await vm.linux();
      const at =
        k.symbols.findAddress("init_uts_ns")! + BigInt(k.layout.offsetof("uts_namespace", "name.domainname"));
      await vm.write(at, Buffer.from("vmsight-e2e\0"));
      assert.equal((await g.serial.command(`cat ${domain}`)).replace(/\r/g, "").trim(), "vmsight-e2e");
      await vm.write(at, Buffer.from(`${original}\0`));
    } finally {
      await vm.close();
    }
    assert.equal((await g.serial.command(`cat ${domain}`)).replace(/\r/g, "").trim(), original);
  });

  test("a dump opens as a Vm whose rows are the guest's, and live-only methods throw E_NOT_LIVE", async () => {
    const path = join(tmpdir(), `vmsight-library-${process.pid}.elf`);
    const live = await attach(g.qmpSocket);
    try {
      await live.pause();
      await live.target!.qmp.execute(
        "dump-guest-memory",
        { paging: false, protocol: `file:${path}` },
        { timeoutMs: 600_000 },
      );
      const dump = await openDump(path);
      try {
        assert.equal(dump.kind, "dump");
        assert.deepEqual(await dump.ps(), await live.ps());
        assert.deepEqual(await dump.kernel(), await live.kernel());
        const liveOnly = [
          () => dump.pause(),
          () => dump.resume(),
          () => dump.write(0x1000, Buffer.of(0), "physical"),
          () => dump.setRegs(0, { rax: 0 }),
          () => dump.kill(1, "TERM"),
          () => dump.events({ types: ["proc"] }).next(),
        ];
        for (const call of liveOnly) {
          await assert.rejects(
            async () => call(),
            (e) =>
              e instanceof VmsightError && e.code === "E_NOT_LIVE" && /needs a live guest/.test(e.message),
          );
        }
      } finally {
        await dump.close();
      }
    } finally {
      await live.resume();
      await live.close();
      rmSync(path, { force: true });
    }
  });
});
