/** One handler per protocol method, typed by the method's schema (schema.ts). */
import { VmsightError } from "../util/errors.js";
import type { AddressSpace, ServedVm } from "./backend.js";
import { type ClientSession, RpcError, kindsFor } from "./core.js";
import {
  DEFAULT_REPLY_MS,
  EVENT_TYPES,
  MAX_MESSAGE_BYTES,
  MAX_READ_BYTES,
  METHODS,
  type MethodName,
  PROTOCOL_VERSION,
  type Params,
  RPC_ERRORS,
  type Result,
} from "./schema.js";

type Handlers = { [M in MethodName]: (p: Params<M>) => Promise<Result<M>> };

function space(p: { space?: "phys" | "virt"; cpu?: number; cr3?: string; pid?: number }): AddressSpace {
  return {
    kind: p.space ?? "virt",
    ...(p.pid === undefined ? {} : { pid: p.pid }),
    ...(p.cpu === undefined ? {} : { cpu: p.cpu }),
    ...(p.cr3 === undefined ? {} : { cr3: p.cr3 }),
    ...(p.pid === undefined ? {} : { pid: p.pid }),
  };
}

/**
 * An execute watch is a breakpoint, and breakpoints match the instruction pointer, a virtual
 * address: a physical one would silently never fire (or fire on whatever code sits at that
 * virtual address).
 */
function executeIsVirtual(p: { space?: "phys" | "virt"; address: string }): void {
  if (p.space !== "phys") return;
  throw new VmsightError(
    "E_WATCH_ADDRESS",
    `an execute watch needs a virtual address, got physical ${p.address}`,
    {
      hint: 'give the virtual address of the code (drop space: "phys"); memory.translate maps virtual to physical, not back',
    },
  );
}

const hexOf = (bytes: Uint8Array) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

