// The dashboard's one entry: every page loads it; each part acts only where its
// elements are present. Everything user-supplied is written with textContent.
import "./style.css";
import { drawDag } from "./dag";

function confirmActions(): void {
  for (const button of document.querySelectorAll<HTMLButtonElement>("button[data-confirm]")) {
    button.form?.addEventListener("submit", (event) => {
      if (!window.confirm(button.dataset.confirm ?? "Sure?")) event.preventDefault();
    });
  }
}

function start(): void {
  confirmActions();
  const data = document.getElementById("dag-data");
  const target = document.getElementById("dag");
  if (data && target) drawDag(target, JSON.parse(data.textContent ?? "{}"));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
