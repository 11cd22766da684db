import type { GuestView, Observation } from "../types.js";
import {
  MAX_JOINT,
  MAX_JOINT_WALKS,
  MAX_MODULES,
  MODULES_END,
  MODULES_START,
  MODULE_FROM,
  MODULE_NAME_LEN,
  MODULE_STATE_LIVE,
  MODULE_STATE_UNFORMED,
  MODULE_TO,
  PAGE,
} from "./abi.js";
import type { RuleContext } from "./context.js";
import { keepAgreeing } from "./joint.js";
import { Obj, codeRange, isNameString, readWindow, ringNodes } from "./reader.js";

/** struct module begins with `enum module_state state`, then `struct list_head list`. */
const LIST_OFFSET = 8n;

interface ModuleSeen {
  /**
   * The task that was current when the module was added to the list (the loader), as it was
   * then: its pid is read from these bytes once `pid` is known, which may be later.
   */
  readonly loader: Obj;
  readonly addedAt: number;
}

/** A page-aligned address in the module area: where a module's region starts. */
const isRegionBase = (v: bigint) => v % PAGE === 0n && v >= MODULES_START && v < MODULES_END;

/**
 * Whether a text size at `size` and a base at `base` sit in struct module the way every 6.x
 * kernel declares them, in module `m` (at `mod`):
 *   - up to 6.3, struct module_layout { void *base; unsigned int size, text_size, ro_size,
 *     ro_after_init_size; struct mod_tree_node mtn; }: base 12 bytes before text_size, and the
 *     regions nest (text within ro within ro_after_init within the whole), so
 *     text_size <= ro_size <= ro_after_init_size <= size;
 *   - from 6.4, struct module_memory { void *base; unsigned int size; struct mod_tree_node mtn; },
 *     one per region type: base 8 bytes before the size.
 * Either way mod_tree_insert() points mtn.mod back at the module, right after listing it.
 */
export function layoutShape(m: Obj, mod: bigint, size: number, base: number): boolean {
  if (!isRegionBase(m.u64(base))) return false;
  if (base === size - 12) {
    const [whole, text, ro, roAfterInit] = [-4, 0, 4, 8].map((d) => m.u32(size + d)) as [
      number,
      number,
      number,
      number,
    ];
    return text <= ro && ro <= roAfterInit && roAfterInit <= whole && m.u64(size + 12) === mod;
  }
  return base === size - 8 && m.u64(size + 8) === mod;
}

/**
 * Module members, relative to the `list` node as in the patent (step b4: the newest module is
 * the head's `next`). At the moment a module joins the list (add_unformed_module) it is
 * MODULE_STATE_UNFORMED; once the process that loaded it is gone, finit_module() has returned,
 * so the module is LIVE and its core text is mapped executable: base page-aligned in the module
 * area, [base, base+text_size) executable and the page after it not.
 */
export class ModuleRules {
  private readonly modules = new Map<bigint, ModuleSeen>();
  /** A module has been seen loaded and live (its text rules applied). */
  private settledSeen = false;
  /** The layout-shape rule has been applied (and left only shaped sizes). */
  private shaped = false;

  constructor(private readonly ctx: RuleContext) {}

  observe(obs: Observation, cur: Obj, tasks: Obj[] | undefined): void {
    const c = this.ctx.cands;
    // At a module event list_add_rcu() has just set head->next; the old first's prev is written
    // next, so the ring is checked forwards only.
    const nodes = ringNodes(obs.view, this.ctx.facts.modulesHead, MAX_MODULES, false);
    if (!nodes) return;
    const pidOff = c.one("task_struct.pid");
    // Only a node never seen before was just added (a failed load's removal also writes the head).
    const added = obs.kind === "module" && nodes.length > 0 && !this.modules.has(nodes[0]!);
    if (added) this.modules.set(nodes[0]!, { loader: cur, addedAt: obs.index });
    const mods = nodes.map((n) => ({ node: n, obj: readModule(obs.view, n) }));
    const present = mods.filter((m): m is { node: bigint; obj: Obj } => m.obj !== undefined);
    if (present.length === 0) return;
    const newest = added ? present.find((m) => m.node === nodes[0]) : undefined;
    const alive = new Set(tasks?.map((t) => `${t.addr}:${pidOff === undefined ? "" : t.u32(pidOff)}`) ?? []);
    const settled = present.filter((m) => {
      const seen = this.modules.get(m.node);
      if (!seen || !tasks || pidOff === undefined) return false;
      return seen.addedAt < obs.index && !alive.has(`${seen.loader.addr}:${seen.loader.u32(pidOff)}`);
    });

    c.filter("module.state", "a module_state value", (o) =>
      present.every((m) => m.obj.u32(o) >= 0 && m.obj.u32(o) <= MODULE_STATE_UNFORMED),
    );
    if (newest)
      c.filter("module.state", "UNFORMED when listed", (o) => newest.obj.u32(o) === MODULE_STATE_UNFORMED);
    if (settled.length > 0)
      c.filter("module.state", "LIVE once loaded", (o) =>
        settled.every((m) => m.obj.u32(o) === MODULE_STATE_LIVE),
      );

    c.filter("module.name", "printable NUL-terminated name", (o) =>
      present.every((m) => isNameString(m.obj.slice(o, MODULE_NAME_LEN), MODULE_NAME_LEN)),
    );
    // The struct is the .ko's __this_module, whose static initializer `.name = KBUILD_MODNAME`
    // pads the array with zeros: a string seen from inside the array, or in another member,
    // has something else within its 56 bytes after the NUL.
    c.filter("module.name", "zero-padded to MODULE_NAME_LEN", (o) =>
      present.every((m) => zeroPadded(m.obj.slice(o, MODULE_NAME_LEN))),
    );
    // add_unformed_module() refuses a second module of the same name.
    c.filter("module.name", "unique among modules", (o) => {
      const names = present.map((m) => m.obj.str(o, MODULE_NAME_LEN));
      return new Set(names).size === names.length;
    });
    this.ctx.innermostString("module.name", MODULE_NAME_LEN);

    c.filter("module.core_base", "page-aligned in the module area", (o) =>
      present.every((m) => {
        const v = m.obj.u64(o);
        return v % PAGE === 0n && v >= MODULES_START && v < MODULES_END;
      }),
    );
    c.filter("module.core_text_size", "a whole number of pages", (o) =>
      present.every((m) => {
        const v = m.obj.u32(o);
        return v > 0 && v % 4096 === 0 && v < 1 << 26;
      }),
    );
    // At its own event a module is not in the module tree yet (mtn.mod is set just after).
    this.layoutRule(present.filter((m) => m !== newest));
    if (settled.length === 0) return;
    this.settledSeen = true;
    const exec = (a: bigint) => obs.view.kernelPage(a)?.executable === true;
    const notExec = (a: bigint) => !exec(a);
    c.filter("module.core_base", "executable once loaded", (o) => settled.every((m) => exec(m.obj.u64(o))));
    const text = (s: number, b: number) =>
      settled.every((m) => {
        const base = m.obj.u64(b);
        const end = base + BigInt(m.obj.u32(s));
        return codeRange(base, end, notExec, exec) && !exec(end);
      });
    const applied = keepAgreeing(
      c,
      { key: "module.core_text_size", rule: "text is exactly the executable pages" },
      { key: "module.core_base", rule: "text is exactly the executable pages" },
      text,
      MAX_JOINT_WALKS,
    );
    if (applied)
      this.ctx.trackTwins(
        "module.core_text_size",
        settled.map((m) => m.obj),
        4,
      );
  }

