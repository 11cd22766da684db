/**
 * Issue 13 (part 1) end to end: lsof, env, dmesg, mounts, sockets, ns and containers, live and
 * on a QEMU ELF dump, equal to what the guest itself prints from /proc over its console
 * (`vmsight-view forensics`, parsed by test/support/forensic-oracle.ts).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { attach, openDump } from "../../src/lib/index.js";
import type { Vm } from "../../src/lib/vm.js";
import { cliJson, runCli } from "../support/cli.js";
import { type ForensicView, parseForensicView } from "../support/forensic-oracle.js";
import { type TestGuest, bootTestGuest, qemuElfDump } from "../support/guest.js";

const KERNELS = (process.env.VMSIGHT_TEST_KERNELS ?? "6.1,6.12").split(",");

interface Lsof {
  pid: number;
  fd: number;
  type: string;
  flags: string;
  pos: string;
  mntId: number;
  ino: string;
  path: string;
}

/** The oracle's own reading of st_mode (and of an anon inode's link name) as a file type. */
function typeOf(target: string, mode: number | undefined): string {
  if (target.startsWith("anon_inode:")) return "anon";
  // By the file-type nibble (st_mode >> 12): S_IFSOCK 014, S_IFLNK 012, S_IFREG 010, ...
  const names = [
    "unknown",
    "pipe",
    "char",
    "unknown",
    "dir",
    "unknown",
    "block",
    "unknown",
    "file",
    "unknown",
    "link",
    "unknown",
    "socket",
  ];
  return mode === undefined ? "?" : (names[mode >> 12] ?? "unknown");
}

function checkLsof(view: ForensicView, rows: readonly Lsof[]): void {
  assert.ok(view.net, "the guest started the net workload");
  for (const pid of [1, view.net.parent, view.net.child])
    assert.ok(view.fds.has(pid), `pid ${pid} in the view`);
  for (const [pid, fds] of view.fds) {
    if (pid === view.viewerPid) continue;
    const ours = rows.filter((r) => r.pid === pid);
    assert.deepEqual(
      ours.map((r) => r.fd),
      fds.map((f) => f.fd),
      `fds of pid ${pid}`,
    );
    for (const f of fds) {
      const r = ours.find((x) => x.fd === f.fd)!;
      const what = `pid ${pid} fd ${f.fd}`;
      assert.equal(r.path, f.target, what);
      assert.equal(r.type, typeOf(f.target, f.mode), what);
      assert.equal(r.flags, f.info.get("flags"), what);
      assert.equal(BigInt(r.pos), BigInt(f.info.get("pos") ?? "-1"), what);
      assert.equal(r.mntId, Number(f.info.get("mnt_id")), what);
      assert.equal(BigInt(r.ino), BigInt(f.info.get("ino") ?? "-1"), what);
    }
  }
  // The workload's kinds of file are all there: a pipe shared by two processes, a file, sockets.
  const kinds = (pid: number) => new Set(rows.filter((r) => r.pid === pid).map((r) => r.type));
  for (const pid of [view.net.parent, view.net.child])
    for (const k of ["file", "pipe", "socket"]) assert.ok(kinds(pid).has(k), `pid ${pid} has a ${k}`);
  // And the files named by their inode, not a path (wl-net alone holds them).
  const parent = rows.filter((r) => r.pid === view.net!.parent);
  for (const [path, type] of [
    ["/run/vmsight", "dir"],
    ["anon_inode:[eventfd]", "anon"],
    ["anon_inode:[eventpoll]", "anon"],
  ])
    assert.ok(
      parent.some((r) => r.path === path && r.type === type),
      `wl-net holds ${path} as a ${type}`,
    );
}

/**
 * Through one Vm for every process: `vmsight env PID` is vm.env(PID) as --json rows (the first
 * test holds the two equal, live and on the dump), and a CLI run a process made this ~5 s.
 */
