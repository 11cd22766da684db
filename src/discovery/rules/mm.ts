import { isKernelPointer, isUserAddress } from "../../os/linux/walk.js";
import { MM_MEMBERS } from "../members.js";
import type { GuestView, Observation } from "../types.js";
import { AT_EXECFN, MAX_ARGS, MAX_JOINT, MAX_JOINT_WALKS, MM_EXTENT, PAGE, roundUp } from "./abi.js";
import type { RuleContext, TaskEvent } from "./context.js";
import { keepAgreeing } from "./joint.js";
import { Obj } from "./reader.js";

/**
 * mm, active_mm and mm_struct.pgd together. mm is NULL for a kernel thread and equals
 * active_mm for a user task; active_mm is what the CPU runs on, so its pgd is the page table
 * in CR3 (read as a kernel virtual address that maps to the page CR3 names: the direct map,
 * or swapper_pg_dir in the image for init_mm). The idle task has no mm and runs on init_mm.
 */
export function mmPointers(ctx: RuleContext, ev: TaskEvent): void {
  const c = ctx.cands;
  const { cur, idle, child, all } = ev;
  if (c.done("task_struct.mm", "task_struct.active_mm") && (!ctx.groups.has("mm") || c.done("mm_struct.pgd")))
    return;
  const ptrOrNull = (v: bigint) => v === 0n || (isKernelPointer(v, ev.obs.view.bounds) && v % 8n === 0n);
  // Over every task only once few candidates are left: early, the creator and child suffice.
  const seen = (k: string) => (c.get(k).length <= 16 ? all : all.filter((t) => t === cur || t === child));
  for (const k of ["task_struct.mm", "task_struct.active_mm"]) {
    const objs = seen(k);
    c.filter(k, "NULL or a kernel pointer", (o) => objs.every((t) => ptrOrNull(t.u64(o))));
  }
  if (idle) {
    c.filter("task_struct.mm", "idle task has no mm", (o) => cur.u64(o) === 0n);
    c.filter("task_struct.active_mm", "idle task runs on init_mm", (o) => cur.u64(o) === ctx.facts.initMm);
  }
  // The page table in CR3 is active_mm's for the idle task (init_mm) and for a user task
  // (its own mm). Not for other kernel threads: x86's lazy TLB lets one keep a borrowed
  // active_mm while the CPU has already switched to init_mm.
  const mmOne = c.one("task_struct.mm");
  const user = mmOne !== undefined && cur.u64(mmOne) !== 0n;
  if (idle || user) pgdRule(ctx, ev.obs, cur);
  const a3 = c.get("task_struct.active_mm");
  if (c.get("task_struct.mm").length * a3.length > MAX_JOINT) return;
  c.filter(
    "task_struct.mm",
    "NULL or equal to active_mm",
    (m) => cur.u64(m) === 0n || a3.some((a) => a !== m && cur.u64(a) === cur.u64(m)),
  );
  // copy_mm(): a child gets mm == active_mm (both NULL for a kernel thread).
  if (child)
    keepAgreeing(
      c,
      { key: "task_struct.mm", rule: "child's mm is its active_mm" },
      { key: "task_struct.active_mm", rule: "child's active_mm is its mm" },
      (m, a) => a !== m && child.u64(a) === child.u64(m),
    );
}

function pgdRule(ctx: RuleContext, obs: Observation, cur: Obj): void {
  if (!ctx.groups.has("mm") || ctx.cands.get("mm_struct.pgd").length === 0) return;
  const pgdOf = (mm: bigint, p: number) => {
    const b = obs.view.read(mm + BigInt(p), 8);
    return b ? obs.view.translate(b.readBigUInt64LE(0)) : undefined;
  };
  keepAgreeing(
    ctx.cands,
    { key: "task_struct.active_mm", rule: "its pgd is CR3" },
    { key: "mm_struct.pgd", rule: "active_mm's pgd is CR3" },
    (a, p) => {
      const mm = cur.u64(a);
      return isKernelPointer(mm, obs.view.bounds) && pgdOf(mm, p) === obs.cr3Root;
    },
  );
}

/**
 * mm_struct's code and argument members, checked on the current task's mm when it is a user
 * process, through that process's own page tables: the code range is user memory mapped
 * read+execute from its first byte (the page before is not code) to its last (the page after
 * is not); the argument and environment strings are adjacent NUL-terminated runs in writable,
 * non-executable memory.
 */
