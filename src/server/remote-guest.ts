/**
 * A guest that `vmsight serve` holds, as the library's `Guest`: each method is one protocol
 * call, and each events() stream one subscription whose notifications become the records
 * `vmsight trace --json` prints. The CLI uses it when a server holds the guest's QMP socket.
 */
import type { EventOptions, EventStream } from "../lib/events.js";
import type { Guest } from "../lib/guest.js";
import type {
  Address,
  CheckFindingRow,
  ContainerGroupRow,
  EnvVarRow,
  KernelInfoRow,
  KillResult,
  LogLineRow,
  MapRow,
  ModuleRow,
  MountInfoRow,
  NamespaceRow,
  OpenFileRow,
  ProcessRow,
  Registers,
  RunStateRow,
  SocketInfoRow,
  Space,
  StatusRow,
  ThreadInfoRow,
  TranslationRow,
  TreeRow,
  VmEvent,
} from "../lib/types.js";
import { type KillOptions, type RegisterValues, address } from "../lib/vm.js";
import { hex } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import { EventQueue } from "../util/event-queue.js";
import type { RpcClient } from "./client.js";
import type { EventType } from "./schema.js";

/** A protocol address ("0x…") from any of the library's address forms, checked as the library does. */
const wireAddress = (a: Address, what: string): string => hex(address(a, what));

function spaceFields(space: Space): Record<string, unknown> {
  if (space === "physical") return { space: "phys" };
  if (space === "kernel") return { space: "virt" };
  if ("pid" in space) return { space: "virt", pid: space.pid };
  if ("cr3" in space)
    return {
      space: "virt",
      cr3: wireAddress(space.cr3, "cr3"),
      ...(space.cpu === undefined ? {} : { cpu: space.cpu }),
    };
  return { space: "virt", cpu: space.cpu };
}

/** The trace record type each protocol event type came from (the reverse of the server's map). */
const RECORD_TYPE: Record<string, string> = {
  "process.create": "create",
  "process.exec": "exec",
  "process.exit": "exit",
  "module.load": "load",
  "module.unload": "unload",
  syscall: "syscall",
  switch: "switch",
  breakpoint: "break",
  "memory.access": "watch",
};

/** The subscribe call for one trace stream: which method, with which params. */
function subscription(opts: EventOptions, vm: string): { method: string; params: Record<string, unknown> } {
  const who = {
    vm,
    ...(opts.pid === undefined ? {} : { pid: opts.pid }),
    ...(opts.comm === undefined ? {} : { comm: opts.comm }),
  };
  const [kind, ...more] = opts.types;
  if (kind === undefined || more.length > 0)
    throw new VmsightError("E_USAGE", "through vmsight serve, one events() stream traces one kind");
  if (kind === "break") return { method: "breakpoint.set", params: { ...who, at: opts.at } };
  if (kind === "watch") {
    if (opts.address === undefined) throw new VmsightError("E_USAGE", "watch needs an address");
    return {
      method: "memory.set_access",
      params: {
        ...who,
        address: wireAddress(opts.address, "address"),
        length: opts.length ?? 8,
        access: opts.access ?? "write",
      },
    };
  }
  const types: Record<typeof kind, EventType[]> = {
    proc: (["create", "exec", "exit"] as const)
      .filter((t) => opts.proc?.[t] ?? true)
      .map((t) => `process.${t}` as const),
    modules: ["module.load", "module.unload"],
    syscalls: ["syscall"],
    switch: ["switch"],
  };
  return { method: "events.subscribe", params: { ...who, types: types[kind] } };
}

/** The trace record a notification carries: its own type back, the protocol's fields gone. */
function record(params: Record<string, unknown>): VmEvent {
  const { vm: _vm, type, subscription: _s, reply: _r, ...fields } = params;
  return { type: RECORD_TYPE[String(type)] ?? String(type), ...fields } as VmEvent;
}

export class RemoteGuest implements Guest {
  constructor(
    private readonly client: RpcClient,
    /** The VM's name on the server. */
    readonly name: string,
  ) {}

  private rows<R>(method: string, extra: Record<string, unknown> = {}): Promise<R[]> {
    return this.client.call<{ rows: R[] }>(method, { vm: this.name, ...extra }).then((r) => r.rows);
  }

  kernel(): Promise<KernelInfoRow> {
    return this.client.call<KernelInfoRow>("linux.kernel", { vm: this.name });
  }
  ps(): Promise<ProcessRow[]> {
    return this.rows("linux.ps");
  }
  pids(): Promise<ProcessRow[]> {
    return this.rows("linux.pids");
  }
  threads(): Promise<ThreadInfoRow[]> {
    return this.rows("linux.threads");
  }
  pstree(): Promise<TreeRow[]> {
    return this.rows("linux.pstree");
  }
  lsmod(): Promise<ModuleRow[]> {
    return this.rows("linux.lsmod");
  }
  maps(pid: number): Promise<MapRow[]> {
    return this.rows("linux.maps", { pid });
  }
  lsof(pid?: number): Promise<OpenFileRow[]> {
    return this.rows("linux.lsof", pid === undefined ? {} : { pid });
  }
  env(pid: number): Promise<EnvVarRow[]> {
    return this.rows("linux.env", { pid });
  }
  mounts(pid?: number): Promise<MountInfoRow[]> {
    return this.rows("linux.mounts", pid === undefined ? {} : { pid });
  }
  sockets(): Promise<SocketInfoRow[]> {
    return this.rows("linux.sockets");
  }
  ns(): Promise<NamespaceRow[]> {
    return this.rows("linux.ns");
  }
  containers(): Promise<ContainerGroupRow[]> {
    return this.rows("linux.containers");
  }
  dmesg(): Promise<LogLineRow[]> {
    return this.rows("linux.dmesg");
  }
  check(): Promise<CheckFindingRow[]> {
    return this.rows("linux.check");
  }

