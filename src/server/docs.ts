/**
 * Generates docs/protocol.md from the schema (schema.ts), so the document cannot drift from
 * what the server validates. A unit test compares the file with this output;
 * `node dist/src/server/docs.js` rewrites it.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TSchema } from "@sinclair/typebox";
import { ERROR_CODES } from "../util/errors.js";
import { DEFAULT_MAX_QUEUE, DEFAULT_PUBLISHED } from "./nats.js";
import {
  DEFAULT_REPLY_MS,
  EVENT_PARAMS,
  EVENT_TYPES,
  type EventType,
  MAX_MESSAGE_BYTES,
  MAX_READ_BYTES,
  METHODS,
  PROTOCOL_VERSION,
  RPC_ERRORS,
} from "./schema.js";
import { MAX_FRAME_BYTES } from "./ws.js";

type Json = Record<string, unknown>;

/** A compact TypeScript-like rendering of a JSON Schema, indented for nested objects. */
export function typeText(schema: TSchema | Json, indent = ""): string {
  const s = schema as Json;
  if ("const" in s) return JSON.stringify(s.const);
  if (Array.isArray(s.anyOf)) return (s.anyOf as Json[]).map((x) => typeText(x, indent)).join(" | ");
  const note = (t: string) => {
    const bits: string[] = [];
    if (typeof s.pattern === "string" && s.description === undefined) bits.push(`/${s.pattern}/`);
    if (s.minimum !== undefined || s.maximum !== undefined)
      bits.push(`${s.minimum ?? ""}..${s.maximum ?? ""}`);
    if (s.maxLength !== undefined && s.pattern === undefined) bits.push(`≤ ${s.maxLength} chars`);
    if (typeof s.description === "string") bits.push(s.description);
    return bits.length ? `${t} /* ${bits.join("; ")} */` : t;
  };
  switch (s.type) {
    case "string":
      return note("string");
    case "integer":
      return note("integer");
    case "number":
      return note("number");
    case "boolean":
      return note("boolean");
    case "null":
      return "null";
    case "array":
      return `${wrap(typeText(s.items as Json, indent))}[]`;
    case "object":
      return objectText(s, indent);
  }
  return note("any");
}

function wrap(t: string): string {
  return t.includes(" | ") ? `(${t})` : t;
}

function objectText(s: Json, indent: string): string {
  const props = (s.properties ?? {}) as Record<string, Json>;
  const pattern = s.patternProperties as Record<string, Json> | undefined;
  if (pattern) {
    const [key, value] = Object.entries(pattern)[0] ?? ["", {}];
    const keyText = key === "^(.*)$" ? "string" : `string /* /${key}/ */`;
    return note(s, `{ [name: ${keyText}]: ${typeText(value, indent)} }`);
  }
  const names = Object.keys(props);
  if (names.length === 0) return "{}";
  const required = new Set((s.required ?? []) as string[]);
  const inner = `${indent}  `;
  const lines = names.map((n) => {
    const p = props[n] as Json;
    const dflt = p.default === undefined ? "" : ` = ${JSON.stringify(p.default)}`;
    return `${inner}${n}${required.has(n) ? "" : "?"}: ${typeText(p, inner)}${dflt};`;
  });
  return `{\n${lines.join("\n")}\n${indent}}`;
}

function note(s: Json, t: string): string {
  return typeof s.description === "string" ? `${t} /* ${s.description} */` : t;
}

const EVENT_NOTES: Record<EventType, string> = {
  "vm.state":
    "QMP STOP, RESUME, SHUTDOWN, RESET, GUEST_PANICKED (`event` names it), and APPEARED/VANISHED when a VM's socket comes or goes. Subscribe with `vm: \"*\"` for every VM's APPEARED/VANISHED.",
  breakpoint:
    "a breakpoint set with breakpoint.set was hit: at, cpu, pid, tid, comm, rip, args (the first six call arguments).",
  "memory.access":
    "a watched range (memory.set_access) was read, written or executed: access (read, write, access or execute, as set), address, cpu, pid, tid, comm, rip, where, value.",
  "process.create": "a task was created (fork/clone): the CLI's `trace proc` record.",
  "process.exec": "a task called execve: filename, pid, comm.",
  "process.exit": "a task exited: pid, exit code.",
  "module.load": "a kernel module was loaded: name, base, size.",
  "module.unload": "a kernel module was unloaded: name, base.",
  syscall: "a system call returned: pid, tid, comm, nr, name, args, ret (heavy: every call stops a vCPU).",
  switch: "a context switch: cpu, prev, next, cr3 (heavy).",
};

