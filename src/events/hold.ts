/**
 * A vCPU held at a breakpoint until an introspector answers, as KVMi's breakpoint event with its
 * reply: the trap core keeps the guest stopped while a stop's handler runs, so the handler waits
 * here for the answer (or the deadline, then the vCPU continues) and applies it before returning.
 */
import { skippableLength } from "../arch/x86/skippable.js";
import { hex, parseAddress } from "../util/address.js";
import { VmsightError } from "../util/errors.js";
import type { TrapHit } from "./engine.js";

/** What a held vCPU is told to do. */
export type BreakAction =
  | { readonly action: "continue" }
  | { readonly action: "skip" }
  | { readonly action: "set_registers"; readonly registers: Readonly<Record<string, string>> };

/** Answers a held vCPU; resolves once the answer is applied, rejects if it could not be. */
export type Respond = (action: BreakAction) => Promise<void>;

const MAX_INSN = 15;

/**
 * Publishes a `respond` for the stop at `hit` and holds the vCPU until it is called or
 * `deadlineMs` pass (then it continues). Only the first answer counts; a later one, or one after
 * the deadline, is refused with E_HOLD_ENDED.
 */
export async function holdAtBreakpoint(
  hit: TrapHit,
  deadlineMs: number,
  publish: (respond: Respond) => void,
): Promise<void> {
  let answer: (a: BreakAction) => void = () => {};
  const action = new Promise<BreakAction>((resolve) => {
    answer = resolve;
  });
  let applied: { resolve: () => void; reject: (e: unknown) => void } = { resolve() {}, reject() {} };
  const outcome = new Promise<void>((resolve, reject) => {
    applied = { resolve, reject };
  });
  outcome.catch(() => {}); // the deadline's own answer has no one waiting
  let answered = false;
  const respond: Respond = (a) => {
    if (answered) {
      return Promise.reject(
        new VmsightError(
          "E_HOLD_ENDED",
          "this vCPU is no longer held: it was answered or its deadline passed",
          {
            hint: "answer a held breakpoint once, within its deadline",
          },
        ),
      );
    }
    answered = true;
    answer(a);
    return outcome;
  };
  const timer = setTimeout(() => {
    if (!answered) respond({ action: "continue" }).catch(() => {});
  }, deadlineMs);
  try {
    publish(respond);
    await apply(hit, await action).then(applied.resolve, applied.reject);
  } finally {
    clearTimeout(timer);
  }
}

async function apply(hit: TrapHit, a: BreakAction): Promise<void> {
  if (a.action === "continue") return;
  if (a.action === "skip") {
    const rip = await hit.register("rip");
    const length = skippableLength(hit.read(rip, MAX_INSN));
    if (length === undefined) {
      throw new VmsightError(
        "E_USAGE",
        `cannot skip the instruction at ${hex(rip)}: vmsight knows the length only of instructions without effect (NOP, ENDBR)`,
        { hint: "answer set_registers with the rip (and rsp) to go on from; the vCPU continued" },
      );
    }
    await hit.setRegister("rip", rip + BigInt(length));
    return;
  }
  const values = Object.entries(a.registers).map(([name, text]) => {
    const v = parseAddress(text);
    if (v === undefined || v >= 1n << 64n)
      throw new VmsightError("E_USAGE", `register ${name}: "${text}" is not a 64-bit value`);
    return [name, v] as const;
  });
  for (const [name, v] of values) await hit.setRegister(name, v);
}
