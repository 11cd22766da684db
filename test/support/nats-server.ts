/** A throwaway `nats-server -js` on a free loopback port with its own store directory. */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { type AddressInfo, createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface NatsServer {
  readonly url: string;
  /** SIGTERMs the server, keeping its port and JetStream store for restart(). */
  halt(): Promise<void>;
  /** Starts it again on the same port and store: what a restart on a real host looks like. */
  restart(): Promise<void>;
  /** Halts it and deletes its store. */
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tcpConnect(port, "127.0.0.1");
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

interface Running {
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly gone: () => boolean;
}

async function run(port: number, store: string): Promise<Running> {
  const child = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let gone = false;
  const exited = new Promise<void>((resolve) => {
    const end = () => {
      gone = true;
      resolve();
    };
    child.once("exit", end);
    child.once("error", end);
  });
  // A restart may find the old port busy for a moment: wait until it accepts, not just for spawn.
  for (let i = 0; i < 200 && !gone; i++) {
    if (await accepts(port)) return { child, exited, gone: () => gone };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill("SIGKILL");
  throw new Error(
    "nats-server did not start (is Debian's nats-server installed? scripts/setup.sh installs it)",
  );
}

export async function startNatsServer(): Promise<NatsServer> {
  const port = await freePort();
  const store = mkdtempSync(join(tmpdir(), "vmsight-nats-"));
  let current: Running | undefined = await run(port, store);
  const halt = async () => {
    if (current && !current.gone()) {
      current.child.kill("SIGTERM");
      await current.exited;
    }
    current = undefined;
  };
  return {
    url: `nats://127.0.0.1:${port}`,
    halt,
    async restart() {
      await halt();
      current = await run(port, store);
    },
    async stop() {
      await halt();
      rmSync(store, { recursive: true, force: true });
    },
  };
}
