// The dashboard's one entry: every page loads it; each part acts only where its
// elements are present. Everything user-supplied is written with textContent.
import "./style.css";
import { drawDag } from "./dag";
import { watch } from "./live";

function confirmActions(): void {
  for (const button of document.querySelectorAll<HTMLButtonElement>("button[data-confirm]")) {
    button.form?.addEventListener("submit", (event) => {
      if (!window.confirm(button.dataset.confirm ?? "Sure?")) event.preventDefault();
    });
  }
}

let drawn = "";
let drawing: SVGSVGElement | null = null;

function draw(): void {
  confirmActions();
  const data = document.getElementById("dag-data");
  const target = document.getElementById("dag");
  if (!data || !target) return;
  const text = data.textContent ?? "{}";
  if (text === drawn && drawing) {
    // A live update swapped the region in but the graph is the same: keep the drawing
    // (a 5,000-task graph is not laid out again for every log line).
    if (drawing.parentElement !== target) target.replaceChildren(drawing);
    return;
  }
  drawn = text;
  drawDag(target, JSON.parse(text));
  drawing = target.querySelector("svg");
}

function start(): void {
  draw();
  const live = document.body.dataset.live;
  if (live) watch(live, draw);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
