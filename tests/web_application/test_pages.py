"""The dashboard's pages in-process (aiohttp's test server, real PostgreSQL, no cluster):
who may see what, escaping, the security headers, CSRF, and the run list's keyset pages
and filters."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.api.dashboard import CONTENT_SECURITY_POLICY
from plait.auth.secrets import SecretKey
from plait.auth.settings import AuthSettings
from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.web_application import queries
from plait.workflow_orchestrator import gate
from plait.workflow_orchestrator import repository as orchestrator
from plait.workflow_orchestrator.states import WorkflowPhase

ADMIN = {"Authorization": "Bearer admin-" + "x" * 20}
PASSWORD = "a long enough password 42"
HOSTILE = "<script>alert(1)</script>"
SPEC = {"tasks": [{"name": "a", "template": {"image": "busybox"}}]}


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    db = await Database.open(
        Settings(database_url=SecretStr(component_dsns["auth"]), database_pool_min=0),
        COMPONENTS,
        environ={f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS},
    )
    yield db
    await db.close()


@pytest.fixture
async def client(database: Database) -> AsyncIterator[TestClient[Any, Any]]:
    settings = AuthSettings(key=SecretKey(secrets.token_bytes(32)), cookie_secure=False)
    config = ApiConfig(tokens=TokenStore([ADMIN["Authorization"][7:]]), auth=settings)
    async with TestClient(TestServer(build_app(database, config))) as c:
        for name, role in (("ada", "editor"), ("vic", "viewer")):
            body = {"username": name, "password": PASSWORD, "roles": [role]}
            resp = await c.post("/v1/auth/users", json=body, headers=ADMIN)
            assert resp.status == 201, await resp.text()
        yield c


async def _runs(dsn: str, namespace: str, n: int, **extra: Any) -> list[uuid.UUID]:
    """``n`` runs of definition ``shop`` in ``namespace``, one second apart (newest last)."""
    ids = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, namespace, "shop", SPEC)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        for i in range(n):
            instance, _ = await orchestrator.create_workflow_instance(
                conn,
                id=uuid.uuid4(),
                namespace=namespace,
                name=f"run-{i}",
                workflow_name="shop",
                workflow_version=1,
                inputs={"note": HOSTILE},
            )
            await conn.execute(
                "UPDATE workflow_orchestrator_service.workflow_instances SET created_at = %s "
                "WHERE id = %s",
                (start + dt.timedelta(seconds=i), instance.id),
            )
            ids.append(instance.id)
    return ids


async def _sign_in(client: TestClient[Any, Any], username: str) -> None:
    client.session.cookie_jar.clear()
    resp = await client.post(
        "/ui/login",
        data={"username": username, "password": PASSWORD, "next": "/ui/runs"},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/ui/runs"


async def test_a_stranger_is_sent_to_sign_in_and_pages_carry_a_strict_policy(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.get("/ui/runs?namespace=shop", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/ui/login?next=%2Fui%2Fruns%3Fnamespace%3Dshop"
    page = await client.get("/ui/login")
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    html = await page.text()
    assert "<script>" not in html  # nothing inline
    assert "style=" not in html
    # A sign-in never sends the browser to another site.
    await client.post("/ui/login", data={"username": "ada", "password": PASSWORD})
    resp = await client.post(
        "/ui/login",
        data={"username": "ada", "password": PASSWORD, "next": "//evil.example/x"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/ui/runs"


async def test_a_wrong_password_is_refused_on_the_page(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/ui/login", data={"username": "ada", "password": "nope" * 4})
    assert resp.status == 401
    assert "wrong username or password" in await resp.text()
    assert "plait_session" not in resp.cookies


async def test_user_data_is_escaped_and_a_viewer_sees_no_actions_and_is_refused(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _runs(migrated_database, "shop", 1)
    await _sign_in(client, "vic")
    html = await (await client.get("/ui/runs/shop/run-0")).text()
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-testid="actions"' not in html
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf is not None
    refused = await client.post("/ui/runs/shop/run-0/cancel", data={"csrf": csrf.group(1)})
    assert refused.status == 403
    assert "vic lacks the permission instances:write in namespace &#39;shop&#39;" in (
        await refused.text()
    )


async def test_an_editor_sees_the_actions_and_a_write_needs_the_csrf_token(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _runs(migrated_database, "shop", 1)
    await _sign_in(client, "ada")
    html = await (await client.get("/ui/runs/shop/run-0")).text()
    assert 'data-testid="actions"' in html
    assert "action-cancel" in html
    forged = await client.post("/ui/runs/shop/run-0/cancel", data={"csrf": "forged"})
    assert forged.status == 403
    assert "CSRF" in await forged.text()
    # A bearer token (no cookie) needs no CSRF token: no browser sends it by itself.
    assert (await client.get("/ui/runs/shop/run-0", headers=ADMIN)).status == 200


async def test_an_unknown_run_and_a_bad_filter_are_pages_that_say_so(
    client: TestClient[Any, Any],
) -> None:
    await _sign_in(client, "ada")
    missing = await client.get("/ui/runs/shop/nothing-here")
    assert missing.status == 404
    assert "No run nothing-here in namespace shop is recorded (yet)" in await missing.text()
    bad = await client.get("/ui/runs?phase=Sleeping")
    assert bad.status == 400
    assert "unknown phase" in await bad.text()


async def test_a_run_pages_its_task_table_and_refuses_a_bad_page(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _runs(migrated_database, "shop", 1)
    await _sign_in(client, "ada")
    page = await client.get("/ui/runs/shop/run-0")
    assert page.status == 200
    html = await page.text()
    assert 'id="task-a"' in html
    assert 'data-testid="task-pager"' not in html  # one task: one page, no pager
    one = await client.get("/ui/runs/shop/run-0?task=a")
    assert 'id="task-a"' in await one.text()
    missing = await client.get("/ui/runs/shop/run-0?task=b")
    assert missing.status == 404
    assert "run run-0 has no task &#39;b&#39;" in await missing.text()
    for raw, said in (
        ("x", "tasks_from must be a whole number of tasks to skip, not &#39;x&#39;"),
        ("-1", "tasks_from must be between 0 and 0"),
        ("1", "tasks_from must be between 0 and 0"),
    ):
        bad = await client.get(f"/ui/runs/shop/run-0?tasks_from={raw}")
        assert bad.status == 400
        assert said in await bad.text()


async def test_the_run_list_pages_by_keyset_across_namespaces_with_filters(
    database: Database, migrated_database: str
) -> None:
    shop = await _runs(migrated_database, "shop", 7)
    books = await _runs(migrated_database, "books", 4)
    async with database.connection("workflow_orchestrator") as conn:
        assert await queries.instance_namespaces(conn) == ["books", "shop"]
        seen: list[uuid.UUID] = []
        f = queries.RunFilter()
        while True:
            page = await queries.runs_page(conn, ["books", "shop"], f, limit=3)
            seen += [r.id for r in page.runs]
            if page.next_cursor is None:
                break
            f = queries.RunFilter(cursor=page.next_cursor)
        # Newest first, every run once, the namespaces merged by creation time.
        assert len(seen) == 11
        assert len(set(seen)) == 11
        assert seen[:2] == [shop[6], shop[5]]
        only = await queries.runs_page(conn, ["books"], queries.RunFilter(), limit=10)
        assert [r.id for r in only.runs] == books[::-1]
        window = queries.RunFilter(
            since=dt.datetime(2026, 1, 1, 0, 0, 2, tzinfo=dt.UTC),
            until=dt.datetime(2026, 1, 1, 0, 0, 4, tzinfo=dt.UTC),
        )
        page = await queries.runs_page(conn, ["shop"], window)
        assert [r.id for r in page.runs] == [shop[3], shop[2]]
        done = queries.RunFilter(phases=(WorkflowPhase.SUCCEEDED,))
        assert (await queries.runs_page(conn, ["shop"], done)).runs == []
        pending = queries.RunFilter(phases=(WorkflowPhase.PENDING,), definition="shop")
        assert len((await queries.runs_page(conn, ["shop"], pending)).runs) == 7


async def test_a_grant_shows_only_its_namespace(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    await _runs(migrated_database, "shop", 2)
    await _runs(migrated_database, "books", 2)
    body = {
        "username": "bo",
        "password": PASSWORD,
        "grants": [{"role": "viewer", "namespace": "books"}],
    }
    assert (await client.post("/v1/auth/users", json=body, headers=ADMIN)).status == 201
    await _sign_in(client, "bo")
    html = await (await client.get("/ui/runs")).text()
    assert 'data-run="books/run-1"' in html
    assert 'data-run="shop/run-1"' not in html
    refused = await client.get("/ui/runs?namespace=shop")
    assert refused.status == 403
    assert (await client.get("/ui/runs/shop/run-1")).status == 403


async def test_static_files_are_cached_for_a_year(client: TestClient[Any, Any]) -> None:
    from plait.web_application.pages import STATIC_DIR

    assets = sorted((STATIC_DIR / "assets").glob("main-*.js"))
    if not assets:
        pytest.skip("the front end is not built (make web)")
    resp = await client.get(f"/ui/static/assets/{assets[0].name}")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert (await client.get("/ui/static/../pages.py")).status == 404
    assert (await client.get("/ui/static/.vite/manifest.json")).status == 404


def test_every_page_declares_who_may_use_it() -> None:
    from plait.api.dashboard import DASHBOARD_ROUTES

    assert component_by_name("web_application")
    for route in DASHBOARD_ROUTES:
        assert route.public or route.access is not None, route.operation_id
    writes = [r for r in DASHBOARD_ROUTES if r.method == "POST" and not r.public]
    assert {r.operation_id: r.access.permission for r in writes if r.access} == {
        "dashboard.logout": None,
        "dashboard.run-action": "instances:write",
        "dashboard.submit": "instances:write",
        "dashboard.deadletter-replay": "deadletters:write",
        "dashboard.deadletter-purge": "deadletters:write",
        "dashboard.test-run": "tests:run",
    }


async def test_a_definition_shows_its_versions_a_diff_its_parameters_and_triggers(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    v2 = {
        "parameters": [{"name": "region", "enum": ["eu", "us"], "default": "eu"}],
        "tasks": [
            {"name": "a", "template": {"image": "busybox"}},
            {"name": "b", "template": {"image": "alpine"}, "dependencies": ["a"]},
        ],
    }
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, "shop", "shop", SPEC)
        await orchestrator.upsert_workflow_definition(conn, "shop", "shop", v2)
        await orchestrator.upsert_event_trigger(
            conn,
            namespace="shop",
            name="nightly",
            spec={"schedule": {"cron": "0 3 * * *"}, "workflowRef": {"name": "shop"}},
        )
    await _sign_in(client, "vic")
    listing = await (await client.get("/ui/definitions")).text()
    assert 'data-definition="shop/shop"' in listing
    assert "<td>v2</td>" in listing
    page = await client.get("/ui/definitions/shop/shop?version=2&diff=1")
    html = await page.text()
    assert page.status == 200
    assert re.search(r"<span class=\"d-add\">\+ +&#34;image&#34;: &#34;alpine&#34;</span>", html)
    assert "<code>region</code>" in html
    assert "string (eu, us)" in html
    # The cron trigger, with its next firing (03:00 UTC of some day).
    triggers = html[html.index('data-testid="triggers"') :]
    assert "nightly" in triggers
    assert re.search(r"<td>\d{4}-\d\d-\d\d 03:00:00</td>", triggers)
    assert 'data-testid="submit-link"' not in html  # a viewer starts no run
    missing = await client.get("/ui/definitions/shop/shop?version=9")
    assert missing.status == 404


async def test_the_submit_form_asks_for_the_version_a_new_run_gets_under_the_test_gate(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    """A gated version still being tested is not what a run submitted now runs, so the
    form shows the parameters of the version before it, and the new one's once it passed."""
    v1 = {**SPEC, "parameters": [{"name": "size", "default": "s"}]}
    v2 = {**SPEC, "testGate": True, "parameters": [{"name": "colour", "default": "red"}]}
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, "gated", "shop", v1)
        stored, _ = await orchestrator.upsert_workflow_definition(conn, "gated", "shop", v2)
        await gate.open_gate(conn, stored)
        await _sign_in(client, "ada")
        html = await (await client.get("/ui/submit/gated/shop")).text()
        assert "v1</span>" in html
        assert 'name="size"' in html
        assert "colour" not in html
        assert await gate.decide(conn, stored.id, gate.GateState.PASSED, "1 test passed")
        html = await (await client.get("/ui/submit/gated/shop")).text()
        assert "v2</span>" in html
        assert 'name="colour"' in html
        assert 'name="size"' not in html
        await gate.decide(
            conn, stored.id, gate.GateState.FAILED, "case a failed", was=[gate.GateState.PASSED]
        )
        await conn.execute(
            "DELETE FROM workflow_orchestrator_service.workflow_definitions "
            "WHERE namespace = 'gated' AND version = 1"
        )
    refused = await client.get("/ui/submit/gated/shop")
    assert refused.status == 404
    assert "failed its tests" in await refused.text()