async function checkEnv(view: ForensicView, vm: Vm): Promise<void> {
  try {
    assert.ok(view.net);
    assert.ok(view.environ.get(view.net.parent)?.includes("WL_NOTE=vmsight env test"));
    for (const [pid, env] of view.environ) {
      if (pid === view.viewerPid) continue;
      assert.deepEqual(
        (await vm.env(pid)).map((r) => (r.value === null ? r.name : `${r.name}=${r.value}`)),
        env,
        `environ of pid ${pid}`,
      );
    }
  } finally {
    await vm.close();
  }
}

/** The guest's dmesg, line for line, is where vmsight's starts (the log may have grown since). */
async function checkDmesg(view: ForensicView, source: readonly string[]): Promise<void> {
  assert.ok(view.dmesg.length > 50, "the guest's dmesg has its boot log");
  const r = await runCli([...source, "dmesg"]);
  assert.equal(r.code, 0, r.stderr);
  const ours = r.stdout.replace(/\n$/, "").split("\n");
  assert.deepEqual(ours.slice(0, view.dmesg.length), view.dmesg);
  const rows = await cliJson<{ seq: number; text: string; level: number }[]>([...source, "dmesg"]);
  assert.ok(rows.length >= view.dmesg.length);
  assert.ok(
    rows.every((row, i) => i === 0 || row.seq >= rows[i - 1]!.seq),
    "rows in sequence order",
  );
  assert.ok(rows.every((row) => row.level >= 0 && row.level <= 7));
}

interface Mount {
  mountId: number;
  parentId: number;
  dev: string;
  root: string;
  mountPoint: string;
  options: string;
  optional: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/**
 * Every column of mountinfo but the filesystem's own options: vmsight's super options are the
 * generic ones the guest's line starts with.
 */
async function checkMounts(view: ForensicView, source: readonly string[]): Promise<void> {
  const pids = [1, view.box!];
  assert.ok(view.box !== undefined, "the guest started the contained workload");
  assert.ok(
    view.mountinfo.get(1)!.some((l) => l.includes(" /mnt/a\\\\040dir ")),
    "the guest escapes the space (shown with its backslash doubled)",
  );
  for (const pid of pids) {
    const lines = view.mountinfo.get(pid)!;
    const rows = await cliJson<Mount[]>([...source, "mounts", String(pid)]);
    assert.equal(rows.length, lines.length, `mounts of pid ${pid}`);
    rows.forEach((m, i) => {
      const theirs = lines[i]!;
      const dash = theirs.indexOf(" - ");
      const [fsType, src, superOptions = ""] = theirs.slice(dash + 3).split(" ");
      const optional = m.optional === "" ? "" : ` ${m.optional}`;
      const head = `${m.mountId} ${m.parentId} ${m.dev} ${m.root} ${m.mountPoint} ${m.options}${optional}`;
      assert.equal(head, theirs.slice(0, dash), `pid ${pid} mount ${i}`);
      assert.deepEqual([m.fsType, m.source], [fsType, src], `pid ${pid} mount ${i}`);
      const generic = m.superOptions.split(",");
      assert.deepEqual(superOptions.split(",").slice(0, generic.length), generic, `pid ${pid} mount ${i}`);
    });
  }
  // The contained process has a mount namespace of its own: same mount points, other ids.
  const [host, box] = [view.mountinfo.get(1)!, view.mountinfo.get(view.box!)!];
  assert.notEqual(host[0]!.split(" ")[0], box[0]!.split(" ")[0]);
}

interface Socket {
  proto: string;
  local: string;
  remote: string;
  state: string;
  inode: string;
  pids: number[];
}

/**
 * The oracle's own names of /proc/net/tcp's `st`, in the order of the kernel's enum
 * (include/net/tcp_states.h, TCP_ESTABLISHED = 1 to TCP_NEW_SYN_RECV, checked against Debian's
 * 6.1 headers), spelled here rather than taken from vmsight.
 */
const TCP_STATE_NAMES = [
  "?",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT1",
  "FIN_WAIT2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
  "CLOSING",
  "NEW_SYN_RECV",
];

/** The bytes of an address as /proc/net prints it: 32-bit words in host (little-endian) order. */
function procNetAddress(text: string): Buffer {
  const out = Buffer.alloc(text.length / 2);
  for (let w = 0; w < text.length / 8; w++)
    out.writeUInt32LE(Number.parseInt(text.slice(w * 8, w * 8 + 8), 16), w * 4);
  return out;
}

/** vmsight's "1.2.3.4:80" or "[::1]:80" as address bytes and port, by the test's own parser. */
function parseEndpoint(text: string): [Buffer, number] {
  const colon = text.lastIndexOf(":");
  const host = text.slice(0, colon);
  const port = Number(text.slice(colon + 1));
  if (!host.startsWith("[")) return [Buffer.from(host.split(".").map(Number)), port];
  const [head = "", tail] = host.slice(1, -1).split("::");
  const words = (s: string) => (s === "" ? [] : s.split(":").map((g) => Number.parseInt(g, 16)));
  const groups =
    tail === undefined
      ? words(head)
      : [...words(head), ...Array(8 - words(head).length - words(tail).length).fill(0), ...words(tail)];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return [b, port];
}

/**
 * Which word of a data line is the inode, in each /proc/net file (the header's words do not line
 * up with the data's): tcp4_seq_show(), tcp6, udp4_format_sock(), udp6, unix_seq_show(),
 * netlink_seq_show(), packet_seq_show().
 */
const INODE_COLUMN: Readonly<Record<string, number>> = {
  tcp: 9,
  tcp6: 9,
  udp: 9,
  udp6: 9,
  unix: 6,
  netlink: 9,
  packet: 8,
};

interface GuestSocket {
  readonly proto: string;
  readonly fields: readonly string[];
}

/** /proc/net/{tcp,tcp6,udp,udp6,unix,netlink,packet} as the guest printed them, by inode. */
function guestSockets(view: ForensicView): Map<string, GuestSocket> {
  const out = new Map<string, GuestSocket>();
  for (const [proto, lines] of view.procNet) {
    const column = INODE_COLUMN[proto];
    assert.ok(column !== undefined, `the view has /proc/net/${proto}, which the test cannot read`);
    for (const line of lines.slice(1)) {
      const fields = line.trim().split(/\s+/);
      out.set(fields[column]!, { proto, fields });
    }
  }
  return out;
}

/** inode → the pids (ascending) whose /proc/PID/fd links to it: the sockets processes hold. */
function heldSockets(view: ForensicView): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [pid, fds] of [...view.fds].sort(([a], [b]) => a - b))
    for (const f of fds) {
      const inode = /^socket:\[(\d+)\]$/.exec(f.target)?.[1];
      if (inode !== undefined && !out.get(inode)?.includes(pid))
        out.set(inode, [...(out.get(inode) ?? []), pid]);
    }
  return out;
}

