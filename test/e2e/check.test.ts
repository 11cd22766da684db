/**
 * `vmsight check` against a guest that really hides things: the "rootkit" image variant loads
 * guests/rootkit/vmsight_rk.ko, which says on the console what it hooked and hid. check must flag
 * exactly that, and nothing on the same kernel without it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { cliJson, runCli } from "../support/cli.js";
import { type TestGuest, bootTestGuest } from "../support/guest.js";

interface Finding {
  kind: string;
  what: string;
  address: string;
  table?: string;
  index?: number;
  target?: string;
  owner?: string;
  name?: string;
  pid?: number;
  comm?: string;
  seenIn?: string[];
}

describe("check on a clean 6.1 guest", () => {
  let g: TestGuest;
  before(async () => {
    g = await bootTestGuest("6.1");
    await g.waitReady(180_000);
  });
  after(async () => g?.stop());

  test("finds nothing: --json is an empty array, the text says clean", async () => {
    assert.deepEqual(await cliJson<Finding[]>(["--qmp", g.qmpSocket, "check"]), []);
    const r = await runCli(["--qmp", g.qmpSocket, "check"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^clean:/);
  });
});

describe("check on a 6.1 guest running the test rootkit", () => {
  let g: TestGuest;
  let hooks: { table: string; nr: number }[];
  let hidden: { pid: number; comm: string }[];
  let moduleName: string;
  let sysfs: { thisModule: bigint; text: bigint; coresize: bigint };
  before(async () => {
    g = await bootTestGuest("6.1", { image: { variant: "rootkit" } });
    await g.waitReady(180_000);
    // What the module itself reported (init greps its "VMSIGHT-RK" lines out of dmesg).
    const said = g.serial.output;
    assert.match(said, /VMSIGHT-RK done/, "the rootkit loaded and finished");
    hooks = [...said.matchAll(/VMSIGHT-RK hooked table=(\S+) nr=(\d+)/g)].map((m) => ({
      table: m[1]!,
      nr: Number(m[2]),
    }));
    hidden = [...said.matchAll(/VMSIGHT-RK hid-task pid=(\d+) comm=(\S+)/g)]
      .map((m) => ({ pid: Number(m[1]), comm: m[2]! }))
      .sort((a, b) => a.pid - b.pid);
    assert.equal(hidden.length, 2, "the rootkit hid a sleeping and a busy process");
    moduleName = /VMSIGHT-RK hid-module name=(\S+)/.exec(said)![1]!;
    // The guest's own sysfs still knows the module: where its struct and its code are.
    const sys = async (file: string) =>
      BigInt((await g.serial.command(`cat /sys/module/${moduleName}/${file}`)).trim());
    sysfs = {
      thisModule: await sys("sections/.gnu.linkonce.this_module"),
      text: await sys("sections/.text"),
      coresize: await sys("coresize"),
    };
  });
  after(async () => g?.stop());

  test("the guest hides what the module says: its /proc has the pid, /proc/modules lacks the module", async () => {
    assert.ok(hooks.length >= 2, "at least two syscall-table entries hooked");
    for (const h of hidden) assert.equal((await g.serial.command(`cat /proc/${h.pid}/comm`)).trim(), h.comm);
    assert.doesNotMatch(await g.serial.command("cat /proc/modules"), new RegExp(`^${moduleName} `, "m"));
  });

  test("--json flags exactly the hooked entries, the hidden module and the hidden process", async () => {
    const findings = await cliJson<Finding[]>(["--qmp", g.qmpSocket, "check"]);
    const syscalls = findings.filter((f) => f.kind === "syscall-hook");
    assert.deepEqual(
      syscalls.map((f) => `${f.table}[${f.index}]`).sort(),
      hooks.map((h) => `${h.table}[${h.nr}]`).sort(),
    );
    for (const f of syscalls) {
      assert.equal(f.owner, moduleName);
      const target = BigInt(f.target!);
      assert.ok(
        target >= sysfs.text && target < sysfs.text + sysfs.coresize,
        `${f.what} inside the module's core`,
      );
    }
    const modules = findings.filter((f) => f.kind === "hidden-module");
    // sysfs alone would satisfy the name and address: module memory must have seen it too.
    assert.deepEqual(
      modules.map((f) => [f.name, BigInt(f.address), f.seenIn]),
      [[moduleName, sysfs.thisModule, ["sysfs", "module memory"]]],
    );
    const tasks = findings.filter((f) => f.kind === "hidden-task");
    assert.deepEqual(
      tasks.map((f) => ({ pid: f.pid, comm: f.comm })),
      hidden,
    );
    // The busy loop is always runnable: its runqueue holds it as well as the PID namespace.
    const busy = tasks.find((f) => f.comm === "sh");
    assert.deepEqual(busy?.seenIn, ["the PID namespace", "a runqueue"]);
    assert.deepEqual(tasks.find((f) => f.comm === "sleep")?.seenIn, ["the PID namespace"]);
    assert.equal(findings.length, hooks.length + 1 + hidden.length, "nothing else is flagged");
  });

  test("the text output is one line per finding and a summary", async () => {
    const r = await runCli(["--qmp", g.qmpSocket, "check"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    const count = hooks.length + 1 + hidden.length;
    assert.equal(lines.length, count + 1);
    assert.match(lines.at(-1)!, new RegExp(`^${count} findings:`));
    for (const h of hidden)
      assert.ok(lines.some((l) => l.startsWith("hidden-task") && l.includes(`pid ${h.pid} `)));
  });

  // Last: it changes the guest. The module deletes its sysfs kobject (a work item, after the write).
  test("with its sysfs kobject deleted as well, module memory alone still finds the module", async () => {
    await g.serial.command(`echo 1 > /sys/module/${moduleName}/parameters/hide_sysfs`);
    let gone = "";
    for (let i = 0; i < 20 && gone !== "gone"; i++)
      gone = (await g.serial.command(`test -e /sys/module/${moduleName} && echo there || echo gone`)).trim();
    assert.equal(gone, "gone", "the guest's own /sys/module no longer has it");
    const findings = await cliJson<Finding[]>(["--qmp", g.qmpSocket, "check"]);
    assert.deepEqual(
      findings.filter((f) => f.kind === "hidden-module").map((f) => [f.name, BigInt(f.address), f.seenIn]),
      [[moduleName, sysfs.thisModule, ["module memory"]]],
    );
  });
});
