import assert from "node:assert/strict";
import { test } from "node:test";
import { ORIGINAL_STATE_RULES, taskStateLetter } from "../../src/os/linux/task-state.js";

/**
 * Expected letters worked out by hand from include/linux/sched.h (bit values, identical in
 * 6.1 and 6.12) and __task_state_index(): report = (state | exit_state) & 0x7f, TASK_IDLE
 * (0x402) -> 0x80, TASK_RTLOCK_WAIT (0x1000) or TASK_FROZEN (0x8000) -> 0x2, letter =
 * "RSDTtXZPI"[fls(report)].
 */
const cases: [name: string, state: number, exit: number, current: string, original: string][] = [
  ["TASK_RUNNING", 0x0, 0, "R", "R"],
  ["TASK_INTERRUPTIBLE", 0x1, 0, "S", "S"],
  ["TASK_UNINTERRUPTIBLE", 0x2, 0, "D", "D"],
  ["TASK_KILLABLE (WAKEKILL|UNINTERRUPTIBLE)", 0x102, 0, "D", "D"],
  ["__TASK_STOPPED", 0x4, 0, "T", "T"],
  ["TASK_STOPPED (WAKEKILL|__TASK_STOPPED)", 0x104, 0, "T", "T"],
  ["__TASK_TRACED", 0x8, 0, "t", "t"],
  ["TASK_PARKED", 0x40, 0, "P", "P"],
  ["TASK_IDLE", 0x402, 0, "I", "I"],
  ["TASK_IDLE | TASK_FREEZABLE", 0x2402, 0, "I", "D"],
  ["TASK_NOLOAD alone", 0x400, 0, "R", "R"],
  ["TASK_WAKING", 0x200, 0, "R", "R"],
  ["TASK_NEW", 0x800, 0, "R", "R"],
  ["TASK_INTERRUPTIBLE | TASK_FREEZABLE", 0x2001, 0, "S", "S"],
  ["TASK_RTLOCK_WAIT", 0x1000, 0, "D", "D"],
  ["TASK_RTLOCK_WAIT | TASK_FREEZABLE", 0x3000, 0, "D", "R"],
  ["TASK_FROZEN", 0x8000, 0, "D", "R"],
  ["TASK_DEAD with EXIT_ZOMBIE", 0x80, 0x20, "Z", "Z"],
  ["TASK_DEAD with EXIT_DEAD", 0x80, 0x10, "X", "X"],
  ["EXIT_TRACE (ZOMBIE|DEAD)", 0x80, 0x30, "Z", "Z"],
  ["running with EXIT_ZOMBIE", 0x0, 0x20, "Z", "Z"],
  ["interruptible and stopped", 0x5, 0, "T", "T"],
  ["high garbage bits", 0xffff0000, 0, "R", "R"],
];

for (const [name, state, exit, current, original] of cases) {
  test(`state letter: ${name} (${state.toString(16)}/${exit.toString(16)})`, () => {
    assert.equal(taskStateLetter(state, exit), current);
    assert.equal(taskStateLetter(state, exit, ORIGINAL_STATE_RULES), original);
  });
}

test("state letter: an all-ones state word still yields a letter (idle wins, then rtlock)", () => {
  assert.equal(taskStateLetter(0xffffffff, 0), "D");
  assert.equal(taskStateLetter(-1, -1, ORIGINAL_STATE_RULES), "P");
});
