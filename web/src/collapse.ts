// What the graph draws: the run's tasks with large fan-outs folded into groups, so the
// layout library lays out a small graph. Two folds, each skipped for the groups the
// reader opened:
//  1. siblings: tasks with the same upstream and the same downstream tasks (the items of
//     a hand-written fan-out) become one group;
//  2. depth: if more than LIMIT nodes are still left, the nodes at the same depth
//     (longest path from a first task) become one group per depth (the tasks of an
//     opened sibling group and the exit task excepted).
// The folds work on node positions (numbers), not names: a 5,000-task graph with 10,000
// edges is folded in a few milliseconds.
import type { Dag, DagNode } from "./dag";

/** Siblings fold into a group from this many on. */
export const SIBLINGS = 5;
/** Above this many nodes after the sibling fold, nodes are folded by depth. */
export const LIMIT = 150;

export interface ViewNode {
  id: string;
  name: string;
  state: string;
  items: number | null;
  itemStates: Record<string, number>;
  onExit: boolean;
  /** The tasks a group holds; null for a task. */
  members: string[] | null;
}

export interface View {
  nodes: ViewNode[];
  edges: [string, string][];
  /** Groups that could fold here but were opened by the reader. */
  opened: string[];
}

/** Units and the edges between them, as positions in `units`. */
interface Graph {
  units: ViewNode[];
  from: number[];
  to: number[];
}

const ORDER = ["Failed", "TimedOut", "Running", "Waiting", "Pending"];

/** A group's state: the most pressing of its members' (as the server does for a fan-out). */
export function groupState(states: Record<string, number>): string {
  for (const state of ORDER) if (states[state]) return state;
  const seen = Object.keys(states).filter((s) => states[s] > 0);
  if (seen.length && seen.every((s) => s === "Succeeded" || s === "Skipped")) return "Succeeded";
  if (!seen.length || states.Planned) return "Planned";
  return seen[0];
}

function counts(members: ViewNode[]): Record<string, number> {
  const states: Record<string, number> = {};
  for (const m of members) {
    if (m.items !== null) {
      for (const [s, n] of Object.entries(m.itemStates)) states[s] = (states[s] ?? 0) + n;
    } else {
      states[m.state] = (states[m.state] ?? 0) + 1;
    }
  }
  return states;
}

function group(id: string, name: string, members: ViewNode[]): ViewNode {
  const states = counts(members);
  return {
    id,
    name,
    state: groupState(states),
    items: members.length,
    itemStates: states,
    onExit: false,
    members: members.reduce<string[]>((all, m) => {
      if (m.members) for (const id of m.members) all.push(id);
      else all.push(m.id);
      return all;
    }, []),
  };
}

/** Replace units by groups: `into[i]` is the group of unit i (-1: none). */
function fold(graph: Graph, groups: ViewNode[], into: Int32Array): Graph {
  const units: ViewNode[] = [];
  const at = new Int32Array(graph.units.length);
  const placed = new Int32Array(groups.length).fill(-1);
  graph.units.forEach((u, i) => {
    const g = into[i];
    if (g < 0) {
      at[i] = units.length;
      units.push(u);
    } else {
      if (placed[g] < 0) {
        placed[g] = units.length;
        units.push(groups[g]);
      }
      at[i] = placed[g];
    }
  });
  const seen = new Set<number>();
  const from: number[] = [];
  const to: number[] = [];
  for (let e = 0; e < graph.from.length; e++) {
    const a = at[graph.from[e]];
    const b = at[graph.to[e]];
    const key = a * units.length + b;
    if (a === b || seen.has(key)) continue;
    seen.add(key);
    from.push(a);
    to.push(b);
  }
  return { units, from, to };
}

function neighbours(graph: Graph): { up: number[][]; down: number[][] } {
  const up: number[][] = graph.units.map(() => []);
  const down: number[][] = graph.units.map(() => []);
  for (let e = 0; e < graph.from.length; e++) {
    up[graph.to[e]].push(graph.from[e]);
    down[graph.from[e]].push(graph.to[e]);
  }
  return { up, down };
}

const byNumber = (a: number, b: number) => a - b;

