"""``python -m bench.dashboard``: the dashboard's run list over 100,000 runs, and the page of
a 5,000-task run in Chromium.

A private PostgreSQL gets 100,000 runs in 10 namespaces (one definition each, phases
mixed, one second apart); a real ``plait api`` process serves them. For the first page,
a filtered page (one namespace, one definition, Failed) and page 1,000 (reached by its
keyset cursor), it reports the median of 20 requests of the HTML page and of the JSON
API's answer of the same rows (``/v1/runs``, ``/v1/namespaces/{namespace}/runs``), beside
the median of the same keyset query run alone on the API's connection; likewise for a
page filtered by a label that one run in 97 carries. The 5,000-task run's JSON detail
(``/v1/namespaces/big/runs/wide-run``: its row and its first 100 tasks) is timed too.
Then Debian's Chromium opens the page of a run of a
5,000-task definition (100 layers of 50) and reports the time until the graph is drawn,
where that time went (first byte, HTML parsed, scripts run, the graph's folding and
layout), how many nodes it drew, the page's JavaScript heap and DOM nodes and a scroll's
first frame, beside the server time of its HTML page and of the same run's data read
alone and answered as JSON. Results go to ``bench/results/dashboard.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from plait.kernel.components import COMPONENTS
from plait.kernel.migrations import migrate_database
from plait.testing import PostgresServer
from plait.testing._process import free_port, stop_process, wait_until

RESULTS = Path(__file__).parent / "results" / "dashboard.json"
CHROMIUM = "/usr/bin/chromium"
NAMESPACES = 10
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _seed_runs(dsn: str, runs: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(NAMESPACES):
            conn.execute(
                "INSERT INTO workflow_orchestrator_service.workflow_definitions (namespace, "
                "name, version, spec, spec_hash) VALUES (%s, 'shop', 1, %s, %s)",
                (
                    f"ns-{i}",
                    Jsonb({"tasks": [{"name": "a", "template": {"image": "busybox"}}]}),
                    "0" * 64,
                ),
            )
        # Phases by residue: mostly Succeeded, some Failed. History is written directly (as the
        # superuser, with the transition and notification triggers off for this session).
        conn.execute("SET session_replication_role = replica")
        # Labels: a team of 97 (one run in 97 each, spread over every namespace).
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (namespace, name, "
            "workflow_name, workflow_version, phase, created_at, started_at, finished_at, "
            "labels) "
            "SELECT 'ns-' || (g %% %s), 'run-' || g, 'shop', 1, "
            "CASE WHEN g %% 7 = 0 THEN 'Failed' ELSE 'Succeeded' END, "
            "timestamptz '2026-01-01' + g * interval '1 second', "
            "timestamptz '2026-01-01' + g * interval '1 second', "
            "timestamptz '2026-01-01' + (g + 3) * interval '1 second', "
            "jsonb_build_object('team', 'team-' || (g %% 97), 'app', 'shop') "
            "FROM generate_series(1, %s) g",
            (NAMESPACES, runs),
        )
        conn.execute("ANALYZE workflow_orchestrator_service.workflow_instances")


def _seed_big_run(dsn: str, layers: int, width: int) -> str:
    tasks = []
    for layer in range(layers):
        for j in range(width):
            task: dict[str, Any] = {"name": f"t{layer}-{j}", "template": {"image": "busybox"}}
            if layer:
                task["dependencies"] = [f"t{layer - 1}-{j}", f"t{layer - 1}-{(j + 1) % width}"]
            tasks.append(task)
    run_id = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_definitions (namespace, name, "
            "version, spec, spec_hash) VALUES ('big', 'wide', 1, %s, %s)",
            (Jsonb({"tasks": tasks}), "0" * 64),
        )
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (id, namespace, name, "
            "workflow_name, workflow_version, phase, started_at) VALUES (%s, 'big', 'wide-run', "
            "'wide', 1, 'Running', now())",
            (run_id,),
        )
        # The first half of the layers ran; the rest is planned.
        done = [t["name"] for t in tasks[: len(tasks) // 2]]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO task_execution_service.task_instances (namespace, "
                "workflow_instance_id, task_name, attempt, job_name, state, started_at, "
                "finished_at) VALUES ('big', %s, %s, 1, %s, 'Succeeded', now(), now())",
                [(run_id, name, f"wide-run-{name}-1") for name in done],
            )
    return "/ui/runs/big/wide-run"


def _get(url: str, token: str) -> tuple[float, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as resp:
        body = resp.read()
    return (time.perf_counter() - started) * 1000, body


def _median_ms(url: str, token: str, n: int) -> float:
    _get(url, token)  # warm
    return statistics.median(_get(url, token)[0] for _ in range(n))


def _query_ms(dsn: str, namespaces: list[str], f: Any, n: int) -> float:
    """The page's keyset query alone (the same function the page calls)."""
    import asyncio

    from plait.web_application import queries

    async def run() -> float:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await queries.runs_page(conn, namespaces, f)
            times = []
            for _ in range(n):
                started = time.perf_counter()
                await queries.runs_page(conn, namespaces, f)
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times)

    return asyncio.run(run())