/** What vmsight must say of a socket, by the guest's line of it. */
function expectedColumns(
  r: Socket,
  { proto, fields }: GuestSocket,
): Pick<Socket, "local" | "remote" | "state"> {
  if (proto === "netlink") {
    const [, eth, portid, groups] = fields;
    return { local: `protocol ${Number(eth)} portid ${portid} groups ${groups}`, remote: "", state: "" };
  }
  if (proto === "packet") {
    const [, , type, ethertype, ifindex] = fields;
    return { local: `type ${type} proto ${ethertype} ifindex ${ifindex}`, remote: "", state: "" };
  }
  if (proto === "unix") {
    const listening = (Number.parseInt(fields[3]!, 16) & 0x10000) !== 0;
    const st = ["?", "UNCONNECTED", "CONNECTING", "CONNECTED", "DISCONNECTING"][
      Number.parseInt(fields[5]!, 16)
    ];
    return { local: fields[7] ?? "", remote: "", state: (listening ? "LISTEN" : st)! };
  }
  // inet: vmsight's text and the guest's hex compare as bytes, each parsed by the test.
  for (const [ep, field] of [
    [r.local, fields[1]!],
    [r.remote, fields[2]!],
  ] as const) {
    const [addr, port] = field.split(":");
    assert.deepEqual(
      parseEndpoint(ep),
      [procNetAddress(addr!), Number.parseInt(port!, 16)],
      `socket ${fields[9]}`,
    );
  }
  return { local: r.local, remote: r.remote, state: TCP_STATE_NAMES[Number.parseInt(fields[3]!, 16)]! };
}

