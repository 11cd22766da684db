import assert from "node:assert/strict";
import { test } from "node:test";
import {
  type ProcessNode,
  type TreeTask,
  ancestorsLast,
  buildProcessTree,
  flattenProcessTree,
} from "../../src/os/linux/pstree.js";
import { listTasks } from "../../src/os/linux/tasks.js";
import { CraftedKernel, CraftedTasks, PF_KTHREAD } from "../support/crafted-kernel.js";

const p = (pid: number, ppid: number, tgid = pid): TreeTask => ({ pid, tgid, ppid });

/** "pid(child child ...)" with children in tree order. */
function shape(nodes: readonly ProcessNode<TreeTask>[]): string {
  return nodes
    .map((n) => (n.children.length ? `${n.task.pid}(${shape(n.children)})` : `${n.task.pid}`))
    .join(" ");
}

test("pstree: children under their parent's tgid, sorted by pid, orphans as roots", () => {
  const tasks = [p(300, 1), p(1, 0), p(2, 0), p(50, 2), p(7, 2), p(100, 1), p(200, 100), p(999, 4242)];
  assert.equal(shape(buildProcessTree(tasks)), "1(100(200) 300) 2(7 50) 999");
});

test("pstree: threads hang under their process when listed with it", () => {
  const tasks = [p(1, 0), p(10, 1), p(11, 1, 10), p(12, 1, 10)];
  // A thread's ppid is its process's parent (CLONE_THREAD), so threads sit beside their leader.
  assert.equal(shape(buildProcessTree(tasks)), "1(10 11 12)");
});

test("pstree: a parent cycle is cut at its lowest pid instead of losing processes", () => {
  const tasks = [p(1, 0), p(5, 6), p(6, 7), p(7, 5), p(8, 6), p(9, 9)];
  const roots = buildProcessTree(tasks);
  assert.equal(shape(roots), "1 5(7(6(8))) 9");
});

test("pstree: flattened rows carry depth and last-child flags for drawing", () => {
  const rows = flattenProcessTree(buildProcessTree([p(1, 0), p(2, 1), p(3, 2), p(4, 1), p(5, 0)]));
  assert.deepEqual(
    rows.map((r) => [r.task.pid, r.depth, r.last, ancestorsLast(r), r.parent?.task.pid]),
    [
      [1, 0, false, [], undefined],
      [2, 1, false, [], 1],
      [3, 2, true, [false], 2],
      [4, 1, true, [], 1],
      [5, 0, true, [], undefined],
    ],
  );
});

test("pstree: a deep chain neither recurses nor overflows", () => {
  const n = 200_000;
  const tasks = Array.from({ length: n }, (_, i) => p(i + 1, i));
  const rows = flattenProcessTree(buildProcessTree(tasks));
  assert.equal(rows.length, n);
  assert.equal(rows[n - 1]!.depth, n - 1);
});

test("pstree from listTasks of a crafted kernel", () => {
  const ck = new CraftedKernel();
  const t = new CraftedTasks(ck);
  const init = t.addTask({ pid: 1, comm: "init" });
  const kthreadd = t.addTask({ pid: 2, comm: "kthreadd", flags: PF_KTHREAD });
  t.addTask({ pid: 3, comm: "ksoftirqd/0", flags: PF_KTHREAD, parent: kthreadd });
  const sh = t.addTask({ pid: 40, comm: "sh", parent: init });
  t.addTask({ pid: 41, comm: "sleep", parent: sh });
  t.addTask({ pid: 30, comm: "getty", parent: init });
  const tree = buildProcessTree(listTasks(ck.context()));
  assert.equal(shape(tree), "1(30 40(41)) 2(3)");
  assert.equal(tree[0]!.children[1]!.task.name, "sh");
});
