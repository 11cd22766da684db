import { TRACE_KINDS, type TraceKind, type TraceRequest, describeEvent } from "../commands/trace.js";
import type { WatchKind } from "../events/engine.js";
import { UsageError } from "../util/errors.js";
import { addressArg, intArg, stringValue } from "./args.js";
import { type CliCommand, type CommandContext, needVm } from "./command.js";
import { toJson } from "./render.js";

const ACCESS: readonly WatchKind[] = ["write", "read", "access"];
const PROC_EVENTS = ["create", "exec", "exit"] as const;

function request(ctx: CommandContext): Omit<TraceRequest, "signal" | "log"> {
  const [kindText, arg, extra] = ctx.positionals;
  if (!TRACE_KINDS.includes(kindText as TraceKind)) {
    throw new UsageError(`trace what? "${kindText ?? ""}"`, `one of: ${TRACE_KINDS.join(", ")}`);
  }
  const kind = kindText as TraceKind;
  const needsArg = kind === "break" || kind === "watch";
  if (needsArg && arg === undefined)
    throw new UsageError(`trace ${kind} needs ${kind === "break" ? "a SYMBOL or ADDRESS" : "an ADDRESS"}`);
  if ((needsArg ? extra : arg) !== undefined)
    throw new UsageError(`unexpected argument "${needsArg ? extra : arg}"`);
  const v = ctx.values;
  const pidText = stringValue(v, "pid");
  const comm = stringValue(v, "comm");
  if (pidText !== undefined && comm !== undefined && kind === "syscalls") {
    throw new UsageError("give --pid or --comm, not both");
  }
  if (comm !== undefined && (comm.length === 0 || comm.length > 15)) {
    throw new UsageError(`--comm must be 1 to 15 characters (the kernel's comm), got "${comm}"`);
  }
  const durationText = stringValue(v, "duration");
  const duration = durationText === undefined ? undefined : Number(durationText);
  if (duration !== undefined && !(duration > 0 && duration <= 7 * 86400)) {
    throw new UsageError(`--duration must be a number of seconds above 0, got "${durationText}"`);
  }
  const countText = stringValue(v, "count");
  const access = stringValue(v, "kind") ?? "write";
  if (!ACCESS.includes(access as WatchKind)) throw new UsageError(`--kind must be ${ACCESS.join(", ")}`);
  const lenText = stringValue(v, "len");
  const eventsText = stringValue(v, "events");
  let events: TraceRequest["events"];
  if (eventsText !== undefined) {
    const names = eventsText.split(",").map((s) => s.trim());
    const bad = names.find((n) => !PROC_EVENTS.includes(n as (typeof PROC_EVENTS)[number]));
    if (bad !== undefined || kind !== "proc") {
      throw new UsageError(`--events takes ${PROC_EVENTS.join(",")} with trace proc`);
    }
    events = { create: names.includes("create"), exec: names.includes("exec"), exit: names.includes("exit") };
  }
  return {
    kind,
    ...(pidText === undefined ? {} : { pid: intArg(pidText, "--pid", 0, 0x3fffffff) }),
    ...(comm === undefined ? {} : { comm }),
    ...(duration === undefined ? {} : { durationS: duration }),
    ...(countText === undefined ? {} : { count: intArg(countText, "--count", 1, 1e9) }),
    ...(events === undefined ? {} : { events }),
    ...(kind === "break" ? { at: arg! } : {}),
    ...(kind === "watch"
      ? {
          address: addressArg(arg, "ADDRESS"),
          length: lenText === undefined ? 8 : intArg(lenText, "--len", 1, 8),
          access: access as WatchKind,
        }
      : {}),
  };
}

/**
 * Ctrl-C and SIGTERM end the trace the normal way (traps removed, guest running, exit 0); a
 * second one exits at once and leaves the cleanup to the watchdog.
 */
function takeOverSignals(abort: AbortController): () => void {
  const saved = new Map<NodeJS.Signals, ((...args: unknown[]) => void)[]>();
  const handler = () => {
    if (abort.signal.aborted) process.exit(130);
    abort.abort();
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    saved.set(sig, process.listeners(sig) as (() => void)[]);
    process.removeAllListeners(sig);
    process.on(sig, handler);
  }
  return () => {
    for (const [sig, listeners] of saved) {
      process.removeListener(sig, handler);
      for (const l of listeners) process.on(sig, l);
    }
  };
}

const trace: CliCommand = {
  name: "trace",
  usage:
    "trace proc|modules|syscalls|switch|break SYM|watch ADDR [--pid P] [--comm C] [--duration S] [--count N]",
  summary: "stream guest events (process, module, syscall, switch) or hits of a breakpoint/watchpoint",
  options: {
    pid: { type: "string" },
    comm: { type: "string" },
    duration: { type: "string" },
    count: { type: "string" },
    events: { type: "string" },
    len: { type: "string" },
    kind: { type: "string" },
  },
  needsTarget: true,
  check: (ctx) => void request(ctx),
  async run(ctx) {
    const { kind, count, durationS, events, ...rest } = request(ctx);
    const abort = new AbortController();
    const restore = takeOverSignals(abort);
    process.stdout.on("error", () => abort.abort()); // e.g. `| head` closed the pipe
    const started = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const stream = needVm(ctx).events({
      ...rest,
      types: [kind],
      ...(events === undefined ? {} : { proc: events }),
      signal: abort.signal,
      log: ctx.log,
      onReady: (n) => {
        const how = ctx.server ? `through vmsight serve (pid ${ctx.server.pid})` : `with ${n} trap(s)`;
        ctx.log(`tracing ${kind} ${how}; Ctrl-C to stop`);
        // The duration counts from the traps being set, not from attaching.
        if (durationS !== undefined) timer = setTimeout(() => abort.abort(), durationS * 1000);
      },
    });
    let seen = 0;
    try {
      for await (const e of stream) {
        seen++;
        ctx.out(ctx.json ? toJson(e) : describeEvent(e));
        if (count !== undefined && seen >= count) break; // removes the traps
      }
    } finally {
      clearTimeout(timer);
      restore();
    }
    const seconds = (performance.now() - started) / 1000;
    // A server shares its traps among clients: how often the guest stopped is not this stream's to say.
    const stops = ctx.server ? "" : `, ${stream.stops} guest stop(s)`;
    ctx.log(`trace ${kind}: ${seen} event(s)${stops} in ${seconds.toFixed(1)} s; traps removed`);
    return 0;
  },
};

export const EVENT_COMMANDS: readonly CliCommand[] = [trace];