function checkSockets(view: ForensicView, rows: readonly Socket[]): void {
  const listed = guestSockets(view);
  const held = heldSockets(view);
  const protos = new Set([...held.keys()].map((inode) => listed.get(inode)?.proto));
  for (const proto of Object.keys(INODE_COLUMN))
    assert.ok(protos.has(proto), `the guest holds a ${proto} socket`);
  assert.deepEqual(rows.map((r) => BigInt(r.inode).toString()).sort(), [...held.keys()].sort());
  for (const r of rows) {
    const inode = BigInt(r.inode).toString();
    const theirs = listed.get(inode);
    assert.ok(theirs, `socket ${inode} is in the guest's /proc/net`);
    assert.equal(r.proto, theirs.proto, `socket ${inode}`);
    const { local, remote, state } = r;
    assert.deepEqual({ local, remote, state }, expectedColumns(r, theirs), `socket ${inode}`);
    assert.deepEqual(r.pids, held.get(inode), `owners of socket ${inode}`);
  }
}

type NsRow = Record<string, number | string | null> & { pid: number; cgroupPath: string | null };

/** /proc/PID/ns link names → vmsight's ns columns. */
const NS_COLUMNS: Record<string, string> = {
  cgroup: "cgroup",
  ipc: "ipc",
  mnt: "mnt",
  net: "net",
  pid: "pidNs",
  pid_for_children: "pidForChildren",
  time: "time",
  time_for_children: "timeForChildren",
  user: "user",
  uts: "uts",
};

/** The guest's cgroup v2 path of a process: its "0::PATH" line. */
function cgroupPath(view: ForensicView, pid: number): string | undefined {
  return view.cgroup
    .get(pid)
    ?.find((l) => l.startsWith("0::"))
    ?.slice(3);
}

function checkNs(view: ForensicView, rows: readonly NsRow[]): void {
  assert.ok(view.box !== undefined);
  for (const [pid, links] of view.ns) {
    if (pid === view.viewerPid) continue;
    const r = rows.find((x) => x.pid === pid);
    assert.ok(r, `pid ${pid} listed`);
    assert.ok(links.size >= 8, `the guest shows the namespaces of pid ${pid}`);
    for (const [name, link] of links)
      assert.equal(
        `${name.replace(/_for_children$/, "")}:[${r[NS_COLUMNS[name]!]}]`,
        link,
        `pid ${pid} ${name}`,
      );
    assert.equal(r.cgroupPath, cgroupPath(view, pid), `cgroup of pid ${pid}`);
  }
  assert.equal(cgroupPath(view, view.box), "/vmsight-box");
}

/** The guest's own grouping of its processes by namespace links and cgroup lines. */
function checkContainers(
  view: ForensicView,
  groups: readonly { pids: number[]; cgroupPath: string | null }[],
): void {
  const user = [...view.ns.keys()].filter((p) => p !== view.viewerPid);
  const theirs = new Map<string, number[]>();
  for (const pid of user) {
    const links = [...view.ns.get(pid)!].filter(([n]) => !n.endsWith("_for_children")).map(([, l]) => l);
    const key = JSON.stringify([...links.sort(), ...(view.cgroup.get(pid) ?? [])]);
    theirs.set(key, [...(theirs.get(key) ?? []), pid]);
  }
  const ours = groups.map((g) => g.pids.filter((p) => user.includes(p))).filter((g) => g.length > 0);
  const canonical = (gs: number[][]) =>
    gs.map((g) => [...g].sort((a, b) => a - b)).sort((a, b) => a[0]! - b[0]!);
  assert.deepEqual(canonical(ours), canonical([...theirs.values()]));
  assert.ok(groups[0]!.pids.includes(1), "the host's group comes first");
  assert.deepEqual(groups.find((g) => g.cgroupPath === "/vmsight-box")?.pids, [view.box]);
}

