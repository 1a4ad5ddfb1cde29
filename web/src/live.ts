// Live pages: the server pushes a note (Server-Sent Events, fed by PostgreSQL's NOTIFY)
// whenever something on this page changed; the page is then fetched again and its live
// regions are swapped in place, so nothing is reloaded and the scroll position stays.
const QUIET_MS = 400;

export function watch(url: string, redraw: () => void): void {
  let timer: number | undefined;
  let busy = false;
  let again = false;

  async function refresh(): Promise<void> {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of document.querySelectorAll<HTMLElement>("[data-live-region]")) {
        const next = fresh.getElementById(region.id);
        if (!next) continue;
        // Keep what the reader opened.
        const open = new Set(
          [...region.querySelectorAll("details[open]")].map((d) => d.getAttribute("data-key")),
        );
        for (const d of next.querySelectorAll("details")) {
          if (open.has(d.getAttribute("data-key"))) d.setAttribute("open", "");
        }
        region.replaceWith(document.adoptNode(next));
      }
      document.body.dataset.updates = String(Number(document.body.dataset.updates ?? 0) + 1);
      redraw();
    } finally {
      busy = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function schedule(): void {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void refresh(), QUIET_MS);
  }

  const source = new EventSource(url);
  for (const kind of ["run", "task", "resync"]) source.addEventListener(kind, schedule);
  source.addEventListener("open", () => (document.body.dataset.live_state = "open"));
}