def _detail_ms(dsn: str, namespace: str, name: str, n: int) -> float:
    """The run page's data alone: the same reads the page makes (every task's state, the
    first table page's attempts in full, the run's logs and spans), dumped as JSON in this
    process. The JSON API's answer (``/v1/namespaces/big/runs/wide-run``) reads less: no
    logs or spans."""
    import asyncio
    import dataclasses

    from pydantic import SecretStr

    from plait.kernel.config import Settings
    from plait.kernel.database import Database
    from plait.web_application import pages, queries

    async def run() -> float:
        settings = Settings(database_url=SecretStr(dsn), database_pool_min=0)
        database = await Database.open(settings, COMPONENTS, environ={})
        try:
            times = []
            for _ in range(n + 1):
                started = time.perf_counter()
                detail = await queries.run_detail(database, namespace, name)
                assert detail is not None
                first = detail.nodes[: pages.TASK_ROWS]
                await queries.read_attempts(database, detail.instance, first)
                json.dumps(
                    {
                        "run": dataclasses.asdict(detail.instance),
                        "graph": detail.graph(),
                        "attempts": [
                            dataclasses.asdict(a) for node in first for a in node.attempts
                        ],
                    },
                    default=str,
                )
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times[1:])
        finally:
            await database.close()

    return asyncio.run(run())