  /**
   * Text size and base as a pair that fits a module layout (layoutShape), in every module in
   * the module tree. A kernel whose struct module fits neither shape leaves the rule unused
   * rather than every candidate removed.
   */
  private layoutRule(mods: readonly { node: bigint; obj: Obj }[]): void {
    if (mods.length === 0) return;
    const c = this.ctx.cands;
    const fits = (size: number, base: number) =>
      mods.every((m) => layoutShape(m.obj, m.node - LIST_OFFSET, size, base));
    const sizes = c.get("module.core_text_size");
    const bases = c.get("module.core_base");
    if (sizes.length * bases.length > MAX_JOINT) return;
    if (!sizes.some((s) => bases.some((b) => fits(s, b)))) return;
    keepAgreeing(
      c,
      { key: "module.core_text_size", rule: "a module layout's text size" },
      { key: "module.core_base", rule: "a module layout's base" },
      fits,
    );
    this.shaped = true;
    this.pairs = (s) => bases.find((b) => fits(s, b));
  }

  /** After the layout rule: the base that pairs with a size (undefined before it ran). */
  private pairs: (size: number) => number | undefined = () => undefined;

  /**
   * Every surviving size heads a region of a module layout: the core text is the first region
   * declared (core_layout before init_layout up to 6.3; mem[MOD_TEXT], MOD_TEXT = 0, from 6.4),
   * so the lowest is taken, with the base beside it.
   */
  private firstRegion(): void {
    const c = this.ctx.cands;
    const sizes = c.get("module.core_text_size");
    if (!this.shaped || sizes.length < 2) return;
    const base = this.pairs(sizes[0]!);
    if (base === undefined) return;
    const note = `${sizes.join(", ")} each head a region of the module's layout; the core text is declared first`;
    c.resolve("module.core_text_size", sizes[0]!, note);
    if (c.get("module.core_base").length > 1) c.resolve("module.core_base", base, note);
  }

  /**
   * Sizes that held the same page count in every loaded module (text, and the ro/data sizes of
   * a module with nothing else): the first after the base, as a layout keeps a region's size
   * beside its base.
   */
  resolveTwins(): void {
    this.firstRegion();
    const c = this.ctx.cands;
    const sizes = c.get("module.core_text_size");
    const base = c.one("module.core_base");
    if (
      sizes.length > 1 &&
      base !== undefined &&
      this.settledSeen &&
      !this.ctx.differed.has("module.core_text_size")
    ) {
      const after = sizes.filter((o) => o > base);
      if (after.length > 0) {
        c.resolve(
          "module.core_text_size",
          after[0]!,
          `${sizes.join(", ")} held the same page count in every loaded module; the one nearest after the text base (${base}) is taken, as a layout keeps a region's size beside its base`,
        );
      }
    }
  }
}

function zeroPadded(b: Buffer | undefined): boolean {
  const nul = b?.indexOf(0) ?? -1;
  return nul > 0 && b!.subarray(nul).every((x) => x === 0);
}

function readModule(view: GuestView, node: bigint): Obj | undefined {
  const w = readWindow(view, node, MODULE_FROM, MODULE_TO);
  return w ? Obj.of(node, w.bytes, w.base) : undefined;
}
