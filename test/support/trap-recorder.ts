import type { RawTrap, TrapRecorder } from "../../src/qemu/traps.js";

/** A watchdog stand-in that writes what the trap core reports into the test's packet log. */
export class Recorder implements TrapRecorder {
  constructor(private readonly log: string[]) {}
  async add(t: RawTrap) {
    this.log.push(`rec+${t.type},${t.addr.toString(16)}`);
  }
  async remove(t: RawTrap) {
    this.log.push(`rec-${t.type},${t.addr.toString(16)}`);
  }
  async goodbye() {
    this.log.push("bye");
  }
}
