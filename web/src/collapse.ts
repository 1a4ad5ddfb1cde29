// What the graph draws: the run's tasks with large fan-outs folded into groups, so the
// layout library lays out a small graph. Two folds, each skipped for the groups the
// reader opened:
//  1. siblings: tasks with the same upstream and the same downstream tasks (the items of
//     a hand-written fan-out) become one group;
//  2. depth: if more than LIMIT nodes are still left, the nodes at the same depth
//     (longest path from a first task) become one group per depth (the tasks of an
//     opened sibling group and the exit task excepted).
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
    members: members.flatMap((m) => m.members ?? [m.id]),
  };
}

/** Replace units by groups: `into` maps a unit's id to its group's id. */
function fold(
  units: ViewNode[],
  edges: [string, string][],
  groups: Map<string, ViewNode>,
  into: Map<string, string>,
): [ViewNode[], [string, string][]] {
  const nodes: ViewNode[] = [];
  const placed = new Set<string>();
  for (const u of units) {
    const g = into.get(u.id);
    if (g === undefined) nodes.push(u);
    else if (!placed.has(g)) {
      placed.add(g);
      nodes.push(groups.get(g)!);
    }
  }
  const seen = new Set<string>();
  const folded: [string, string][] = [];
  for (const [a, b] of edges) {
    const from = into.get(a) ?? a;
    const to = into.get(b) ?? b;
    const key = `${from}\u0000${to}`;
    if (from === to || seen.has(key)) continue;
    seen.add(key);
    folded.push([from, to]);
  }
  return [nodes, folded];
}

function neighbours(units: ViewNode[], edges: [string, string][]) {
  const up = new Map<string, string[]>(units.map((u) => [u.id, []]));
  const down = new Map<string, string[]>(units.map((u) => [u.id, []]));
  for (const [a, b] of edges) {
    up.get(b)?.push(a);
    down.get(a)?.push(b);
  }
  return { up, down };
}

function bySiblings(
  units: ViewNode[],
  edges: [string, string][],
  open: Set<string>,
  opened: string[],
  shown: Set<string>,
): [ViewNode[], [string, string][]] {
  const { up, down } = neighbours(units, edges);
  const classes = new Map<string, ViewNode[]>();
  for (const u of units) {
    if (u.onExit) continue;
    const key = [...up.get(u.id)!].sort().join("\n") + "\u0000" + [...down.get(u.id)!].sort().join("\n");
    const members = classes.get(key);
    if (members) members.push(u);
    else classes.set(key, [u]);
  }
  const groups = new Map<string, ViewNode>();
  const into = new Map<string, string>();
  for (const members of classes.values()) {
    if (members.length < SIBLINGS) continue;
    const id = `siblings:${members[0].id}`;
    if (open.has(id)) {
      opened.push(id);
      for (const m of members) shown.add(m.id);
      continue;
    }
    groups.set(id, group(id, `${members[0].id} and ${members.length - 1} like it`, members));
    for (const m of members) into.set(m.id, id);
  }
  return fold(units, edges, groups, into);
}

/** Each unit's depth: the longest path to it from a unit without upstream units. */
export function depths(units: ViewNode[], edges: [string, string][]): Map<string, number> {
  const { up, down } = neighbours(units, edges);
  const waiting = new Map(units.map((u) => [u.id, up.get(u.id)!.length]));
  const depth = new Map<string, number>();
  const ready = units.filter((u) => waiting.get(u.id) === 0).map((u) => u.id);
  for (const id of ready) depth.set(id, 0);
  while (ready.length) {
    const id = ready.pop()!;
    for (const next of down.get(id)!) {
      depth.set(next, Math.max(depth.get(next) ?? 0, depth.get(id)! + 1));
      const left = waiting.get(next)! - 1;
      waiting.set(next, left);
      if (left === 0) ready.push(next);
    }
  }
  // A unit on a cycle (a definition the operator would refuse) keeps depth 0.
  for (const u of units) if (!depth.has(u.id)) depth.set(u.id, 0);
  return depth;
}

function byDepth(
  units: ViewNode[],
  edges: [string, string][],
  open: Set<string>,
  opened: string[],
  shown: Set<string>,
): [ViewNode[], [string, string][]] {
  const depth = depths(units, edges);
  const levels = new Map<number, ViewNode[]>();
  for (const u of units) {
    if (u.onExit || shown.has(u.id)) continue;
    const d = depth.get(u.id)!;
    const level = levels.get(d);
    if (level) level.push(u);
    else levels.set(d, [u]);
  }
  const groups = new Map<string, ViewNode>();
  const into = new Map<string, string>();
  for (const [d, members] of levels) {
    if (members.length < 2) continue;
    const id = `depth:${d}`;
    if (open.has(id)) {
      opened.push(id);
      continue;
    }
    groups.set(id, group(id, `depth ${d}`, members));
    for (const m of members) into.set(m.id, id);
  }
  return fold(units, edges, groups, into);
}

function task(node: DagNode): ViewNode {
  return {
    id: node.id,
    name: node.id,
    state: node.state,
    items: node.items,
    itemStates: node.itemStates,
    onExit: node.onExit,
    members: null,
  };
}

export function collapse(dag: Dag, open: Set<string>, limit: number = LIMIT): View {
  const opened: string[] = [];
  const ids = new Set(dag.nodes.map((n) => n.id));
  const edges = dag.edges.filter(([a, b]) => ids.has(a) && ids.has(b));
  // The members of an opened sibling group stay open when the rest is folded by depth.
  const shown = new Set<string>();
  let [nodes, folded] = bySiblings(dag.nodes.map(task), edges, open, opened, shown);
  if (nodes.length > limit) [nodes, folded] = byDepth(nodes, folded, open, opened, shown);
  return { nodes, edges: folded, opened };
}
