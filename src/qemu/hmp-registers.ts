/**
 * The control registers of one vCPU from HMP's `info registers` text (QEMU's
 * x86_cpu_dump_state: `CR0=80050033 … CR3=… CR4=…` and `EFER=…`, unchanged for many releases).
 * Finding the kernel needs only these four, and one QMP command gets them, where the gdbstub
 * needs a connection, a stop and a full register read: a listing need not touch the gdbstub.
 */
export interface ControlRegisters {
  readonly cr0: bigint;
  readonly cr3: bigint;
  readonly cr4: bigint;
  readonly efer: bigint;
}

/** undefined when the text lacks any of the four (another architecture, or another format). */
export function parseControlRegisters(text: string): ControlRegisters | undefined {
  const value = (name: string): bigint | undefined => {
    const m = new RegExp(`(?:^|\\s)${name}=([0-9a-fA-F]{1,16})(?=\\s|$)`, "m").exec(text);
    return m ? BigInt(`0x${m[1]}`) : undefined;
  };
  const cr0 = value("CR0");
  const cr3 = value("CR3");
  const cr4 = value("CR4");
  const efer = value("EFER");
  if (cr0 === undefined || cr3 === undefined || cr4 === undefined || efer === undefined) return undefined;
  return { cr0, cr3, cr4, efer };
}

/** The four from a full register map (the gdbstub's, or an ELF dump's CPU notes); absent ones read 0. */
export function controlRegistersOf(regs: ReadonlyMap<string, bigint>): ControlRegisters {
  const get = (n: string) => regs.get(n) ?? 0n;
  return { cr0: get("cr0"), cr3: get("cr3"), cr4: get("cr4"), efer: get("efer") };
}
