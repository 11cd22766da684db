/**
 * The process tree (`pstree`), built from a task listing. Renderers draw it; this only
 * decides the shape. Parent links come from guest memory, so a cycle is possible: it is
 * broken at its lowest pid, which becomes a root, rather than dropping those processes.
 */
export interface TreeTask {
  readonly pid: number;
  readonly tgid: number;
  readonly ppid: number;
}

export interface ProcessNode<T extends TreeTask> {
  readonly task: T;
  /** Sorted by pid. */
  readonly children: ProcessNode<T>[];
}

/** One line of a drawn tree. */
export interface TreeRow<T extends TreeTask> {
  readonly task: T;
  readonly depth: number;
  /** Whether this node is its parent's last child (└─ rather than ├─). */
  readonly last: boolean;
  /** The row of the parent; undefined for a root. */
  readonly parent: TreeRow<T> | undefined;
}

const byPid = <T extends TreeTask>(a: ProcessNode<T>, b: ProcessNode<T>) => a.task.pid - b.task.pid;

/**
 * Roots (sorted by pid) of the forest the tasks form through ppid. A task whose parent is not
 * in `tasks` (ppid 0: init and kthreadd; or a parent that was not listed) is a root. Threads
 * hang under their process when `tasks` holds thread-group leaders (ppid is a tgid).
 */
export function buildProcessTree<T extends TreeTask>(tasks: readonly T[]): ProcessNode<T>[] {
  const nodes = tasks.map((task) => ({ task, children: [] as ProcessNode<T>[] }));
  const leaders = new Map<number, ProcessNode<T>>();
  for (const n of nodes)
    if (n.task.pid === n.task.tgid && !leaders.has(n.task.pid)) leaders.set(n.task.pid, n);
  const parentOf = new Map<ProcessNode<T>, ProcessNode<T>>();
  for (const n of nodes) {
    const p = n.task.ppid === 0 ? undefined : leaders.get(n.task.ppid);
    if (p && p !== n) parentOf.set(n, p);
  }
  const roots = nodes.filter((n) => !parentOf.has(n));
  for (const [child, parent] of parentOf) parent.children.push(child);
  breakCycles(nodes, roots, parentOf);
  for (const n of nodes) n.children.sort(byPid);
  return roots.sort(byPid);
}

/** Nodes unreachable from a root sit on a parent cycle: cut each cycle at its lowest pid. */
function breakCycles<T extends TreeTask>(
  nodes: ProcessNode<T>[],
  roots: ProcessNode<T>[],
  parentOf: Map<ProcessNode<T>, ProcessNode<T>>,
): void {
  const seen = new Set<ProcessNode<T>>();
  const mark = (from: ProcessNode<T>) => {
    const stack = [from];
    while (stack.length > 0) {
      const n = stack.pop()!;
      if (seen.has(n)) continue;
      seen.add(n);
      stack.push(...n.children);
    }
  };
  roots.forEach(mark);
  for (const n of [...nodes].sort(byPid)) {
    if (seen.has(n)) continue;
    // Climb until a node repeats: the nodes from its first visit on form the cycle.
    const path: ProcessNode<T>[] = [];
    const onPath = new Set<ProcessNode<T>>();
    let cur: ProcessNode<T> | undefined = n;
    while (cur && !onPath.has(cur)) {
      path.push(cur);
      onPath.add(cur);
      cur = parentOf.get(cur);
    }
    if (!cur) continue; // unreachable only through a cycle cut meanwhile
    const cut = path.slice(path.indexOf(cur)).sort(byPid)[0]!;
    const parent = parentOf.get(cut)!;
    parent.children.splice(parent.children.indexOf(cut), 1);
    parentOf.delete(cut);
    roots.push(cut);
    mark(cut);
  }
}

/**
 * Depth-first rows for drawing, iterative so a deep (or hostile) chain cannot overflow the
 * stack. Rows link to their parent row rather than copying their ancestry, which would cost
 * memory quadratic in the depth.
 */
export function flattenProcessTree<T extends TreeTask>(roots: readonly ProcessNode<T>[]): TreeRow<T>[] {
  const rows: TreeRow<T>[] = [];
  type Item = { node: ProcessNode<T>; depth: number; last: boolean; parent: TreeRow<T> | undefined };
  const push = (
    stack: Item[],
    nodes: readonly ProcessNode<T>[],
    depth: number,
    parent: TreeRow<T> | undefined,
  ) => {
    for (let i = nodes.length - 1; i >= 0; i--)
      stack.push({ node: nodes[i]!, depth, last: i === nodes.length - 1, parent });
  };
  const stack: Item[] = [];
  push(stack, roots, 0, undefined);
  while (stack.length > 0) {
    const { node, depth, last, parent } = stack.pop()!;
    const row = { task: node.task, depth, last, parent };
    rows.push(row);
    push(stack, node.children, depth + 1, row);
  }
  return rows;
}

/**
 * For levels 1..depth-1 of a row, whether the ancestor at that level was a last child: a
 * renderer draws "│ " where it was not and "  " where it was.
 */
export function ancestorsLast<T extends TreeTask>(row: TreeRow<T>): boolean[] {
  const out: boolean[] = [];
  for (let r = row.parent; r && r.depth > 0; r = r.parent) out.push(r.last);
  return out.reverse();
}