async def test_the_live_feed_passes_on_each_change_of_a_run_and_its_tasks(
    database: Database, migrated_database: str
) -> None:
    from plait.web_application.live import LiveFeed

    feed = LiveFeed(database)
    try:
        async with feed.subscribe() as queue:
            await asyncio.wait_for(feed.listening.wait(), 10)
            [run] = await _runs(migrated_database, "shop", 1)
            change = await asyncio.wait_for(queue.get(), 10)
            assert change.kind == "run"
            assert change.data == {
                "id": str(run),
                "namespace": "shop",
                "name": "run-0",
                "phase": "Pending",
            }
            async with await psycopg.AsyncConnection.connect(
                migrated_database, autocommit=True
            ) as conn:
                # A change nobody sees (created_at) sends nothing; a phase change does.
                await conn.execute(
                    "UPDATE workflow_orchestrator_service.workflow_instances "
                    "SET phase = 'Running', started_at = now() WHERE id = %s",
                    (run,),
                )
            change = await asyncio.wait_for(queue.get(), 10)
            assert (change.kind, change.data["phase"]) == ("run", "Running")
            assert queue.empty()
    finally:
        await feed.stop()


async def _dead_letter(dsn: str, namespace: str, event_id: str) -> uuid.UUID:
    """A dead letter whose event is still stored (so a replay queues it again)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        event = {
            "specversion": "1.0",
            "id": event_id,
            "source": "shop/orders",
            "type": "order.created",
            "data": {"note": HOSTILE},
        }
        cur = await conn.execute(
            "INSERT INTO event_processing_service.event_instances (namespace, source, "
            "event_id, type, data) VALUES (%s, 'shop/orders', %s, 'order.created', %s) "
            "RETURNING id",
            (namespace, event_id, psycopg.types.json.Jsonb(event["data"])),
        )
        row = await cur.fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO event_processing_service.event_queue_state (event_instance_id, state, "
            "attempts, max_attempts) VALUES (%s, 'DeadLettered', 5, 5)",
            (row[0],),
        )
        cur = await conn.execute(
            "INSERT INTO event_processing_service.dead_letter_queue (namespace, "
            "event_instance_id, source, event_id, type, payload, reason, attempts) "
            "VALUES (%s, %s, 'shop/orders', %s, 'order.created', %s, 'no trigger took it', 5) "
            "RETURNING id",
            (namespace, row[0], event_id, psycopg.types.json.Jsonb(event)),
        )
        letter = await cur.fetchone()
        assert letter is not None
        return uuid.UUID(str(letter[0]))


async def test_events_are_searchable_and_dead_letters_are_replayed_and_purged(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    first = await _dead_letter(migrated_database, "shop", "e-1")
    second = await _dead_letter(migrated_database, "shop", "e-2")
    await _runs(migrated_database, "shop", 1)  # a definition: the namespace is known
    await _sign_in(client, "vic")
    events = await (await client.get("/ui/events?namespace=shop&type=order.created")).text()
    assert 'data-event="e-1"' in events
    assert 'data-event="e-2"' in events
    assert HOSTILE not in events
    none = await (await client.get("/ui/events?namespace=shop&source=elsewhere")).text()
    assert 'data-event="e-1"' not in none
    letters = await (await client.get("/ui/deadletters?namespace=shop")).text()
    assert f'data-letter="{first}"' in letters
    assert 'data-testid="replay"' not in letters  # a viewer may not
    assert 'data-testid="purge"' not in letters
    csrf = re.search(r'name="csrf" value="([^"]+)"', letters)
    assert csrf is not None
    refused = await client.post(
        f"/ui/deadletters/shop/{first}/replay", data={"csrf": csrf.group(1)}
    )
    assert refused.status == 403

    await _sign_in(client, "ada")
    letters = await (await client.get("/ui/deadletters?namespace=shop")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', letters)
    assert csrf is not None
    token = csrf.group(1)
    done = await client.post(f"/ui/deadletters/shop/{first}/replay", data={"csrf": token})
    assert "replayed order.created e-1" in await done.text()
    again = await client.post(f"/ui/deadletters/shop/{first}/replay", data={"csrf": token})
    assert "is not open (or gone): nothing replayed" in await again.text()
    purged = await client.post(
        "/ui/deadletters/shop/purge", data={"csrf": token, "id": str(second)}
    )
    html = await purged.text()
    assert "purged 1 dead letter" in html
    assert f'data-letter="{second}"' not in html
    assert f'data-letter="{first}"' in html  # replayed, kept


async def test_the_built_in_components_are_seeded_as_version_1(migrated_database: str) -> None:
    from plait.kernel.versions import spec_hash
    from plait.web_application.builtin import BUILTIN
    from plait.web_application.panels import validate_spec

    async with await psycopg.AsyncConnection.connect(migrated_database) as conn:
        cur = await conn.execute(
            "SELECT name, version, kind, spec, spec_hash "
            "FROM web_application_service.ui_components ORDER BY name"
        )
        rows = await cur.fetchall()
    assert rows == sorted((name, 1, kind, spec, spec_hash(spec)) for name, kind, spec in BUILTIN)
    for _, kind, spec in BUILTIN:
        assert validate_spec(kind, spec) == spec


async def test_the_overview_draws_every_panel_and_a_broken_one_only_fails_itself(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        # A finished run in the traces, so the runs-per-minute chart has a point.
        await conn.execute(
            "INSERT INTO observability_service.observability_traces (start_time, end_time, "
            "trace_id, span_id, name, component, attributes) VALUES (now() - interval '2 s', "
            "now(), %s, %s, 'plait.workflow', 'operator', %s)",
            (
                "a" * 32,
                "b" * 16,
                psycopg.types.json.Jsonb(
                    {"plait.namespace": "shop", "plait.instance": "r", "plait.outcome": "failed"}
                ),
            ),
        )
        await conn.execute(
            "INSERT INTO web_application_service.ui_components (name, version, kind, spec, "
            "spec_hash) VALUES ('broken', 1, 'table', %s, %s)",
            (
                psycopg.types.json.Jsonb(
                    {"title": "Broken", "view": "workflow_runs", "columns": ["no_such_column"]}
                ),
                "0" * 64,
            ),
        )
    await _sign_in(client, "vic")
    page = await client.get("/ui/overview")
    html = await page.text()
    assert page.status == 200
    for name in ("runs-per-minute", "workflow-failure-rates", "slowest-tasks", "event-queue-lag"):
        assert f'data-panel="{name}"' in html
    runs = html[html.index('data-panel="runs-per-minute"') :]
    assert '<polyline class="series s0"' in runs.split("</section>")[0]
    assert '<span class="key s0">failed</span>' in runs.split("</section>")[0]
    broken = html[html.index('data-panel="broken"') :].split("</section>")[0]
    assert "workflow_runs has no column no_such_column" in broken


PANEL = """
name: failed-runs
kind: table
spec:
  title: Failed runs <b>today</b>
  view: workflow_runs
  columns: [namespace, instance, outcome, duration_seconds]
  orderBy: duration_seconds
  limit: 5
  layout: {order: 1}
