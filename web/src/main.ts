// The dashboard's one entry: every page loads it; each part acts only where its
// elements are present. Everything user-supplied is written with textContent.
import "./style.css";
import { type Dag, drawDag } from "./dag";
import { watch } from "./live";

function confirmActions(): void {
  for (const button of document.querySelectorAll<HTMLButtonElement>("button[data-confirm]")) {
    button.form?.addEventListener("submit", (event) => {
      if (!window.confirm(button.dataset.confirm ?? "Sure?")) event.preventDefault();
    });
  }
}

let drawn = "";
let dag: Dag | null = null;
let drawing: Node[] = [];
const open = new Set<string>();

function paint(target: HTMLElement): void {
  if (!dag) return;
  drawDag(target, dag, open, (group) => {
    if (open.has(group)) open.delete(group);
    else open.add(group);
    paint(target);
    target.querySelector<HTMLElement>(`[data-group="${CSS.escape(group)}"]`)?.focus();
  });
  drawing = [...target.childNodes];
}

// A task whose rows are on another page of the table: open that task's rows.
function followTask(event: MouseEvent): void {
  const link = (event.target as Element | null)?.closest<SVGAElement>("a[data-task]");
  const task = link?.getAttribute("data-task");
  if (!task || document.getElementById(`task-${task}`)) return;
  event.preventDefault();
  const url = new URL(window.location.href);
  url.searchParams.delete("tasks_from");
  url.searchParams.set("task", task);
  url.hash = `task-${task}`;
  window.location.assign(url.toString());
}

function draw(): void {
  confirmActions();
  const data = document.getElementById("dag-data");
  const target = document.getElementById("dag");
  if (!data || !target) return;
  const text = data.textContent ?? "{}";
  if (text === drawn && drawing.length) {
    // A live update swapped the region in but the graph is the same: keep the drawing
    // (the graph is not laid out again for every log line).
    if (drawing[0].parentElement !== target) target.replaceChildren(...drawing);
    return;
  }
  drawn = text;
  dag = JSON.parse(text) as Dag;
  target.addEventListener("click", followTask);
  paint(target);
}

function start(): void {
  draw();
  const live = document.body.dataset.live;
  if (live) watch(live, draw);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
