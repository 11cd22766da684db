/**
 * The protocol of `vmsight serve`, as data: one TypeBox schema per method (params and result)
 * and per event. Validation (core.ts), the handlers' TypeScript types and docs/protocol.md
 * (docs.ts) all come from here, so they cannot drift apart (the model is the Chrome DevTools
 * Protocol's single schema). Method names follow KVMi where a KVMi command maps.
 */
import { type Static, type TSchema, Type } from "@sinclair/typebox";

export const PROTOCOL_VERSION = 1;
/** Larger messages get an error reply; see MAX_FRAME_BYTES for the transport's hard cap. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Bytes one memory.read returns (hex doubles them, so a reply stays near the message limit). */
export const MAX_READ_BYTES = 256 * 1024;
/** How long a stopped vCPU waits for a breakpoint subscriber's answer before it continues. */
export const DEFAULT_REPLY_MS = 1000;

const Hex = Type.String({ pattern: "^0x[0-9a-fA-F]{1,16}$", description: 'a 64-bit address, "0x…"' });
const HexBytes = Type.String({
  pattern: "^([0-9a-fA-F]{2})*$",
  description: "bytes as hex, two digits each",
});
const Vm = Type.String({ minLength: 1, maxLength: 255, description: "a VM name from vm.list" });
const Cpu = Type.Integer({ minimum: 0, maximum: 1023 });
const Pid = Type.Integer({ minimum: 0, maximum: 4194304 });
const Id = Type.String({ minLength: 1, maxLength: 64 });
const Row = Type.Record(Type.String(), Type.Unknown(), { description: "the CLI's --json row" });
const Rows = Type.Object({ rows: Type.Array(Row) });
const Empty = Type.Object({}, { additionalProperties: false });
const VmOnly = Type.Object({ vm: Vm }, { additionalProperties: false });
const Registers = Type.Record(Type.String({ pattern: "^[a-z0-9_]{1,16}$" }), Hex);
const SpaceFields = {
  space: Type.Optional(Type.Union([Type.Literal("phys"), Type.Literal("virt")], { default: "virt" })),
  cpu: Type.Optional(Cpu),
  cr3: Type.Optional(Hex),
  pid: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 4194304, description: "virtual in this process's address space" }),
  ),
};
const Subscription = Type.Object({ subscription: Id });

export const EVENT_TYPES = [
  "vm.state",
  "breakpoint",
  "memory.access",
  "process.create",
  "process.exec",
  "process.exit",
  "module.load",
  "module.unload",
  "syscall",
  "switch",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];
const EventTypeSchema = Type.Union(EVENT_TYPES.map((t) => Type.Literal(t)));

const SIGNALS = ["KILL", "TERM", "STOP", "CONT"] as const;
/** events/kill.ts's methods, spelled here so the schema imports nothing that needs Node (a browser bundles it). */
const KILL_METHODS = ["send", "wake", "memory"] as const;

const Action = Type.Union([
  Type.Object({ action: Type.Literal("continue") }, { additionalProperties: false }),
  Type.Object({ action: Type.Literal("skip") }, { additionalProperties: false }),
  Type.Object(
    { action: Type.Literal("set_registers"), registers: Registers },
    { additionalProperties: false },
  ),
]);

interface MethodSpec {
  readonly summary: string;
  readonly params: TSchema;
  readonly result: TSchema;
  /** The vmsight error codes (error.data.code) this method is expected to return. */
  readonly errors: readonly string[];
}

const linuxList = (what: string) => ({
  summary: `${what}, as the CLI's --json rows (a consistent snapshot: the guest pauses for a few ms)`,
  params: VmOnly,
  result: Rows,
  errors: ["E_NO_KERNEL", "E_GUEST_DATA", "E_NO_BTF"],
});

