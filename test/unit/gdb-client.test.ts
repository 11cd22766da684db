import assert from "node:assert/strict";
import { resolve } from "node:path";
import { after, test } from "node:test";
import { GdbClient } from "../../src/transport/gdb/client.js";
import { encodePacket } from "../../src/transport/gdb/codec.js";
import { FaultError, ProtocolError, VmsightError } from "../../src/util/errors.js";
import {
  type FakeStub,
  type StubConnection,
  entryBytes,
  loadTranscript,
  startFakeStub,
  startReplayStub,
} from "../fixtures/gdb/fake-server.js";
import { BIOS_READ, runSession } from "../fixtures/gdb/session-script.js";

const fixture = resolve(import.meta.dirname, "../../../test/fixtures/gdb/qemu72-session.json");
const stubs: FakeStub[] = [];
after(async () => {
  for (const s of stubs) await s.close();
});

/** Little-endian value at a byte offset of a `g` reply's hex text, decoded here independently. */
function le(hexText: string, offset: number, size: number): bigint {
  const bytes = hexText.slice(offset * 2, (offset + size) * 2).match(/../g)!;
  return BigInt(`0x${bytes.reverse().join("")}`);
}

test("replaying the real QEMU 7.2 session gives the recorded registers and memory", async () => {
  const transcript = loadTranscript(fixture);
  const stub = await startReplayStub(transcript);
  stubs.push(stub);
  const client = await GdbClient.connect({ path: stub.path }, { timeoutMs: 2000 });
  const r = await runSession(client, 20);
  await client.close();
  const sent = Buffer.concat(transcript.entries.filter((e) => e.dir === "send").map(entryBytes));
  for (let i = 0; i < 100 && Buffer.concat(stub.rawReceived).length < sent.length; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(stub.mismatches, []);
  assert.equal(stub.left(), 0);

  // The client sent exactly the recorded bytes, acks included, in the same order.
  assert.deepEqual(Buffer.concat(stub.rawReceived), sent);

  // Ground truth 1: the x86 reset state (Intel SDM vol. 3, table 9-1) and QEMU's reset vector.
  assert.equal(r.registers.get("rip"), 0xfff0n);
  assert.equal(r.registers.get("cs"), 0xf000n);
  assert.equal(r.registers.get("eflags"), 0x2n);
  assert.equal(r.registers.get("cr0"), 0x60000010n);
  assert.equal(r.registers.get("cr3"), 0n);
  assert.equal(r.rip, 0xfff0n);
  assert.equal(r.cr3, 0n);
  // jmp far f000:e05b, then SeaBIOS's date string "06/23/99".
  assert.deepEqual(r.resetVector.subarray(0, 5), Buffer.from([0xea, 0x5b, 0xe0, 0x00, 0xf0]));
  assert.equal(r.resetVector.toString("latin1", 5, 13), "06/23/99");

  // Ground truth 2: the raw `g` and `m` replies in the transcript, decoded by hand here.
  const allText = transcript.entries
    .filter((e) => e.dir === "recv")
    .map((e) => entryBytes(e).toString("latin1"))
    .join("");
  const g = /\$([0-9a-fx]{1216})#/.exec(allText)?.[1];
  assert.ok(g, "a 608-byte g reply in the transcript");
  const offsets: [string, number, number][] = [
    ["rax", 0, 8],
    ["rdx", 24, 8],
    ["rsp", 56, 8],
    ["rip", 128, 8],
    ["eflags", 136, 4],
    ["ss", 144, 4],
    ["fs_base", 164, 8],
    ["k_gs_base", 180, 8],
    ["cr0", 188, 8],
    ["cr4", 212, 8],
    ["efer", 228, 8],
  ];
  for (const [name, off, size] of offsets) assert.equal(r.registers.get(name), le(g, off, size), name);
  assert.equal(r.registers.get("rdx"), 0x60fb1n); // qemu64's CPUID signature, left in EDX at reset

  const mReplies = [...allText.matchAll(/\$([0-9a-f]{200,4096})#/g)].map((m) => m[1]!).filter((h) => h !== g);
  assert.deepEqual(r.bios, Buffer.from(mReplies.join(""), "hex"));
  assert.equal(r.bios.length, BIOS_READ.length);

  assert.deepEqual(r.threads, ["p01.01"]);
  assert.equal(r.initialStop.type === "signal" && r.initialStop.signal, 5);
  const version = /version (\S+)/.exec(transcript.qemu)?.[1];
  assert.ok(version && r.monitorVersion.startsWith(version), r.monitorVersion);
  assert.deepEqual(r.interruptStop.type === "signal" && [r.interruptStop.signal, r.interruptStop.thread], [
    2,
    "p01.01",
  ]);
});

// ---- scripted stub ---------------------------------------------------------------------------

const TDESC = `<target><architecture>toy</architecture><feature name="core">
<reg name="a" bitsize="64"/><reg name="b" bitsize="32"/><!-- <reg name="no" bitsize="8"/> -->
<reg name="CR3" bitsize="64" regnum="0x1d"/></feature></target>`;

type Reply = string | { raw: string | Buffer } | undefined | ((conn: StubConnection) => void);

/** A stub that acks, answers the handshake like a small QEMU and the rest from `reply`. */
async function scripted(
  reply: (packet: string) => Reply,
  opts: { supported?: string; ack?: boolean } = {},
): Promise<FakeStub> {
  let ack = opts.ack ?? true;
  const stub = await startFakeStub({
    packet(data, conn) {
      const p = data.toString("latin1");
      if (ack) conn.raw("+");
      let r: Reply = reply(p);
      if (r === undefined && p.startsWith("qSupported"))
        r = opts.supported ?? "PacketSize=100;qXfer:features:read+";
      if (r === undefined && p === "vCont?") r = "vCont;c;s";
      if (r === undefined && p === "QStartNoAckMode") {
        r = "OK";
        ack = false;
      }
      if (r === undefined && p.startsWith("qXfer:features:read:target.xml:")) r = `l${TDESC}`;
      if (typeof r === "function") r(conn);
      else if (typeof r === "string") conn.raw(encodePacket(r));
      else if (r !== undefined) conn.raw(r.raw);
    },
  });
  stubs.push(stub);
  return stub;
}

const connect = (stub: FakeStub, timeoutMs = 2000) => GdbClient.connect({ path: stub.path }, { timeoutMs });

test("handshake: PacketSize, vCont, target description with comments skipped", async () => {
  const stub = await scripted(() => undefined);
  const c = await connect(stub);
  assert.equal(c.packetSize, 0x100);
  assert.deepEqual([...c.vContActions], ["c", "s"]);
  assert.deepEqual(
    c.layout?.registers.map((r) => [r.name, r.regnum, r.offset]),
    [
      ["a", 0, 0],
      ["b", 1, 8],
      ["cr3", 0x1d, 12],
    ],
  );
  assert.ok(!stub.received.includes("QStartNoAckMode"), "not offered, not sent");
  await c.close();
});

test("registers: g with run-length encoding and unavailable values, p, P", async () => {
  const stub = await scripted((p) => {
    // a = 0x1122334455667788, b = 0x00000000 (RLE "0*'" = 8 zeros), cr3 unavailable
    if (p === "g") return { raw: encodePacketRaw("887766554433221100*'xxxxxxxxxxxxxxxx") };
    if (p === "p1d") return "00f0ffff00000000";
    if (p === "p0") return "E14";
    if (p.startsWith("P")) return "OK";
    return undefined;
  });
  const c = await connect(stub);
  const regs = await c.readRegisters();
  assert.deepEqual(
    [...regs],
    [
      ["a", 0x1122334455667788n],
      ["b", 0n],
    ],
  );
  assert.equal(await c.readRegister("CR3"), 0xfffff000n);
  await assert.rejects(c.readRegister("a"), { code: "E_GDB_ERROR" });
  await assert.rejects(c.readRegister("nope"), { code: "E_GDB_NO_REGISTER" });
  await c.writeRegister("cr3", 0xdeadbeefn);
  assert.equal(stub.received.at(-1), "P1d=efbeadde00000000");
  await assert.rejects(c.writeRegister("b", 1n << 32n), { code: "E_GDB_BAD_ARGUMENT" });
  await c.close();
});

/** A frame whose body is sent exactly as given (so RLE can be tested), checksum computed here. */
function encodePacketRaw(body: string): Buffer {
  let sum = 0;
  for (const ch of Buffer.from(body, "latin1")) sum += ch;
  return Buffer.from(`$${body}#${(sum % 256).toString(16).padStart(2, "0")}`, "latin1");
}

test("memory: chunks by PacketSize, short replies, E reply is a FaultError at the chunk", async () => {
  const stub = await scripted((p) => {
    const m = /^m([0-9a-f]+),([0-9a-f]+)$/.exec(p);
    if (!m) return p.startsWith("M") ? (p.startsWith("M2000") ? "E01" : "OK") : undefined;
    const addr = Number.parseInt(m[1]!, 16);
    const len = Number.parseInt(m[2]!, 16);
    if (addr >= 0x1100) return "E14";
    const n = addr === 0x1000 ? 5 : len; // the first answer is short
    return Buffer.from(Array.from({ length: n }, (_, i) => (addr + i) & 0xff)).toString("hex");
  });
  const c = await connect(stub);
  const data = await c.readMemory(0x1000n, 0x100);
  assert.deepEqual(data, Buffer.from(Array.from({ length: 0x100 }, (_, i) => i & 0xff)));
  // PacketSize 0x100 -> at most 0x80 bytes per m
  assert.deepEqual(
    stub.received.filter((p) => p.startsWith("m")),
    ["m1000,80", "m1005,80", "m1085,7b"],
  );
  const err = await c.readMemory(0x1080n, 0x100).catch((e: unknown) => e);
  assert.ok(err instanceof FaultError);
  assert.equal(err.layer, "gdbstub");
  assert.equal(err.address, 0x1100n);

  await c.writeMemory(0x3000n, Buffer.alloc(200, 0xab));
  const writes = stub.received.filter((p) => p.startsWith("M"));
  assert.deepEqual(
    writes.map((w) => w.slice(0, w.indexOf(":"))),
    ["M3000,70", "M3070,58"], // (0x100 - 32) / 2 = 112 bytes per M
  );
  assert.equal(writes[0]!.slice(writes[0]!.indexOf(":") + 1), "ab".repeat(0x70));
  await assert.rejects(c.writeMemory(0x2000n, Buffer.of(1)), FaultError);
  await assert.rejects(c.readMemory(-1n, 4), VmsightError);
  await assert.rejects(c.readMemory(0xffffffffffffffffn, 4), { code: "E_GDB_BAD_ARGUMENT" });
  await assert.rejects(c.readMemory(0n, 1.5), { code: "E_GDB_BAD_ARGUMENT" });
  await c.close();
});

test("breakpoints, physical mode, threads and thread selection", async () => {
  const stub = await scripted((p) => {
    if (p === "Z0,ffffffff81000000,1" || p === "z0,ffffffff81000000,1" || p === "Qqemu.PhyMemMode:1")
      return "OK";
    if (p.startsWith("Z1")) return "";
    if (p.startsWith("Z2")) return "E22";
    if (p === "qfThreadInfo") return "mp01.01,p01.02";
    if (p === "qsThreadInfo") return "mp01.03";
    if (p === "Hgp01.02") return "OK";
    return undefined;
  });
  const c = await connect(stub);
  await c.insertBreakpoint(0, 0xffffffff81000000n, 1);
  await c.removeBreakpoint(0, 0xffffffff81000000n, 1);
  const unsupported = await c.insertBreakpoint(1, 0x1000n, 1).catch((e: unknown) => e);
  assert.ok(unsupported instanceof ProtocolError);
  assert.equal(unsupported.code, "E_GDB_UNSUPPORTED");
  await assert.rejects(c.insertBreakpoint(2, 0x1000n, 4), { code: "E_GDB_ERROR" });
  await c.setPhysicalMemoryMode(true);
  await c.selectThread("g", "p01.02");
  assert.equal(stub.received.at(-1), "Hgp01.02");
  // qsThreadInfo keeps answering "m…": the client must stop on its own bound, not loop forever.
  await assert.rejects(c.threads(), { code: "E_GDB_BAD_REPLY" });
  await c.close();
});

test("thread list ends at l", async () => {
  let n = 0;
  const stub = await scripted((p) => {
    if (p === "qfThreadInfo") return "mp01.01,p01.02";
    if (p === "qsThreadInfo") return n++ === 0 ? "mp01.03" : "l";
    return undefined;
  });
  const c = await connect(stub);
  assert.deepEqual(await c.threads(), ["p01.01", "p01.02", "p01.03"]);
  await c.close();
});

test("continue uses vCont and has no timeout; monitor collects O packets; step; stop reason", async () => {
  const stub = await scripted((p) => {
    if (p === "vCont;c") return (conn) => conn.raw(encodePacket("O48690a")); // "Hi\n" while running
    if (p === "vCont;s:p01.01") return "T05thread:p01.01;";
    if (p.startsWith("qRcmd,")) {
      assert.equal(Buffer.from(p.slice(6), "hex").toString(), "info version");
      return (conn) =>
        conn.raw(Buffer.concat([encodePacket("O372e32"), encodePacket("O0d0a"), encodePacket("OK")]));
    }
    if (p === "?") return "T05thread:p01.01;watch:1000;";
    return undefined;
  });
  const c = await connect(stub, 100);
  const running = c.continue();
  const closed = assert.rejects(running, { code: "E_GDB_CLOSED" });
  await new Promise((r) => setTimeout(r, 250)); // longer than the request timeout: still waiting
  assert.ok(stub.received.includes("vCont;c"));
  await c.close();
  await closed;

  const c2 = await connect(stub);
  await new Promise((r) => setTimeout(r, 20)); // let the handshake's last ack go out
  const acksBefore = stub.acks();
  assert.equal(await c2.monitor("info version"), "7.2\r\n");
  for (let i = 0; i < 50 && stub.acks() - acksBefore < 3; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(stub.acks() - acksBefore, 3, "O, O and OK arrived in one chunk; each is acked");
  const step = await c2.step("p01.01");
  assert.equal(step.type === "signal" && step.signal, 5);
  const why = await c2.stopReason();
  assert.deepEqual(why.type === "signal" && why.watch, { kind: "watch", address: 0x1000n });
  await c2.close();
});

test("interrupt resolves a pending continue with the stub's stop reply", async () => {
  const stub = await startFakeStub({
    packet(data, conn) {
      const p = data.toString("latin1");
      conn.raw("+");
      if (p.startsWith("qSupported")) conn.raw(encodePacket("PacketSize=1000"));
      else if (p === "vCont?") conn.raw(encodePacket(""));
      // `c` (no vCont): no answer until interrupted
    },
    interrupt(conn) {
      conn.raw(encodePacket("T02thread:p01.01;"));
    },
  });
  stubs.push(stub);
  const c = await connect(stub);
  assert.equal(c.layout, undefined);
  await assert.rejects(c.readRegisters(), { code: "E_GDB_NO_TDESC" });
  const running = c.continue();
  await new Promise((r) => setTimeout(r, 50));
  await c.interrupt();
  const stop = await running;
  assert.deepEqual(stop.type === "signal" && [stop.signal, stop.thread], [2, "p01.01"]);
  assert.ok(stub.received.includes("c"));
  await c.close();
});

test("one request at a time: concurrent calls are queued", async () => {
  let outstanding = 0;
  let maxOutstanding = 0;
  const stub = await scripted((p) => {
    if (!p.startsWith("qEcho")) return undefined;
    outstanding++;
    maxOutstanding = Math.max(maxOutstanding, outstanding);
    return (conn) =>
      setTimeout(() => {
        outstanding--;
        conn.raw(encodePacket(p.slice(5)));
      }, 5);
  });
  const c = await connect(stub);
  const replies = await Promise.all(["1", "2", "3", "4"].map((n) => c.request(`qEcho${n}`)));
  assert.deepEqual(
    replies.map((r) => r.toString()),
    ["1", "2", "3", "4"],
  );
  assert.equal(maxOutstanding, 1);
  await c.close();
});

test("bad checksum from the stub: client NAKs and accepts the retransmission", async () => {
  let naks = 0;
  const stub = await startFakeStub({
    packet(data, conn) {
      const p = data.toString("latin1");
      conn.raw("+");
      if (p.startsWith("qSupported")) conn.raw(encodePacket("PacketSize=1000"));
      else if (p === "vCont?") conn.raw(encodePacket(""));
      else if (p === "qX") conn.raw("$hello#00");
    },
    nak(conn) {
      naks++;
      conn.raw(encodePacket("hello"));
    },
  });
  stubs.push(stub);
  const c = await connect(stub);
  assert.equal((await c.request("qX")).toString(), "hello");
  assert.equal(naks, 1);
  await c.close();
});

test("client retransmits a packet the stub NAKs", async () => {
  let tries = 0;
  const stub = await startFakeStub({
    packet(data, conn) {
      const p = data.toString("latin1");
      if (p === "qY" && tries++ === 0) return conn.raw("-");
      conn.raw("+");
      if (p.startsWith("qSupported")) conn.raw(encodePacket("PacketSize=1000"));
      else if (p === "vCont?") conn.raw(encodePacket(""));
      else conn.raw(encodePacket("OK"));
    },
  });
  stubs.push(stub);
  const c = await connect(stub);
  assert.equal((await c.request("qY")).toString(), "OK");
  assert.equal(stub.received.filter((p) => p === "qY").length, 2);
  await c.close();
});

test("QStartNoAckMode is used when offered, and then nothing is acked", async () => {
  const stub = await scripted((p) => (p === "qZ" ? "done" : undefined), {
    supported: "PacketSize=1000;QStartNoAckMode+",
  });
  const c = await connect(stub);
  const before = Buffer.concat(stub.rawReceived).length;
  assert.equal((await c.request("qZ")).toString(), "done");
  assert.equal((await c.request("qZ")).toString(), "done");
  await new Promise((r) => setTimeout(r, 20));
  const after = Buffer.concat(stub.rawReceived).subarray(before).toString("latin1");
  assert.equal(after, "$qZ#cb$qZ#cb");
  await c.close();
});

test("timeout rejects with E_GDB_TIMEOUT and queued requests with E_GDB_CLOSED", async () => {
  const stub = await scripted((p) => (p === "qSlow" ? () => {} : undefined));
  const c = await connect(stub, 100);
  const slow = c.request("qSlow");
  const queued = c.request("qNext");
  await assert.rejects(slow, { code: "E_GDB_TIMEOUT" });
  await assert.rejects(queued, { code: "E_GDB_CLOSED" });
  await assert.rejects(c.request("qLater"), { code: "E_GDB_CLOSED" });
});

test("peer disconnect rejects every pending request with E_GDB_CLOSED", async () => {
  const stub = await scripted((p) => (p === "qBye" ? (conn) => conn.socket.destroy() : undefined));
  const c = await connect(stub);
  const results = await Promise.allSettled([c.request("qBye"), c.readMemory(0n, 8), c.request("qAfter")]);
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.ok(
      r.status === "rejected" && r.reason instanceof ProtocolError && r.reason.code === "E_GDB_CLOSED",
    );
  }
});

test("close() rejects a pending continue; connect errors are typed", async () => {
  await assert.rejects(GdbClient.connect({ path: "/nonexistent/gdb.sock" }), { code: "E_GDB_CONNECT" });
  const stub = await scripted(() => undefined);
  const c = await connect(stub);
  const running = assert.rejects(c.continue(), { code: "E_GDB_CLOSED" });
  await c.close();
  await running;
  await assert.rejects(c.interrupt(), { code: "E_GDB_CLOSED" });
});