"""


async def test_a_custom_panel_is_applied_with_the_cli_shown_and_rolled_back(
    client: TestClient[Any, Any], tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from plait.cli import cli as plait_cli

    panel = tmp_path / "panel.yaml"
    panel.write_text(PANEL)
    url = str(client.make_url("")).rstrip("/")
    token = ADMIN["Authorization"][7:]

    def cli(*args: str) -> Any:
        return CliRunner().invoke(plait_cli, [*args, "--url", url, "--token", token])

    applied = await asyncio.to_thread(cli, "ui", "apply", "-f", str(panel))
    assert applied.exit_code == 0, applied.output
    assert applied.output == "failed-runs v1 stored\n"
    again = await asyncio.to_thread(cli, "ui", "apply", "-f", str(panel))
    assert again.output == "failed-runs v1 unchanged\n"
    panel.write_text(PANEL.replace("limit: 5", "limit: 7"))
    changed = await asyncio.to_thread(cli, "ui", "apply", "-f", str(panel))
    assert changed.output == "failed-runs v2 stored\n"

    await _sign_in(client, "vic")
    html = await (await client.get("/ui/overview")).text()
    mine = html[html.index('data-panel="failed-runs"') :].split("</section>")[0]
    assert "Failed runs &lt;b&gt;today&lt;/b&gt;" in mine
    assert "failed-runs v2" in mine
    assert html.index('data-panel="failed-runs"') > html.index('data-panel="event-queue-lag"')

    back = await asyncio.to_thread(cli, "ui", "rollback", "failed-runs", "1")
    assert back.output == "failed-runs v3 stored\n", back.output
    history = await client.get("/v1/ui/components/failed-runs", headers=ADMIN)
    versions = (await history.json())["items"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[0]["spec"] == versions[2]["spec"]
    assert versions[0]["spec"]["limit"] == 5

    # A viewer may read components but not change them; a bad spec changes nothing.
    cookie = client.session.cookie_jar
    refused = await client.put(
        "/v1/ui/components/mine", json={"kind": "table", "spec": {"title": "x", "view": "x"}}
    )
    assert refused.status == 403
    cookie.clear()
    bad = await client.put(
        "/v1/ui/components/mine",
        json={"kind": "table", "spec": {"title": "x", "view": "observability_logs"}},
        headers=ADMIN,
    )
    assert bad.status == 400
    assert "view must be one of" in (await bad.json())["detail"]
    kind = await client.put(
        "/v1/ui/components/failed-runs",
        json={"kind": "chart", "spec": {"title": "x", "view": "workflow_runs", "x": "a", "y": "b"}},
        headers=ADMIN,
    )
    assert kind.status == 409


async def test_integrations_show_their_health_to_a_reader(
    client: TestClient[Any, Any], migrated_database: str
) -> None:
    from plait.integration import repository as integrations

    await _runs(migrated_database, "shop", 1)  # a definition: the namespace is known
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        await integrations.upsert_integration(
            conn,
            "shop",
            "github",
            integration_type="http",
            settings={"baseUrl": "https://example.org"},
            secret_name=None,
            spec={"type": "http", "settings": {"baseUrl": "https://example.org"}},
        )
        assert await integrations.record_health(
            conn,
            "shop",
            "github",
            checked_at=dt.datetime.now(dt.UTC),
            healthy=False,
            latency_seconds=0.25,
            error=f"HTTP 503 {HOSTILE}",
        )
    await _sign_in(client, "vic")
    html = await (await client.get("/ui/integrations")).text()
    row = html[html.index('data-integration="shop/github"') :].split("</tr>")[0]
    assert "unhealthy" in row
    assert "HTTP 503 &lt;script&gt;alert(1)&lt;/script&gt;" in row
    assert "250 ms" in row
