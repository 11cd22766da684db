import assert from "node:assert/strict";
import { test } from "node:test";
import { controlRegistersOf, parseControlRegisters } from "../../src/qemu/hmp-registers.js";

/** QEMU 7.2's `info registers` for a 6.1 guest's vCPU 0 under TCG, as human-monitor-command returns it. */
const INFO_REGISTERS = `
CPU#0
RAX=000000000001ad40 RBX=0000000000000000 RCX=ffffd42bc05e3cb8 RDX=4000000000000000
RIP=ffffffffb3a4e8cb RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]
GDT=     fffffe0000001000 0000007f
CR0=80050033 CR2=00000000005794a9 CR3=0000000002832000 CR4=000006f0
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 
DR6=00000000ffff0ff0 DR7=0000000000000400
EFER=0000000000000d01
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80
`;

test("info registers gives CR0, CR3, CR4 and EFER, and not CR2 or DR0 for them", () => {
  assert.deepEqual(parseControlRegisters(INFO_REGISTERS), {
    cr0: 0x80050033n,
    cr3: 0x2832000n,
    cr4: 0x6f0n,
    efer: 0xd01n,
  });
});

test("text without all four (another architecture, an error message) gives undefined", () => {
  assert.equal(parseControlRegisters(INFO_REGISTERS.replace(/EFER=\S+/, "")), undefined);
  assert.equal(parseControlRegisters("unknown cpu index"), undefined);
  assert.equal(parseControlRegisters(""), undefined);
});

test("a full register map gives the same four", () => {
  const regs = new Map([
    ["cr0", 0x80050033n],
    ["cr3", 0x2832000n],
    ["cr4", 0x6f0n],
    ["efer", 0xd01n],
    ["rip", 1n],
  ]);
  assert.deepEqual(controlRegistersOf(regs), parseControlRegisters(INFO_REGISTERS));
});