export const METHODS = {
  initialize: {
    summary: "the first request: agree on the protocol version and learn the server's capabilities",
    params: Type.Object(
      {
        protocolVersion: Type.Integer({ minimum: 1 }),
        client: Type.Optional(Type.String({ maxLength: 255 })),
      },
      { additionalProperties: false },
    ),
    result: Type.Object({
      protocolVersion: Type.Integer(),
      server: Type.String(),
      capabilities: Type.Object({
        methods: Type.Array(Type.String()),
        events: Type.Array(Type.String()),
        maxMessageBytes: Type.Integer(),
        maxReadBytes: Type.Integer(),
        breakpointReplyMs: Type.Integer(),
      }),
    }),
    errors: [],
  },
  "vm.list": {
    summary: "the VMs the server knows (from --vm and --scan), present or gone",
    params: Empty,
    result: Type.Object({
      vms: Type.Array(Type.Object({ name: Type.String(), qmp: Type.String(), present: Type.Boolean() })),
    }),
    errors: [],
  },
  "vm.get_info": {
    summary:
      "run state, QEMU pid, vCPUs and RAM layout (KVMI_GET_GUEST_INFO); `memoryAccess`, how guest RAM is read (`mapped`, `process memory`, `file` or `snapshot`, through `memoryPath`); and `traps`: the breakpoints and watchpoints armed in the guest for every client's subscriptions (0 once they end)",
    params: VmOnly,
    result: Row,
    errors: ["E_QMP_CLOSED", "E_GUEST_GONE"],
  },
  "vm.pause": {
    summary: "stop every vCPU (KVMI_PAUSE_GUEST); returns the new status",
    params: VmOnly,
    result: Row,
    errors: ["E_QMP_COMMAND"],
  },
  "vm.resume": {
    summary: "let the vCPUs run (KVMI_UNPAUSE_GUEST); returns the new status",
    params: VmOnly,
    result: Row,
    errors: ["E_QMP_COMMAND"],
  },
  "vcpu.get_registers": {
    summary: "a vCPU's registers (KVMI_GET_REGISTERS); the guest pauses while they are read",
    params: Type.Object({ vm: Vm, cpu: Type.Optional(Cpu) }, { additionalProperties: false }),
    result: Type.Object({ registers: Registers }),
    errors: ["E_CPU", "E_GDBSTUB"],
  },
  "vcpu.set_registers": {
    summary: "set some of a vCPU's registers (KVMI_SET_REGISTERS); others keep their values",
    params: Type.Object({ vm: Vm, cpu: Cpu, registers: Registers }, { additionalProperties: false }),
    result: Empty,
    errors: ["E_CPU", "E_GDB_NO_REGISTER"],
  },
  "memory.read": {
    summary: "read guest memory, physical or virtual (KVMI_READ_PHYSICAL)",
    params: Type.Object(
      { vm: Vm, address: Hex, length: Type.Integer({ minimum: 1, maximum: MAX_READ_BYTES }), ...SpaceFields },
      { additionalProperties: false },
    ),
    result: Type.Object({ address: Hex, length: Type.Integer(), bytes: HexBytes }),
    errors: ["E_FAULT", "E_MEMORY_ACCESS"],
  },
  "memory.write": {
    summary: "write guest memory, physical or virtual (KVMI_WRITE_PHYSICAL)",
    params: Type.Object(
      {
        vm: Vm,
        address: Hex,
        bytes: Type.String({ pattern: "^([0-9a-fA-F]{2})+$", maxLength: 2 * MAX_READ_BYTES }),
        ...SpaceFields,
      },
      { additionalProperties: false },
    ),
    result: Type.Object({ written: Type.Integer() }),
    errors: ["E_FAULT", "E_MEMORY_ACCESS"],
  },
  "memory.translate": {
    summary: "walk the page tables: physical address, page size, rights",
    params: Type.Object(
      { vm: Vm, address: Hex, cpu: SpaceFields.cpu, cr3: SpaceFields.cr3, pid: SpaceFields.pid },
      {
        additionalProperties: false,
      },
    ),
    result: Row,
    errors: ["E_FAULT"],
  },
  "memory.set_access": {
    summary:
      "report reads, writes or executions of a range (KVMI_SET_PAGE_ACCESS, as hardware watchpoints): memory.access events until events.unsubscribe",
    params: Type.Object(
      {
        vm: Vm,
        address: Hex,
        length: Type.Union([Type.Literal(1), Type.Literal(2), Type.Literal(4), Type.Literal(8)]),
        access: Type.Union([
          Type.Literal("read"),
          Type.Literal("write"),
          Type.Literal("access"),
          Type.Literal("execute"),
        ]),
        space: Type.Optional(Type.Union([Type.Literal("phys"), Type.Literal("virt")], { default: "virt" })),
        pid: Type.Optional(Pid),
        comm: Type.Optional(Type.String({ maxLength: 15 })),
      },
      { additionalProperties: false },
    ),
    result: Subscription,
    errors: ["E_WATCH_ADDRESS", "E_WATCH_LENGTH", "E_WATCH_UNMAPPED", "E_TRAP_REFUSED"],
  },
  "breakpoint.set": {
    summary:
      "break at a symbol or address: breakpoint events; with `wait`, the vCPU holds until breakpoint.reply or the deadline",
    params: Type.Object(
      {
        vm: Vm,
        at: Type.String({ minLength: 1, maxLength: 255, description: 'a kernel symbol or "0x…" address' }),
        pid: Type.Optional(Pid),
        comm: Type.Optional(Type.String({ maxLength: 15 })),
        wait: Type.Optional(Type.Boolean({ default: false })),
        replyMs: Type.Optional(Type.Integer({ minimum: 1, maximum: 60000 })),
      },
      { additionalProperties: false },
    ),
    result: Subscription,
    errors: ["E_SYMBOL_UNKNOWN", "E_TRAP_REFUSED"],
  },
  "breakpoint.clear": {
    summary: "remove a breakpoint this client set (same as events.unsubscribe)",
    params: Type.Object({ subscription: Id }, { additionalProperties: false }),
    result: Empty,
    errors: [],
  },
  "breakpoint.reply": {
    summary:
      "answer a held breakpoint event: continue, skip the instruction (a NOP or ENDBR: its length is known), or set registers and continue",
    params: Type.Object({ event: Id, reply: Action }, { additionalProperties: false }),
    result: Type.Object({ applied: Type.Boolean({ description: "false when the deadline had passed" }) }),
    errors: ["E_USAGE", "E_HOLD_ENDED"],
  },
  "events.subscribe": {
    summary: "receive `event` notifications of these types from one VM (KVMI_EVENT_CONTROL)",
    params: Type.Object(
      {
        vm: Vm,
        types: Type.Array(EventTypeSchema, { minItems: 1, maxItems: EVENT_TYPES.length, uniqueItems: true }),
        pid: Type.Optional(Pid),
        comm: Type.Optional(Type.String({ maxLength: 15 })),
      },
      { additionalProperties: false },
    ),
    result: Subscription,
    errors: ["E_TRAP_REFUSED", "E_NO_KERNEL"],
  },
  "events.unsubscribe": {
    summary:
      "end a subscription, breakpoint or watch of this client; its traps go when no one else holds them",
    params: Type.Object({ subscription: Id }, { additionalProperties: false }),
    result: Empty,
    errors: [],
  },
  "linux.kernel": {
    summary: "kernel version, KASLR slide, randomised bases, symbol and type counts",
    params: VmOnly,
    result: Row,
    errors: ["E_NO_KERNEL", "E_NO_SLIDE"],
  },
  "linux.ps": linuxList("the processes"),
  "linux.threads": linuxList("every thread"),
  "linux.pstree": linuxList("the process tree, one row per line"),
  "linux.lsmod": linuxList("the loaded modules"),
  "linux.pids": linuxList("the processes seen through the PID namespace (finds unlinked tasks)"),
  "linux.check": linuxList(
    "kernel integrity findings: syscall-table entries outside kernel text, hidden modules and processes (none on a clean guest)",
  ),
  "linux.maps": {
    summary: "one process's memory mappings, as its /proc/PID/maps",
    params: Type.Object({ vm: Vm, pid: Pid }, { additionalProperties: false }),
    result: Rows,
    errors: ["E_NO_PROCESS", "E_GUEST_DATA"],
  },
  "linux.lsof": {
    summary: "open files of one process (pid) or of all, as /proc/PID/fd and fdinfo",
    params: Type.Object({ vm: Vm, pid: Type.Optional(Pid) }, { additionalProperties: false }),
    result: Rows,
    errors: ["E_NO_PROCESS", "E_GUEST_DATA"],
  },
  "linux.sockets": linuxList(
    "the sockets the processes hold, as /proc/net/{tcp,tcp6,udp,udp6,unix,netlink,packet}",
  ),
  "linux.env": {
    summary: "one process's environment, as its /proc/PID/environ",
    params: Type.Object({ vm: Vm, pid: Pid }, { additionalProperties: false }),
    result: Rows,
    errors: ["E_NO_PROCESS", "E_GUEST_DATA"],
  },
  "linux.mounts": {
    summary: "the mounts a process (default 1) sees, as its /proc/PID/mountinfo",
    params: Type.Object({ vm: Vm, pid: Type.Optional(Pid) }, { additionalProperties: false }),
    result: Rows,
    errors: ["E_NO_PROCESS", "E_GUEST_DATA"],
  },
  "linux.ns": linuxList("each process's namespace ids and cgroup path"),
  "linux.containers": linuxList("processes grouped by namespace set and cgroup path"),
  "linux.dmesg": linuxList("the kernel log from its ring buffer, one row a line"),
  "linux.kill": {
    summary:
      "send a signal to a guest process from outside; subscriptions on the VM go on meanwhile and see what it does (its process.exit)",
    params: Type.Object(
      {
        vm: Vm,
        pid: Pid,
        signal: Type.Optional(
          Type.Union(
            SIGNALS.map((s) => Type.Literal(s)),
            { default: "KILL" },
          ),
        ),
        method: Type.Optional(
          Type.Union(
            KILL_METHODS.map((m) => Type.Literal(m)),
            { default: "send", description: "as `vmsight kill --method`" },
          ),
        ),
        force: Type.Optional(Type.Boolean({ default: false })),
        timeoutMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 600000, default: 2000 })),
      },
      { additionalProperties: false },
    ),
    result: Row,
    // E_BUSY: method "memory" found the process's signal lock held every time it looked.
    errors: ["E_NO_PROCESS", "E_INJECT_CALL", "E_INJECT_TIMEOUT", "E_BUSY"],
  },
} satisfies Record<string, MethodSpec>;