function bySiblings(graph: Graph, open: Set<string>, opened: string[], shown: Set<string>): Graph {
  const { up, down } = neighbours(graph);
  // Siblings share their first upstream and first downstream unit: bucket by those two
  // numbers, and compare whole neighbour lists only within buckets large enough to fold.
  const n = graph.units.length + 1;
  const buckets = new Map<number, number[]>();
  for (let i = 0; i < graph.units.length; i++) {
    if (graph.units[i].onExit) continue;
    const key = (Math.min(...up[i], n - 1) + 1) * (n + 1) + Math.min(...down[i], n - 1) + 1;
    const bucket = buckets.get(key);
    if (bucket) bucket.push(i);
    else buckets.set(key, [i]);
  }
  const classes = new Map<string, number[]>();
  for (const bucket of buckets.values()) {
    if (bucket.length < SIBLINGS) continue;
    for (const i of bucket) {
      const key = up[i].sort(byNumber).join(",") + "|" + down[i].sort(byNumber).join(",");
      const members = classes.get(key);
      if (members) members.push(i);
      else classes.set(key, [i]);
    }
  }
  const groups: ViewNode[] = [];
  const into = new Int32Array(graph.units.length).fill(-1);
  for (const members of classes.values()) {
    if (members.length < SIBLINGS) continue;
    const first = graph.units[members[0]];
    const id = `siblings:${first.id}`;
    if (open.has(id)) {
      opened.push(id);
      for (const m of members) shown.add(graph.units[m].id);
      continue;
    }
    const units = members.map((m) => graph.units[m]);
    for (const m of members) into[m] = groups.length;
    groups.push(group(id, `${first.id} and ${members.length - 1} like it`, units));
  }
  return groups.length ? fold(graph, groups, into) : graph;
}

/** Each unit's depth: the longest path to it from a unit without upstream units. */
function depthsOf(graph: Graph): Int32Array {
  const { down } = neighbours(graph);
  const waiting = new Int32Array(graph.units.length);
  for (const b of graph.to) waiting[b]++;
  const depth = new Int32Array(graph.units.length);
  const ready: number[] = [];
  for (let i = 0; i < graph.units.length; i++) if (waiting[i] === 0) ready.push(i);
  while (ready.length) {
    const i = ready.pop()!;
    for (const next of down[i]) {
      depth[next] = Math.max(depth[next], depth[i] + 1);
      if (--waiting[next] === 0) ready.push(next);
    }
  }
  // A unit on a cycle (a definition the operator would refuse) keeps the depth it reached.
  return depth;
}

function byDepth(graph: Graph, open: Set<string>, opened: string[], shown: Set<string>): Graph {
  const depth = depthsOf(graph);
  const levels = new Map<number, number[]>();
  graph.units.forEach((u, i) => {
    if (u.onExit || shown.has(u.id)) return;
    const level = levels.get(depth[i]);
    if (level) level.push(i);
    else levels.set(depth[i], [i]);
  });
  const groups: ViewNode[] = [];
  const into = new Int32Array(graph.units.length).fill(-1);
  for (const [d, members] of levels) {
    if (members.length < 2) continue;
    const id = `depth:${d}`;
    if (open.has(id)) {
      opened.push(id);
      continue;
    }
    for (const m of members) into[m] = groups.length;
    groups.push(group(id, `depth ${d}`, members.map((m) => graph.units[m])));
  }
  return groups.length ? fold(graph, groups, into) : graph;
}

function task(node: DagNode): ViewNode {
  return {
    id: node.id,
    name: node.id,
    state: node.state,
    items: node.items ?? null,
    itemStates: node.itemStates ?? {},
    onExit: node.onExit ?? false,
    members: null,
  };
}

export function collapse(dag: Dag, open: Set<string>, limit: number = LIMIT): View {
  const opened: string[] = [];
  const n = dag.nodes.length;
  const edges = dag.edges.filter(
    ([a, b]) => Number.isInteger(a) && Number.isInteger(b) && a >= 0 && b >= 0 && a < n && b < n,
  );
  let graph: Graph = {
    units: dag.nodes.map(task),
    from: edges.map(([a]) => a),
    to: edges.map(([, b]) => b),
  };
  // The members of an opened sibling group stay open when the rest is folded by depth.
  const shown = new Set<string>();
  graph = bySiblings(graph, open, opened, shown);
  if (graph.units.length > limit) graph = byDepth(graph, open, opened, shown);
  return {
    nodes: graph.units,
    edges: graph.from.map((a, e) => [graph.units[a].id, graph.units[graph.to[e]].id]),
    opened,
  };
}