  async read(addr: Address, length: number, space: Space = "kernel"): Promise<Buffer> {
    const r = await this.client.call<{ bytes: string }>("memory.read", {
      vm: this.name,
      address: wireAddress(addr, "address"),
      length,
      ...spaceFields(space),
    });
    return Buffer.from(r.bytes, "hex");
  }

  async write(addr: Address, bytes: Uint8Array, space: Space = "kernel"): Promise<void> {
    await this.client.call("memory.write", {
      vm: this.name,
      address: wireAddress(addr, "address"),
      bytes: Buffer.from(bytes).toString("hex"),
      ...spaceFields(space),
    });
  }

  translate(vaddr: Address, space: Exclude<Space, "physical"> = "kernel"): Promise<TranslationRow> {
    const { space: _, ...fields } = spaceFields(space);
    return this.client.call<TranslationRow>("memory.translate", {
      vm: this.name,
      address: wireAddress(vaddr, "address"),
      ...fields,
    });
  }

  async regs(cpu = 0): Promise<Registers> {
    return (await this.client.call<{ registers: Registers }>("vcpu.get_registers", { vm: this.name, cpu }))
      .registers;
  }

  async setRegs(cpu: number, values: RegisterValues): Promise<void> {
    const registers = Object.fromEntries(Object.entries(values).map(([n, v]) => [n, wireAddress(v, n)]));
    await this.client.call("vcpu.set_registers", { vm: this.name, cpu, registers });
  }

  private async runState(method: string): Promise<RunStateRow> {
    const s = await this.client.call<StatusRow>(method, { vm: this.name });
    return { status: s.status, running: s.running };
  }
  pause(): Promise<RunStateRow> {
    return this.runState("vm.pause");
  }
  resume(): Promise<RunStateRow> {
    return this.runState("vm.resume");
  }
  status(): Promise<StatusRow> {
    return this.client.call<StatusRow>("vm.get_info", { vm: this.name });
  }

  kill(pid: number, signal = "KILL", opts: KillOptions = {}): Promise<KillResult> {
    return this.client.call<KillResult>("linux.kill", {
      vm: this.name,
      pid,
      signal,
      ...(opts.method === undefined ? {} : { method: opts.method }),
      ...(opts.force === undefined ? {} : { force: opts.force }),
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
    });
  }

  events(opts: EventOptions): EventStream {
    return remoteStream(this.client, subscription(opts, this.name), opts);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

/**
 * One subscription as an async iterator: notifications queue until read; ending the loop, the
 * abort signal or the server ending the subscription all end it, and ending it unsubscribes.
 */
function remoteStream(
  client: RpcClient,
  sub: { method: string; params: Record<string, unknown> },
  opts: EventOptions,
): EventStream {
  const queue = new EventQueue<VmEvent>();
  let id: string | undefined;
  // Notifications can arrive before the subscribe reply names the id: keep them until it does.
  const early: Record<string, unknown>[] = [];
  const offEvent = client.on("event", (p) => {
    if (id === undefined) early.push(p);
    else if (p.subscription === id) queue.push(record(p));
  });
  const offEnded = client.on("subscription.ended", (p) => {
    if (p.subscription !== id) return;
    const e = p.error as { code?: string; message?: string } | undefined;
    if (e) queue.fail(new VmsightError("E_SERVER", e.message ?? "the server ended the stream"));
    else queue.end();
  });
  client.onClose((error) => queue.fail(error));
  const started = client.call<{ subscription: string }>(sub.method, sub.params).then(
    (r) => {
      id = r.subscription;
      for (const p of early.splice(0)) if (p.subscription === id) queue.push(record(p));
      opts.onReady?.(0);
    },
    (error) => queue.fail(error),
  );
  let finished = false;
  const finish = async (): Promise<IteratorResult<VmEvent>> => {
    if (!finished) {
      finished = true;
      queue.end();
      offEvent();
      offEnded();
      opts.signal?.removeEventListener("abort", onAbort);
      await started;
      if (id !== undefined) await client.call("events.unsubscribe", { subscription: id }).catch(() => {});
    }
    return { value: undefined, done: true };
  };
  const onAbort = () => void finish();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  const iterator: EventStream = {
    stops: 0,
    async next(): Promise<IteratorResult<VmEvent>> {
      const r = await queue.take().catch(async (error: unknown) => {
        await finish();
        throw error;
      });
      return r === undefined ? finish() : { value: r, done: false };
    },
    return: finish,
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  if (opts.signal?.aborted) void finish();
  return iterator;
}