for (const kernelId of KERNELS) {
  describe(`forensic commands on a ${kernelId} guest equal its own /proc, live and on a dump`, () => {
    let g: TestGuest;
    let view: ForensicView;
    const dir = mkdtempSync(join(tmpdir(), "vmsight-forensics-"));
    const dump = join(dir, "guest.elf");
    let live: string[];
    before(async () => {
      g = await bootTestGuest(kernelId);
      await g.waitReady(180_000);
      view = parseForensicView(await g.serial.command("vmsight-view forensics", 180_000));
      live = ["--qmp", g.qmpSocket];
      await qemuElfDump(g.qmpSocket, dump, { timeoutMs: 180_000 });
    });
    after(async () => {
      await g?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    // A running guest starts, ends and renames kworkers as work comes: ns and containers are
    // compared on the user processes the view saw, without names.
    const stable = (lists: readonly (readonly object[])[]) => {
      const user = (pid: number) => view.ns.has(pid) && pid !== view.viewerPid;
      const [ns = [], groups = []] = lists as [
        { pid: number; comm?: string }[],
        { pids: number[]; comms?: string[] }[],
      ];
      return [
        ns.filter((r) => user(r.pid)).map(({ comm: _, ...r }) => r),
        groups.map(({ comms: _, ...g }) => ({ ...g, pids: g.pids.filter(user) })),
      ];
    };

    test("the library's methods return the CLI's --json rows, live and on the dump", async () => {
      const pid = view.net!.parent;
      const n = view.dmesg.length;
      // QEMU serves one QMP client at a time: the library's Vm is closed before the CLI runs.
      const fromLibrary = async (vm: Vm) => {
        try {
          const rows = [await vm.lsof(pid), await vm.env(pid), await vm.mounts(), await vm.sockets()];
          return [...rows, ...stable([await vm.ns(), await vm.containers()]), (await vm.dmesg()).slice(0, n)];
        } finally {
          await vm.close();
        }
      };
      const fromCli = async (source: readonly string[]) => {
        const args = [["lsof", String(pid)], ["env", String(pid)], ["mounts"], ["sockets"]];
        const rows: unknown[] = [];
        for (const a of args) rows.push(await cliJson([...source, ...a]));
        const named = [
          await cliJson<object[]>([...source, "ns"]),
          await cliJson<object[]>([...source, "containers"]),
        ];
        rows.push(...stable(named));
        return [...rows, (await cliJson<unknown[]>([...source, "dmesg"])).slice(0, n)];
      };
      assert.deepEqual(await fromLibrary(await attach(g.qmpSocket)), await fromCli(live));
      assert.deepEqual(await fromLibrary(await openDump(dump)), await fromCli(["--dump", dump]));
    });

    for (const from of ["live", "dump"] as const) {
      const source = () => (from === "live" ? live : ["--dump", dump]);

      test(`lsof (${from}): every fd of every process, as /proc/PID/fd and fdinfo`, async () => {
        checkLsof(view, await cliJson<Lsof[]>([...source(), "lsof"]));
        const one = await cliJson<Lsof[]>([...source(), "lsof", String(view.net!.child)]);
        assert.deepEqual(
          one.map((r) => r.pid).filter((p) => p !== view.net!.child),
          [],
        );
        checkLsof(view, [
          ...one,
          ...(await cliJson<Lsof[]>([...source(), "lsof"])).filter((r) => r.pid !== view.net!.child),
        ]);
      });

      test(`env (${from}): every process's /proc/PID/environ`, async () =>
        checkEnv(view, from === "live" ? await attach(g.qmpSocket) : await openDump(dump)));

      test(`mounts (${from}): /proc/PID/mountinfo of init and of a process in its own namespace`, () =>
        checkMounts(view, source()));

      test(`sockets (${from}): each held socket as its /proc/net/* file lists it, and its owners`, async () =>
        checkSockets(view, await cliJson<Socket[]>([...source(), "sockets"])));

      test(`ns (${from}): every process's /proc/PID/ns links and cgroup path`, async () =>
        checkNs(view, await cliJson<NsRow[]>([...source(), "ns"])));

      test(`containers (${from}): processes grouped as their namespaces and cgroups group them`, async () =>
        checkContainers(view, await cliJson([...source(), "containers"])));

      test(`dmesg (${from}): the guest's dmesg, line for line`, () => checkDmesg(view, source()));
    }
  });
}
