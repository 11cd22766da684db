/** The serial console client against a fake console that answers in small pieces. */
import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { test } from "node:test";
import { SerialConsole } from "../../src/qemu/serial-console.js";
import { startFakeServer } from "../fixtures/qmp/fake-server.js";

/** Answers each typed command line with `body` between the markers the client asked for, in `piece`-byte writes. */
function shell(body: string, piece: number) {
  return (socket: Socket) => {
    socket.on("data", (d: Buffer) => {
      const m = /echo VMSB""EGIN_(\S+); .*; echo VMSE""ND_(\S+)_\$\?/.exec(d.toString("latin1"));
      if (!m) return;
      const reply = `${d.toString("latin1").trimEnd()}\r\nVMSBEGIN_${m[1]}\r\n${body}VMSEND_${m[2]}_0\r\n# `;
      for (let i = 0; i < reply.length; i += piece) socket.write(reply.slice(i, i + piece), "latin1");
    });
  };
}

test("a long output in tiny pieces: every byte, and a marker split across pieces is found", async () => {
  const body = Array.from({ length: 20_000 }, (_, i) => `line ${i} ${"x".repeat(i % 50)}\r\n`).join("");
  const fake = await startFakeServer(shell(body, 7));
  const serial = await SerialConsole.connect(fake.path);
  try {
    assert.equal(await serial.command("cat big", 30_000), body.replace(/\r/g, ""));
    await serial.waitFor(/^# $/m, 5_000);
  } finally {
    serial.close();
    await fake.close();
  }
});

test("a ^ in a pattern means a line start, also deep into a long output", async () => {
  const body = `${"y".repeat(9000)}READY\r\n${"z".repeat(9000)}\r\nREADY\r\n`;
  const fake = await startFakeServer(shell(body, 13));
  const serial = await SerialConsole.connect(fake.path);
  try {
    serial.send('echo VMSB""EGIN_1; x; echo VMSE""ND_1_$?');
    const m = await serial.waitFor(/(^|\n)READY\r?\n/, 5_000);
    assert.equal(serial.output.slice(m.index - 2, m.index), "z\r", "the READY on a line of its own");
  } finally {
    serial.close();
    await fake.close();
  }
});

test("a socket that refuses at first (QEMU between bind and listen) is connected once it listens", async () => {
  const { createServer } = await import("node:net");
  const { linkSync, mkdtempSync, rmSync, unlinkSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "serial-"));
  /** A socket file nobody listens on (a link to one whose server is gone): connecting is refused. */
  const staleSocket = async (path: string) => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(`${path}.tmp`, r));
    linkSync(`${path}.tmp`, path);
    await new Promise((r) => server.close(r));
  };
  const path = join(dir, "s.sock");
  await staleSocket(path);
  const later = createServer((s) => s.end());
  const listening = new Promise<void>((r) =>
    setTimeout(() => {
      unlinkSync(path);
      later.listen(path, r);
    }, 150),
  );
  const console = await SerialConsole.connect(path);
  await listening;
  console.close();
  await new Promise((r) => later.close(r));
  // Refused for good: one error that names the socket, after the retries.
  const never = join(dir, "never.sock");
  await staleSocket(never);
  await assert.rejects(
    SerialConsole.connect(never),
    /cannot connect to serial socket .*never\.sock.*ECONNREFUSED/,
  );
  rmSync(dir, { recursive: true, force: true });
});
