// The run's graph: laid out by dagre (a maintained layout library), drawn as SVG.
// Nodes are links to the task's rows (keyboard: Tab to a node, Enter to go there).
import dagre from "@dagrejs/dagre";

export interface DagNode {
  id: string;
  state: string;
  items: number | null;
  itemStates: Record<string, number>;
  collapsed: boolean;
  onExit: boolean;
}

export interface Dag {
  nodes: DagNode[];
  edges: [string, string][];
}

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 168;
const HEIGHT = 40;

function el<K extends keyof SVGElementTagNameMap>(
  name: K,
  attrs: Record<string, string | number>,
  parent?: Element,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  parent?.appendChild(node);
  return node;
}

function label(node: DagNode): string {
  const name = node.id.length > 22 ? node.id.slice(0, 21) + "…" : node.id;
  return node.items !== null ? `${name} [${node.items}]` : name;
}

function subtitle(node: DagNode): string {
  if (node.items === null) return node.state;
  const parts = Object.entries(node.itemStates)
    .sort()
    .map(([state, n]) => `${n} ${state}`);
  return parts.join(", ") || "no items yet";
}

export function drawDag(target: HTMLElement, dag: Dag): void {
  const started = performance.now();
  const g = new dagre.graphlib.Graph();
  const big = dag.nodes.length > 300;
  g.setGraph({
    rankdir: "LR",
    nodesep: 12,
    ranksep: 48,
    marginx: 8,
    marginy: 8,
    // network-simplex gives the tidiest ranks; longest-path stays fast on thousands of nodes.
    ranker: big ? "longest-path" : "network-simplex",
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of dag.nodes) g.setNode(node.id, { width: WIDTH, height: HEIGHT });
  for (const [from, to] of dag.edges) if (g.hasNode(from) && g.hasNode(to)) g.setEdge(from, to);
  dagre.layout(g);
  const size = g.graph();
  const width = Math.ceil(size.width ?? 0);
  const height = Math.ceil(size.height ?? 0);
  const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "dag-svg" });
  const edges = el("g", { class: "edges" }, svg);
  for (const e of g.edges()) {
    const points = g.edge(e).points ?? [];
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join("");
    el("path", { d, class: "edge" }, edges);
  }
  const nodes = el("g", { class: "nodes" }, svg);
  for (const node of dag.nodes) {
    const box = g.node(node.id);
    const link = el("a", { href: `#task-${node.id}`, class: "node" }, nodes);
    link.setAttribute("data-task", node.id);
    const group = el(
      "g",
      {
        transform: `translate(${box.x - WIDTH / 2},${box.y - HEIGHT / 2})`,
        class: `state-${node.state}${node.items !== null ? " group" : ""}${node.onExit ? " on-exit" : ""}`,
      },
      link,
    );
    el("rect", { width: WIDTH, height: HEIGHT, rx: 6 }, group);
    if (node.items !== null) el("rect", { width: WIDTH - 6, height: HEIGHT - 6, x: 3, y: 3, rx: 4, class: "inner" }, group);
    const title = el("title", {}, group);
    title.textContent = `${node.id}: ${subtitle(node)}`;
    const name = el("text", { x: 8, y: 16, class: "name" }, group);
    name.textContent = label(node);
    const state = el("text", { x: 8, y: 31, class: "sub" }, group);
    state.textContent = subtitle(node).slice(0, 28);
  }
  target.replaceChildren(svg);
  target.dataset.drawnMs = (performance.now() - started).toFixed(0);
  target.dataset.nodes = String(dag.nodes.length);
}
