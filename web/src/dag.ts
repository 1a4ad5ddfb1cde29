// The run's graph: laid out by dagre (a maintained layout library), drawn as SVG.
// Large fan-outs are folded into groups first (collapse.ts). A task node links to the
// task's rows; a group opens in place (keyboard: Tab to a node, Enter).
import dagre from "@dagrejs/dagre";
import { collapse, type ViewNode } from "./collapse";

// As the server sends it (plait.web_application.queries.RunDetail.graph): fields at
// their defaults are left out, and an edge is a pair of positions in `nodes`.
export interface DagNode {
  id: string;
  state: string;
  items?: number;
  itemStates?: Record<string, number>;
  collapsed?: boolean;
  onExit?: boolean;
}

export interface Dag {
  nodes: DagNode[];
  /** [upstream, downstream], as positions in `nodes`. */
  edges: [number, number][];
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

function label(node: ViewNode): string {
  const name = node.name.length > 22 ? node.name.slice(0, 21) + "…" : node.name;
  return node.items !== null ? `${name} [${node.items}]` : name;
}

function subtitle(node: ViewNode): string {
  if (node.items === null) return node.state;
  const parts = Object.entries(node.itemStates)
    .sort()
    .map(([state, n]) => `${n} ${state}`);
  return parts.join(", ") || "no items yet";
}

/** Draw the run's graph; `open` names the groups the reader opened, `toggle` opens or
 * closes one (and draws again). */
export function drawDag(
  target: HTMLElement,
  dag: Dag,
  open: Set<string>,
  toggle: (group: string) => void,
): void {
  const started = performance.now();
  const view = collapse(dag, open);
  const foldedAt = performance.now();
  const g = new dagre.graphlib.Graph();
  g.setGraph({
    rankdir: "LR",
    nodesep: 12,
    ranksep: 48,
    marginx: 8,
    marginy: 8,
    // network-simplex gives the tidiest ranks; longest-path stays fast when many groups
    // are open at once.
    ranker: view.nodes.length > 300 ? "longest-path" : "network-simplex",
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of view.nodes) g.setNode(node.id, { width: WIDTH, height: HEIGHT });
  for (const [from, to] of view.edges) g.setEdge(from, to);
  dagre.layout(g);
  const laidOut = performance.now();
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
  for (const node of view.nodes) {
    const box = g.node(node.id);
    const folded = node.members !== null;
    // A task links to its rows in the table; a folded group opens on Enter or a click.
    const link = el("a", { href: folded ? "#dag" : `#task-${node.id}`, class: "node" }, nodes);
    if (folded) {
      link.setAttribute("role", "button");
      link.setAttribute("aria-expanded", "false");
      link.setAttribute("data-group", node.id);
      link.addEventListener("click", (event) => {
        event.preventDefault();
        toggle(node.id);
      });
    } else {
      link.setAttribute("data-task", node.id);
    }
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
    title.textContent = folded
      ? `${node.name}: ${node.members!.length} tasks (${subtitle(node)}); open to show them`
      : `${node.id}: ${subtitle(node)}`;
    const name = el("text", { x: 8, y: 16, class: "name" }, group);
    name.textContent = label(node);
    const state = el("text", { x: 8, y: 31, class: "sub" }, group);
    state.textContent = subtitle(node).slice(0, 28);
  }
  const bar = document.createElement("div");
  bar.className = "dag-bar";
  const said = document.createElement("span");
  said.className = "muted";
  said.dataset.testid = "dag-summary";
  said.textContent =
    view.nodes.length < dag.nodes.length
      ? `${dag.nodes.length} tasks drawn as ${view.nodes.length} nodes; open a group to show its tasks.`
      : `${dag.nodes.length} tasks.`;
  bar.append(said);
  for (const id of view.opened) {
    const close = document.createElement("button");
    close.type = "button";
    close.dataset.group = id;
    close.textContent = `Close ${id.replace(":", " ")}`;
    close.addEventListener("click", () => toggle(id));
    bar.append(" ", close);
  }
  const canvas = document.createElement("div");
  canvas.className = "dag-canvas";
  canvas.append(svg);
  target.replaceChildren(bar, canvas);
  target.dataset.drawnMs = (performance.now() - started).toFixed(0);
  target.dataset.foldMs = (foldedAt - started).toFixed(0);
  target.dataset.layoutMs = (laidOut - foldedAt).toFixed(0);
  target.dataset.nodes = String(view.nodes.length);
  target.dataset.tasks = String(dag.nodes.length);
}