export function mmRules(ctx: RuleContext, obs: Observation, cur: Obj): void {
  const c = ctx.cands;
  const mmOff = c.one("task_struct.mm");
  const pgdOff = c.one("mm_struct.pgd");
  if (mmOff === undefined || pgdOff === undefined || c.done(...MM_MEMBERS)) return;
  const mmAddr = cur.u64(mmOff);
  if (!isKernelPointer(mmAddr, obs.view.bounds)) return;
  const bytes = obs.view.read(mmAddr, MM_EXTENT);
  if (!bytes) return;
  const mm = Obj.of(mmAddr, bytes);
  const pgd = mm.u64(pgdOff);
  // Pages a process has not touched are not present, and fork() write-protects every private
  // page for copy-on-write: only what a present page says counts, and "writable" does not.
  const page = (a: bigint) => obs.view.userPage(pgd, a);
  const notCode = (a: bigint) => {
    const r = page(a);
    return r !== undefined && !(r.user && r.executable && !r.writable);
  };
  const isCode = (a: bigint) => {
    const r = page(a);
    return r?.user === true && r.executable && !r.writable;
  };
  const notData = (a: bigint) => {
    const r = page(a);
    return r !== undefined && (!r.user || r.executable);
  };
  const byteAt = (a: bigint) => obs.view.readUser(pgd, a, 1)?.[0];
  const isUser = (v: bigint) => v > 0n && isUserAddress(v, obs.view.bounds);

  c.filter("mm_struct.start_code", "first byte of user code", (o) => {
    const v = mm.u64(o);
    return isUser(v) && v > PAGE && !notCode(v) && !isCode(v - 1n);
  });
  c.filter("mm_struct.end_code", "end of user code", (o) => {
    const v = mm.u64(o);
    return isUser(v) && v > PAGE && !notCode(v - 1n) && !isCode(roundUp(v));
  });
  // mm_struct declares start_code, end_code, ... arg_start, arg_end, env_start, env_end, then
  // saved_auxv (whose AT_SYSINFO_EHDR is the vDSO: code after a non-code page, like a copy of
  // start_code): the code members lie before arg_start, whichever arg_start candidate is true.
  const argStarts = c.get("mm_struct.arg_start");
  for (const k of argStarts.length > 0 ? ["mm_struct.start_code", "mm_struct.end_code"] : [])
    c.filter(k, "declared before arg_start", (o) => o < argStarts[argStarts.length - 1]!);
  keepAgreeing(
    c,
    { key: "mm_struct.start_code", rule: "code up to end_code" },
    { key: "mm_struct.end_code", rule: "code from start_code" },
    (s, e) => userCode(obs.view, pgd, mm.u64(s), mm.u64(e)),
    MAX_JOINT_WALKS,
  );

  c.filter("mm_struct.arg_start", "in user data", (o) => isUser(mm.u64(o)) && !notData(mm.u64(o)));
  for (const k of ["mm_struct.arg_end", "mm_struct.env_start", "mm_struct.env_end"]) {
    c.filter(k, "ends a string in user data", (o) => {
      const v = mm.u64(o);
      return isUser(v) && !notData(v - 1n) && byteAt(v - 1n) === 0;
    });
  }
  // saved_auxv is an array of {key, value}: its AT_EXECFN value is bprm->exec, the filename
  // copied just above the environment, i.e. the same number as env_end. A slot whose key
  // slot holds AT_EXECFN is that copy, not env_end.
  c.filter("mm_struct.env_end", "not the AT_EXECFN auxv entry", (o) => mm.u64(o - 8) !== AT_EXECFN);
  argsTuple(ctx, mm, (a, n) => obs.view.readUser(pgd, a, n));
}

/**
 * create_elf_tables(): arg_start < arg_end == env_start < env_end, the arguments are printable
 * strings ending in NUL. The four are declared in this order in mm_struct (since 2.6), which
 * is what tells arg_end from env_start: they always hold the same value.
 */
function argsTuple(ctx: RuleContext, mm: Obj, readUser: (a: bigint, n: number) => Buffer | undefined): void {
  const c = ctx.cands;
  const keys = ["mm_struct.arg_start", "mm_struct.arg_end", "mm_struct.env_start", "mm_struct.env_end"];
  const sets = keys.map((k) => c.get(k));
  if (sets[1]!.length * sets[2]!.length > MAX_JOINT || sets[0]!.length * sets[3]!.length > MAX_JOINT) return;
  const printable = new Map<string, boolean>();
  const argsOk = (a: bigint, b: bigint) => {
    const key = `${a}:${b}`;
    let ok = printable.get(key);
    if (ok === undefined) {
      const bytes = b - a <= BigInt(MAX_ARGS) ? readUser(a, Number(b - a)) : undefined;
      // Arguments may be UTF-8 or any bytes but controls (the test guest runs `wl-café`).
      ok = bytes?.every((x) => x === 0 || (x >= 0x20 && x !== 0x7f)) === true;
      printable.set(key, ok);
    }
    return ok;
  };
  const keep = keys.map(() => new Set<number>());
  // The equal pair first: it is what narrows the search.
  for (const a1 of sets[1]!)
    for (const e0 of sets[2]!) {
      if (!(a1 < e0 && mm.u64(a1) === mm.u64(e0))) continue;
      const mid = mm.u64(a1);
      for (const a0 of sets[0]!)
        for (const e1 of sets[3]!) {
          if (!(a0 < a1 && e0 < e1)) continue;
          const [va0, ve1] = [mm.u64(a0), mm.u64(e1)];
          if (!(va0 < mid && mid < ve1 && ve1 - va0 <= BigInt(MAX_ARGS))) continue;
          if (!argsOk(va0, mid)) continue;
          [a0, a1, e0, e1].forEach((o, i) => keep[i]!.add(o));
        }
    }
  keys.forEach((k, i) =>
    c.replace(
      k,
      "arg/env strings in order",
      sets[i]!.filter((o) => keep[i]!.has(o)),
    ),
  );
}

/** [start, end) holds present user code and nothing else that is present. */
function userCode(view: GuestView, pgd: bigint, start: bigint, end: bigint): boolean {
  if (!(start < end)) return false;
  const runs = view.userRuns(pgd, start, end);
  if (!runs || runs.length === 0) return false;
  return runs.every((r) => r.user && r.executable && !r.writable);
}
