/**
 * Module load/unload from watchpoints:
 *   - the `modules` list head's `next`: add_unformed_module() puts every new module first, so a
 *     write there announces a module (still unformed: no event yet, but its `state` gets a watch);
 *   - each module's `state`: COMING -> LIVE when its init has run (load), LIVE -> GOING when
 *     delete_module() commits to unloading it (unload). A module that goes from COMING to GOING
 *     (its init failed) was never loaded and is not reported.
 * An insmod costs about four stops, an rmmod one; nothing else in the guest stops.
 */
import { type ModuleRow, listModules } from "../os/linux/modules.js";
import { listForEachEntry, readFixedString } from "../os/linux/walk.js";
import { va } from "../util/address.js";
import type { EventEngine, Trap } from "./engine.js";
import type { LinuxGuest } from "./linux-guest.js";

export interface ModuleLoad {
  readonly type: "load";
  readonly name: string;
  readonly base: bigint;
  readonly size: number;
  /** The struct module. */
  readonly module: bigint;
}

export interface ModuleUnload {
  readonly type: "unload";
  readonly name: string;
  readonly base: bigint;
  readonly size: number;
  readonly module: bigint;
}

export type ModuleEvent = ModuleLoad | ModuleUnload;

const MAX_MODULES = 1 << 16;

export async function traceModules(
  engine: EventEngine,
  guest: LinuxGuest,
  emit: (e: ModuleEvent) => void,
): Promise<{ readonly traps: () => readonly Trap[] }> {
  const k = guest.k;
  const L = k.layout;
  const head = k.symbols.getAddress("modules");
  const stateOff = BigInt(L.offsetof("module", "state"));
  const nameOff = BigInt(L.offsetof("module", "name"));
  const nameLen = L.memberSize("module", "name") ?? 56;
  const LIVE = Number(L.findEnumValue("MODULE_STATE_LIVE") ?? 0n);
  const GOING = Number(L.findEnumValue("MODULE_STATE_GOING") ?? 2n);
  /** struct module -> its state watch and, once loaded, what was reported. */
  const known = new Map<bigint, { trap: Trap | undefined; row: ModuleRow | undefined }>();
  const traps: Trap[] = [];

  const rowOf = (mod: bigint): ModuleRow | undefined => {
    const row = listModules(k).find((r) => r.addr === mod);
    return row && { ...row, size: coreSize(guest, mod) ?? row.size };
  };
  const nameOf = (mod: bigint) => readFixedString(k.kernel.read(va(mod + nameOff), nameLen), 0, nameLen);

  const onState = (mod: bigint) => {
    const entry = known.get(mod);
    if (!entry) return "remove" as const;
    const state = k.kernel.readU32(va(mod + stateOff));
    if (state === LIVE && !entry.row) {
      const row = rowOf(mod);
      if (!row) return undefined;
      entry.row = row;
      emit({ type: "load", name: row.name, base: row.base, size: row.size, module: mod });
    } else if (state === GOING) {
      known.delete(mod);
      if (entry.row) {
        const { name, base, size } = entry.row;
        emit({ type: "unload", name: name || nameOf(mod), base, size, module: mod });
      }
      return "remove" as const; // its memory is about to be freed
    }
    return undefined;
  };

  const follow = async (mod: bigint, row: ModuleRow | undefined) => {
    const entry: { trap: Trap | undefined; row: ModuleRow | undefined } = { trap: undefined, row };
    known.set(mod, entry);
    entry.trap = await engine.watch(mod + stateOff, () => onState(mod), { kind: "write", length: 4 });
    traps.push(entry.trap);
  };

  for (const row of listModules(k)) await follow(row.addr, row.state === "Live" ? row : undefined);

  const listTrap = await engine.watch(
    head,
    async () => {
      for (const mod of listForEachEntry(k, va(head), "module", "list", { max: MAX_MODULES })) {
        if (!known.has(mod)) await follow(mod, undefined);
      }
      return undefined;
    },
    { kind: "write", length: 8 },
  );
  traps.push(listTrap);
  return { traps: () => traps.filter((t) => engine.traps().includes(t)) };
}

/**
 * The size /proc/modules shows once init memory is freed, which do_init_module() does right
 * after setting LIVE (our stop comes in between): 6.4+ the non-init `mem[]` regions (MOD_TEXT
 * up to MOD_INIT_TEXT), 6.1 `core_layout` (+ `data_layout`).
 */
function coreSize(guest: LinuxGuest, mod: bigint): number | undefined {
  const L = guest.k.layout;
  const read = (off: number) => guest.k.kernel.readU32(va(mod + BigInt(off)));
  const mem = L.findOffset("module", "mem");
  const firstInit = L.findEnumValue("MOD_INIT_TEXT");
  if (mem !== undefined && firstInit !== undefined) {
    const stride = L.sizeof("module_memory");
    const size = L.offsetof("module_memory", "size");
    let total = 0;
    for (let i = 0; i < Number(firstInit); i++) total += read(mem + i * stride + size);
    return total;
  }
  const core = L.findOffset("module", "core_layout");
  if (core === undefined) return undefined;
  const size = L.offsetof("module_layout", "size");
  const data = L.findOffset("module", "data_layout");
  return read(core + size) + (data === undefined ? 0 : read(data + size));
}