export function handlersFor(client: ClientSession): Handlers {
  const vm = (name: string): Promise<ServedVm> => client.core.vms.get(name);
  const rows = (f: (v: ServedVm) => Promise<Record<string, unknown>[]>) => async (p: { vm: string }) => ({
    rows: await f(await vm(p.vm)),
  });
  return {
    async initialize(p) {
      if (p.protocolVersion !== PROTOCOL_VERSION) {
        throw new RpcError(
          RPC_ERRORS.UNSUPPORTED_VERSION.code,
          `protocol version ${p.protocolVersion} is not supported`,
          {
            supported: [PROTOCOL_VERSION],
          },
        );
      }
      client.initialized = true;
      return {
        protocolVersion: PROTOCOL_VERSION,
        server: client.core.serverName,
        capabilities: {
          methods: Object.keys(METHODS),
          events: [...EVENT_TYPES],
          maxMessageBytes: client.core.maxMessageBytes ?? MAX_MESSAGE_BYTES,
          maxReadBytes: MAX_READ_BYTES,
          breakpointReplyMs: DEFAULT_REPLY_MS,
        },
      };
    },
    "vm.list": async () => ({ vms: client.core.vms.list().map((v) => ({ ...v })) }),
    "vm.get_info": async (p) => (await vm(p.vm)).status(),
    "vm.pause": async (p) => {
      const v = await vm(p.vm);
      await v.pause();
      return v.status();
    },
    "vm.resume": async (p) => {
      const v = await vm(p.vm);
      await v.resume();
      return v.status();
    },
    "vcpu.get_registers": async (p) => ({ registers: await (await vm(p.vm)).regs(p.cpu) }),
    "vcpu.set_registers": async (p) => {
      await (await vm(p.vm)).setRegs(p.cpu, p.registers);
      return {};
    },
    "memory.read": async (p) => {
      const bytes = await (await vm(p.vm)).read(p.address, p.length, space(p));
      return { address: p.address, length: bytes.byteLength, bytes: hexOf(bytes) };
    },
    "memory.write": async (p) => {
      const bytes = Buffer.from(p.bytes, "hex");
      await (await vm(p.vm)).write(p.address, bytes, space(p));
      return { written: bytes.byteLength };
    },
    "memory.translate": async (p) => (await vm(p.vm)).translate(p.address, space(p)),
    "memory.set_access": async (p) => {
      const v = await vm(p.vm);
      const who = {
        ...(p.pid === undefined ? {} : { pid: p.pid }),
        ...(p.comm === undefined ? {} : { comm: p.comm }),
      };
      if (p.access === "execute") {
        executeIsVirtual(p);
        const req = { types: ["break" as const], at: p.address, ...who };
        return { subscription: client.subscribe(p.vm, v, req, ["memory.access"], { as: "memory.access" }) };
      }
      const req = {
        types: ["watch" as const],
        address: p.address,
        length: p.length,
        access: p.access,
        space: p.space ?? "virt",
        ...who,
      };
      return { subscription: client.subscribe(p.vm, v, req, ["memory.access"]) };
    },
    "breakpoint.set": async (p) => {
      const v = await vm(p.vm);
      const who = {
        ...(p.pid === undefined ? {} : { pid: p.pid }),
        ...(p.comm === undefined ? {} : { comm: p.comm }),
      };
      const replyMs = p.wait ? (p.replyMs ?? DEFAULT_REPLY_MS) : undefined;
      return {
        subscription: client.subscribe(
          p.vm,
          v,
          { types: ["break"], at: p.at, ...who, ...(replyMs === undefined ? {} : { holdMs: replyMs }) },
          ["breakpoint"],
          { replyMs },
        ),
      };
    },
    "breakpoint.clear": async (p) => {
      await client.unsubscribe(p.subscription);
      return {};
    },
    "breakpoint.reply": async (p) => ({ applied: await client.release(p.event, p.reply) }),
    "events.subscribe": async (p) => {
      const wildcard = p.vm === "*";
      if (wildcard && p.types.some((t) => t !== "vm.state")) {
        throw new RpcError(RPC_ERRORS.INVALID_PARAMS.code, 'vm "*" subscribes to vm.state only');
      }
      const v = wildcard ? undefined : await vm(p.vm);
      const who = {
        ...(p.pid === undefined ? {} : { pid: p.pid }),
        ...(p.comm === undefined ? {} : { comm: p.comm }),
      };
      const kinds = v === undefined ? [] : kindsFor(p.types);
      return { subscription: client.subscribe(p.vm, v, { types: kinds, ...who }, p.types) };
    },
    "events.unsubscribe": async (p) => {
      await client.unsubscribe(p.subscription);
      return {};
    },
    "linux.kernel": async (p) => (await vm(p.vm)).kernel(),
    "linux.ps": rows((v) => v.ps()),
    "linux.threads": rows((v) => v.threads()),
    "linux.pstree": rows((v) => v.pstree()),
    "linux.lsmod": rows((v) => v.lsmod()),
    "linux.pids": rows((v) => v.pids()),
    "linux.check": rows((v) => v.check()),
    "linux.maps": async (p) => ({ rows: await (await vm(p.vm)).maps(p.pid) }),
    "linux.lsof": async (p) => ({ rows: await (await vm(p.vm)).lsof(p.pid) }),
    "linux.sockets": rows((v) => v.sockets()),
    "linux.env": async (p) => ({ rows: await (await vm(p.vm)).env(p.pid) }),
    "linux.mounts": async (p) => ({ rows: await (await vm(p.vm)).mounts(p.pid) }),
    "linux.ns": rows((v) => v.ns()),
    "linux.containers": rows((v) => v.containers()),
    "linux.dmesg": rows((v) => v.dmesg()),
    "linux.kill": async (p) => {
      const { vm: name, pid, signal, ...opts } = p;
      return (await vm(name)).kill(pid, signal ?? "KILL", opts);
    },
  };
}