def _browser(base: str, path: str, token: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            extra_http_headers={"Authorization": f"Bearer {token}"},
        )
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        started = time.perf_counter()
        page.goto(base + path, wait_until="commit")
        page.wait_for_selector("#dag svg", state="attached", timeout=120_000)
        drawn = (time.perf_counter() - started) * 1000
        nodes = page.locator("#dag a.node").count()
        tasks = int(page.get_attribute("#dag", "data-tasks") or 0)
        layout_ms = page.get_attribute("#dag", "data-drawn-ms")
        fold_ms = page.get_attribute("#dag", "data-fold-ms")
        dagre_ms = page.get_attribute("#dag", "data-layout-ms")
        timing = page.evaluate(
            "(() => { const t = performance.getEntriesByType('navigation')[0];"
            " return [t.responseStart, t.responseEnd, t.domInteractive,"
            " t.domContentLoadedEventEnd, t.transferSize]; })()"
        )
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        scrolled = time.perf_counter()
        page.mouse.wheel(0, 3000)
        page.evaluate("new Promise(r => requestAnimationFrame(() => r(1)))")
        scroll_ms = (time.perf_counter() - scrolled) * 1000
        context.close()
    return {
        "graph_drawn_ms": round(drawn),
        "first_byte_ms": round(timing[0]),
        "html_received_ms": round(timing[1]),
        "html_parsed_ms": round(timing[2]),
        "scripts_run_ms": round(timing[3]),
        "html_bytes": int(timing[4]),
        "layout_and_draw_ms_in_page": int(layout_ms or 0),
        "of_which_folding_ms": int(fold_ms or 0),
        "of_which_dagre_ms": int(dagre_ms or 0),
        "renderer_task_ms": round(metrics.get("TaskDuration", 0) * 1000),
        "tasks_in_graph": tasks,
        "nodes_drawn": nodes,
        "js_heap_used_mib": round(metrics.get("JSHeapUsedSize", 0) / 2**20, 1),
        "dom_nodes": int(metrics.get("Nodes", 0)),
        "first_scroll_frame_ms": round(scroll_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--width", type=int, default=50)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"runs": args.runs}
    with PostgresServer() as server:
        dsn = server.create_database("bench_dashboard")
        migrate_database(dsn, COMPONENTS, owner_role=None)
        t = time.perf_counter()
        _seed_runs(dsn, args.runs)
        print(f"seeded {args.runs} runs in {time.perf_counter() - t:.1f}s", flush=True)
        big = _seed_big_run(dsn, args.layers, args.width)
        port, token = free_port(), "bench-" + secrets.token_hex(12)
        env = {**os.environ, "PLAIT_DATABASE_URL": dsn, "PLAIT_API_TOKEN": token}
        for key in list(env):
            if key.startswith("PLAIT_DATABASE_URL_"):
                env.pop(key)
        log = open(Path(tempfile.gettempdir()) / "bench-dashboard-api.log", "wb")  # noqa: SIM115
        api = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                try:
                    return _get(base + "/readyz", token)[0] >= 0
                except OSError:
                    return False

            wait_until(ready, timeout=60, what="plait api")
            from plait.web_application.queries import LabelRequirement, RunFilter
            from plait.workflow_orchestrator.states import WorkflowPhase

            every = [f"ns-{i}" for i in range(NAMESPACES)] + ["big"]
            filtered = RunFilter(
                namespace="ns-3", definition="shop", phases=(WorkflowPhase.FAILED,)
            )
            # Page 1,000: follow the keyset cursor 999 times (the query alone).
            cursor_filter = RunFilter()
            import asyncio

            from plait.web_application import queries

            async def walk() -> str | None:
                nonlocal cursor_filter
                async with await psycopg.AsyncConnection.connect(dsn) as conn:
                    for _ in range(999):
                        page = await queries.runs_page(conn, every, cursor_filter)
                        cursor_filter = RunFilter(cursor=page.next_cursor)
                return cursor_filter.cursor

            deep_cursor = asyncio.run(walk())
            # Each page: the HTML page, the JSON API's answer of the same rows (the same
            # query: /v1/runs across every namespace, or one namespace's route) and the
            # query alone.
            pages = {
                "first page": ("/ui/runs", "/v1/runs", RunFilter()),
                "filtered page": (
                    "/ui/runs?namespace=ns-3&definition=shop&phase=Failed",
                    "/v1/namespaces/ns-3/runs?definition=shop&phase=Failed",
                    filtered,
                ),
                "page 1,000": (
                    f"/ui/runs?after={deep_cursor}",
                    f"/v1/runs?cursor={deep_cursor}",
                    RunFilter(cursor=deep_cursor),
                ),
                "by label": (
                    "/ui/runs?label=team%3Dteam-7",
                    "/v1/runs?label=team%3Dteam-7",
                    RunFilter(labels=(LabelRequirement("team", "team-7"),)),
                ),
            }
            result["run_list"] = {}
            for label, (path, json_path, f) in pages.items():
                namespaces = [f.namespace] if f.namespace else every
                html_ms = _median_ms(base + path, token, args.requests)
                json_ms = _median_ms(base + json_path, token, args.requests)
                query_ms = _query_ms(dsn, namespaces, f, args.requests)
                result["run_list"][label] = {
                    "html_page_ms": round(html_ms, 1),
                    "json_api_ms": round(json_ms, 1),
                    "keyset_query_ms": round(query_ms, 2),
                }
                said = (
                    f"{label:>14}: page {html_ms:6.1f} ms, JSON {json_ms:6.1f} ms, "
                    f"its query {query_ms:5.2f} ms"
                )
                print(said, flush=True)
            # The 5,000-task run's JSON detail (its row and the first 100 tasks' latest
            # attempts), beside its HTML page (measured with the browser below).
            detail_path = "/v1/namespaces/big/runs/wide-run"
            _, body = _get(base + detail_path, token)
            assert len(json.loads(body)["tasks"]) == 100
            result["big_run_json_api_ms"] = round(_median_ms(base + detail_path, token, 3), 1)
            print(f"5,000-task run as JSON: {result['big_run_json_api_ms']} ms", flush=True)
            result["load_average"] = [round(x, 2) for x in os.getloadavg()]
            if not args.no_browser:
                html_ms = _median_ms(base + big, token, 3)
                result["big_run"] = {
                    "tasks": args.layers * args.width,
                    "html_page_ms": round(html_ms, 1),
                    "run_data_as_json_ms": round(_detail_ms(dsn, "big", "wide-run", 3), 1),
                    **_browser(base, big, token),
                }
                print(f"5,000-task run: {json.dumps(result['big_run'])}", flush=True)
        finally:
            stop_process(api)
            log.close()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