export function protocolDoc(): string {
  const out: string[] = [];
  const p = (...lines: string[]) => out.push(...lines);
  p(
    "# The vmsight serve protocol",
    "",
    "<!-- Generated from src/server/schema.ts by src/server/docs.ts; a unit test fails when this file differs. -->",
    "",
    `Protocol version ${PROTOCOL_VERSION}. JSON-RPC 2.0 over WebSocket, one JSON message per text or binary frame.`,
    "`vmsight serve` listens on a unix socket (mode 0600) and, with `--listen HOST:PORT`, on TCP, where the",
    "client must add the server's token to the URL (`ws://HOST:PORT/?token=…`; the server prints that URL as",
    "its first line on stdout). Batches are not supported. Requests are handled concurrently; replies may",
    "come in any order, matched by `id`. A message without `id` is a notification: it gets no reply, not even an error.",
    "",
    "## Limits",
    "",
    `- A message over ${MAX_MESSAGE_BYTES} bytes gets an \`Invalid Request\` error reply and is not parsed;`,
    `  a frame over ${MAX_FRAME_BYTES} bytes closes the connection (WebSocket status 1009).`,
    `- memory.read returns at most ${MAX_READ_BYTES} bytes per request.`,
    "- A client may have 4096 requests in flight; more get `TOO_MANY_REQUESTS`.",
    "- A client that stops reading is disconnected once its unsent data passes 8 MiB; its subscriptions,",
    "  breakpoints and watches end with it, as they do when it disconnects or crashes.",
    "",
    "## Handshake",
    "",
    "The first request must be `initialize` with the client's `protocolVersion`; every other method before it",
    "fails with `NOT_INITIALIZED`. The result lists the methods, event types and limits of this server.",
    "",
    "## Errors",
    "",
    "An error reply is `{ code, message, data? }`.",
    "",
    "| code | name | meaning |",
    "|---|---|---|",
    ...Object.entries(RPC_ERRORS).map(([name, e]) => `| ${e.code} | ${name} | ${e.meaning} |`),
    "",
    "When vmsight itself fails (`SERVER_ERROR`), `data` is `{ code, hint? }` with `code` one of:",
    "",
    ERROR_CODES.map((c) => `\`${c}\``).join(", "),
    "",
    "## Methods",
    "",
  );
  for (const [name, spec] of Object.entries(METHODS)) {
    p(`### ${name}`, "", `${spec.summary[0]?.toUpperCase()}${spec.summary.slice(1)}.`, "");
    p(
      "Params:",
      "",
      "```ts",
      typeText(spec.params),
      "```",
      "",
      "Result:",
      "",
      "```ts",
      typeText(spec.result),
      "```",
      "",
    );
    if (spec.errors.length) p(`Errors (data.code): ${spec.errors.map((e) => `\`${e}\``).join(", ")}.`, "");
  }
  p(
    "## Events",
    "",
    "The server sends notifications `event` with params `{ vm, type, subscription, …record }`, where the record",
    'is the CLI\'s `trace --json` record for that event (addresses as "0x…" strings). When a subscription ends',
    "on its own (the VM went away, the guest stopped tracing), the server sends `subscription.ended`",
    "`{ subscription, vm, error? }`. The fields every `event` carries:",
    "",
    "```ts",
    typeText(EVENT_PARAMS),
    "```",
    "",
    "| type | when |",
    "|---|---|",
    ...EVENT_TYPES.map((t) => `| ${t} | ${EVENT_NOTES[t]} |`),
    "",
    "### Breakpoint replies",
    "",
    "A breakpoint set with `wait: true` holds the vCPU that hit it: its event carries `reply: { event, deadlineMs }`",
    "and the vCPU stays stopped until the client sends `breakpoint.reply` with `continue`, `skip` (step over the",
    "instruction without running it) or `set_registers` (then continue), or until the deadline (default",
    `${DEFAULT_REPLY_MS} ms, \`replyMs\` to change it) passes, when the server continues it. KVMi's default action on`,
    "timeout is the same shape. A client that disconnects releases every vCPU it holds.",
    "",
    "While one vCPU is held the guest stays stopped (QEMU's gdbstub stops every vCPU together): other",
    "subscriptions' events wait, and calls (linux.ps, memory.read, vcpu.get_registers, …) answer from the stopped",
    "guest meanwhile. `skip` moves rip past the instruction only where vmsight knows its length without a",
    "disassembler: a NOP or ENDBR, as at most kernel function entries (else the reply fails with E_USAGE and the",
    "vCPU continues); to leave a function without running it, answer `set_registers` with rip set to the return",
    "address read at rsp, rsp + 8 and the rax to return. An answer after the deadline gets `applied: false`.",
    "",
    "## Publishing to NATS",
    "",
    "`vmsight serve --publish nats://HOST:PORT` sends events to NATS JetStream, stream `VMSIGHT` (file storage,",
    "created when missing), subject `vmsight.<host>.<vm>.<type>`; each message is the event's record with `host`",
    "and `time` added (no `subscription`). By default it publishes",
    `${DEFAULT_PUBLISHED.map((t) => `\`${t}\``).join(", ")}: the events that cost the guest little.`,
    "`--publish-types all` (or a comma-separated list of types) publishes more. `syscall` and `switch` are",
    "left out by default because publishing them arms their traps in every guest served, stopping a vCPU",
    "on every system call or context switch; `breakpoint` and `memory.access` are published as the clients",
    "that set them (breakpoint.set, memory.set_access) receive them, one message per client.",
    "",
    "Events are published one at a time, each after the previous one's acknowledgement, so they reach",
    "the stream in order. A publish that fails (nats-server restarting or unreachable) is retried with",
    "the same message id (JetStream drops the duplicate if the first attempt landed) while later events",
    `wait behind it, up to ${DEFAULT_MAX_QUEUE} of them; past that, new events are dropped and serve logs a warning`,
    "on stderr, then how many it dropped once it catches up.",
    "",
    "## KVMi and what QEMU cannot surface",
    "",
    "| KVMi | vmsight |",
    "|---|---|",
    "| KVMI_GET_GUESTS, KVMI_EVENT_GUEST_ON/OFF | vm.list; vm.state APPEARED/VANISHED |",
    "| KVMI_GET_VERSION | initialize |",
    "| KVMI_GET_GUEST_INFO | vm.get_info |",
    "| KVMI_PAUSE_GUEST, KVMI_UNPAUSE_GUEST | vm.pause, vm.resume |",
    "| KVMI_GET_REGISTERS, KVMI_SET_REGISTERS | vcpu.get_registers, vcpu.set_registers |",
    '| KVMI_READ_PHYSICAL, KVMI_WRITE_PHYSICAL | memory.read, memory.write (`space: "phys"`, or virtual through a vCPU\'s CR3) |',
    "| KVMI_SET_PAGE_ACCESS, KVMI_EVENT_PAGE_FAULT | memory.set_access → memory.access events |",
    "| KVMI_EVENT_BREAKPOINT (reply SET_REGS / ALLOW) | breakpoint.set, breakpoint events, breakpoint.reply |",
    "| KVMI_EVENT_CONTROL | events.subscribe, events.unsubscribe |",
    "",
    "QEMU's gdbstub and QMP are the only ways in, and they cannot offer these, so vmsight does not pretend to:",
    "",
    "- **CR, MSR, XSETBV and descriptor-table intercepts** (KVMI_CR_CONTROL, KVMI_MSR_CONTROL, KVMI_EVENT_CR/MSR/XSETBV):",
    "  QEMU has no exit to report them. Instead: vcpu.get_registers reads CR0/CR3/CR4/EFER and the syscall",
    "  MSRs when asked; a breakpoint on the kernel function that writes the register (e.g. `native_write_cr4`,",
    "  `wrmsr` callers) reports the write with its arguments and can skip it.",
    "- **Per-vCPU pause**: the gdbstub stops every vCPU together; vm.pause stops them all. Breakpoint events",
    "  say which vCPU hit.",
    "- **Exception and page-fault injection** (KVMI_INJECT_PAGE_FAULT, KVMI_INJECT_BREAKPOINT, KVMI_EVENT_TRAP):",
    "  not available through QEMU. Instead: vcpu.set_registers on a held breakpoint redirects execution,",
    "  and linux.kill signals a process from outside.",
    "- **Page access as EPT permissions** (KVMI_SET_PAGE_ACCESS on whole pages): memory.set_access uses the",
    "  debug registers, so at most four ranges of 1, 2, 4 or 8 bytes are watched at a time (under TCG, more).",
    "- **Hypercalls** (KVMI_EVENT_USER_CALL), MTRR and XSAVE queries: not reachable; none offered.",
    "",
  );
  return out.join("\n");
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/\\/g, "/"))) {
  const path = join(process.argv[2] ?? ".", "docs", "protocol.md");
  writeFileSync(path, protocolDoc());
  console.log(`wrote ${path}`);
}