export type MethodName = keyof typeof METHODS;
export type Params<M extends MethodName> = Static<(typeof METHODS)[M]["params"]>;
export type Result<M extends MethodName> = Static<(typeof METHODS)[M]["result"]>;

/** The `event` notification's params: the trace record's fields plus these. */
export const EVENT_PARAMS = Type.Object({
  vm: Vm,
  type: EventTypeSchema,
  subscription: Type.Optional(Id),
  reply: Type.Optional(
    Type.Object(
      { event: Id, deadlineMs: Type.Integer() },
      { description: "present when the vCPU waits for breakpoint.reply" },
    ),
  ),
});

/** The JSON-RPC 2.0 envelope every incoming message must match (no batches). */
export const REQUEST = Type.Object({
  jsonrpc: Type.Literal("2.0"),
  id: Type.Optional(Type.Union([Type.String({ maxLength: 64 }), Type.Integer(), Type.Null()])),
  method: Type.String({ maxLength: 64 }),
  params: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

/** Protocol-level errors (error.code); failures inside vmsight are SERVER_ERROR with data.code. */
export const RPC_ERRORS = {
  PARSE_ERROR: { code: -32700, meaning: "the message is not JSON" },
  INVALID_REQUEST: {
    code: -32600,
    meaning: "not a JSON-RPC 2.0 request (a batch, a bad envelope, or over the size limit)",
  },
  METHOD_NOT_FOUND: { code: -32601, meaning: "no such method" },
  INVALID_PARAMS: {
    code: -32602,
    meaning: "params do not match the method's schema (data.errors lists where)",
  },
  INTERNAL_ERROR: { code: -32603, meaning: "a bug in the server" },
  SERVER_ERROR: {
    code: -32000,
    meaning: "vmsight failed; data.code is one of the error codes below, data.hint says what to do",
  },
  UNKNOWN_VM: { code: -32001, meaning: "no VM of that name, or it has gone" },
  NOT_INITIALIZED: { code: -32002, meaning: "initialize must come first (and only once)" },
  UNKNOWN_SUBSCRIPTION: {
    code: -32003,
    meaning: "no such subscription, breakpoint or watch on this connection",
  },
  TOO_MANY_REQUESTS: { code: -32004, meaning: "too many requests in flight on this connection" },
  UNSUPPORTED_VERSION: {
    code: -32005,
    meaning: "the server does not speak that protocol version (data.supported lists those it does)",
  },
} as const;
