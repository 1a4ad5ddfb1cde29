"""Runs over the JSON API on a real PostgreSQL (no cluster): the dashboard's keyset pages
and filters, label selector errors, who may read which namespace, and a run's tasks paged
with their latest attempts."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.auth.secrets import SecretKey
from plait.auth.settings import AuthSettings
from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.workflow_orchestrator import repository as orchestrator

ADMIN_TOKEN = "admin-" + secrets.token_hex(12)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PHASES = ("Pending", "Running", "Succeeded", "Failed")


@dataclass
class RunsApi:
    client: TestClient[Any, Any]
    dsn: str

    async def get(self, path: str, headers: dict[str, str] = ADMIN) -> tuple[int, Any]:
        resp = await self.client.get(path, headers=headers)
        return resp.status, json.loads(await resp.text())

    async def all_pages(self, path: str, headers: dict[str, str] = ADMIN) -> list[str]:
        """Every run's name the list gives, following ``nextCursor`` to the end."""
        names: list[str] = []
        cursor: str | None = None
        while True:
            sep = "&" if "?" in path else "?"
            url = path + (f"{sep}cursor={urllib.parse.quote(cursor)}" if cursor else "")
            status, page = await self.get(url, headers)
            assert status == 200, page
            names += [f"{r['namespace']}/{r['name']}" for r in page["items"]]
            cursor = page["nextCursor"]
            if cursor is None:
                return names


async def _token(
    client: TestClient[Any, Any], username: str, body: dict[str, Any]
) -> dict[str, str]:
    resp = await client.post("/v1/auth/users", json={"username": username, **body}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/v1/auth/users/{username}/tokens", json={"name": "tests"}, headers=ADMIN
    )
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def runs_api(
    migrated_database: str, component_dsns: dict[str, str]
) -> AsyncIterator[RunsApi]:
    database = await Database.open(
        Settings(database_url=SecretStr(component_dsns["auth"]), database_pool_min=0),
        COMPONENTS,
        environ={f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS},
    )
    settings = AuthSettings(key=SecretKey(secrets.token_bytes(32)), cookie_secure=False)
    config = ApiConfig(tokens=TokenStore([ADMIN_TOKEN]), auth=settings)
    try:
        async with TestClient(TestServer(build_app(database, config))) as client:
            yield RunsApi(client, migrated_database)
    finally:
        await database.close()


async def _runs(dsn: str, namespace: str, n: int, *, same_second: int = 1) -> list[str]:
    """``n`` runs of definition ``shop`` in ``namespace`` (and of ``books`` for every
    third), phases in turn, label ``team=t<i % 3>`` and ``tier`` on even ones;
    ``same_second`` runs share each creation time (the keyset's id breaks the tie)."""
    names = []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        spec = {"tasks": [{"name": "a", "template": {"image": "busybox"}}]}
        for definition in ("shop", "books"):
            await orchestrator.upsert_workflow_definition(conn, namespace, definition, spec)
        trigger, _ = await orchestrator.upsert_event_trigger(
            conn,
            namespace=namespace,
            name="nightly",
            spec={"schedule": {"cron": "0 3 * * *"}, "workflowRef": {"name": "shop"}},
        )
        for i in range(n):
            labels = {"team": f"t{i % 3}", **({"tier": "gold"} if i % 2 == 0 else {})}
            instance, _ = await orchestrator.create_workflow_instance(
                conn,
                id=uuid.uuid4(),
                namespace=namespace,
                name=f"run-{i}",
                workflow_name="books" if i % 3 == 2 else "shop",
                workflow_version=1,
                trigger_id=trigger.id if i % 5 == 0 else None,
                labels=labels,
            )
            created, phase = START + dt.timedelta(seconds=i // same_second), PHASES[i % 4]
            await conn.execute(
                "UPDATE workflow_orchestrator_service.workflow_instances SET created_at = %s, "
                "phase = %s, started_at = %s, finished_at = %s WHERE id = %s",
                (
                    created,
                    phase,
                    None if phase == "Pending" else created,
                    created + dt.timedelta(seconds=1) if phase in ("Succeeded", "Failed") else None,
                    instance.id,
                ),
            )
            names.append(f"{namespace}/run-{i}")
    return names


async def test_the_list_pages_by_keyset_with_no_duplicate_and_no_gap(runs_api: RunsApi) -> None:
    """230 runs, five to a second (the cursor must break ties by id), in two namespaces."""
    shop = await _runs(runs_api.dsn, "shop", 230, same_second=5)
    other = await _runs(runs_api.dsn, "other", 7)
    names = await runs_api.all_pages("/v1/namespaces/shop/runs?limit=17")
    assert len(names) == 230
    assert set(names) == set(shop)
    created = {n: int(n.rsplit("-", 1)[1]) // 5 for n in shop}
    assert [created[n] for n in names] == sorted(created.values(), reverse=True)

    everything = await runs_api.all_pages("/v1/runs?limit=500")
    assert sorted(everything) == sorted(shop + other)
    status, page = await runs_api.get("/v1/runs?limit=3")
    # The newest second holds run-225 to run-229 of shop (newer than any of other's).
    assert {r["name"] for r in page["items"]} <= {f"run-{i}" for i in range(225, 230)}
    status, first = await runs_api.get("/v1/namespaces/other/runs")
    assert status == 200
    run = first["items"][0]
    assert run == {
        "namespace": "other",
        "name": "run-6",
        "uid": run["uid"],
        "definition": "shop",
        "definitionVersion": 1,
        "phase": "Succeeded",
        "message": None,
        "labels": {"team": "t0", "tier": "gold"},
        "trigger": None,
        "createdAt": "2026-01-01T00:00:06Z",
        "startedAt": "2026-01-01T00:00:06Z",
        "finishedAt": "2026-01-01T00:00:07Z",
    }
    assert first["items"][1]["trigger"] == "nightly"  # run-5
    assert first["nextCursor"] is None


async def test_each_filter_gives_what_the_dashboard_gives(runs_api: RunsApi) -> None:
    await _runs(runs_api.dsn, "shop", 30)

    async def names(query: str) -> set[int]:
        found = await runs_api.all_pages(f"/v1/namespaces/shop/runs?limit=4&{query}")
        return {int(n.rsplit("-", 1)[1]) for n in found}

    every = set(range(30))
    assert await names("definition=books") == {i for i in every if i % 3 == 2}
    assert await names("phase=Failed") == {i for i in every if i % 4 == 3}
    assert await names("phase=Failed&phase=Pending") == {i for i in every if i % 4 in (0, 3)}
    assert await names("trigger=nightly") == {i for i in every if i % 5 == 0}
    assert await names("trigger=no-such-trigger") == set()
    assert await names("label=team%3Dt1") == {i for i in every if i % 3 == 1}
    assert await names("label=tier") == {i for i in every if i % 2 == 0}
    assert await names("label=team%3D%3Dt1,tier") == {i for i in every if i % 6 == 4}
    assert await names("label=team%3Dt1&label=tier") == {i for i in every if i % 6 == 4}
    assert await names("since=2026-01-01T00:00:10Z&until=2026-01-01T00:00:13Z") == {10, 11, 12}
    # A time without an offset is UTC, as on the dashboard.
    assert await names("since=2026-01-01T00:00:28") == {28, 29}
    assert await names("definition=shop&phase=Running&label=tier") == {
        i for i in every if i % 3 != 2 and i % 4 == 1 and i % 2 == 0
    }


async def test_bad_filters_limits_and_cursors_are_refused_saying_which(runs_api: RunsApi) -> None:
    await _runs(runs_api.dsn, "shop", 3)
    base = "/v1/namespaces/shop/runs"
    for query, path, said in (
        ("label=team!%3Dt1", "label", "only key=value and key (the label is set) are supported"),
        ("label=Bad%20Key%3Dx", "label", "is not a Kubernetes label key"),
        ("label=team%3Dnot%20a%20value", "label", "is not a Kubernetes label value"),
        ("phase=Sleeping", "phase", "Pending"),
        ("limit=0", "limit", "greater than or equal to 1"),
        ("limit=501", "limit", "less than or equal to 500"),
        ("limit=ten", "limit", "integer"),
        ("cursor=zzz", "cursor", "not a cursor of this list (it does not decode)"),
        ("since=yesterday", "since", "must be a date and time (ISO 8601), got 'yesterday'"),
        ("until=0.5", "until", "must be a date and time (ISO 8601), got '0.5'"),
        ("until=", "until", "must be a date and time (ISO 8601), got ''"),
        ("phase=", "phase", "Pending"),
        ("definition=Not%20A%20Name", "definition", "String should match pattern"),
        ("label=a&label=b&label=c&label=d&label=e", "label", "at most 4 items"),
    ):
        status, body = await runs_api.get(f"{base}?{query}")
        assert status == 400, (query, body)
        assert body["errors"][0]["path"] == path, (query, body)
        assert said in body["detail"], (query, body)
    status, body = await runs_api.get("/v1/namespaces/Not_A_Namespace/runs")
    assert (status, body["errors"][0]["path"]) == (400, "namespace")


async def test_a_grant_in_one_namespace_reads_only_it(runs_api: RunsApi) -> None:
    await _runs(runs_api.dsn, "shop", 3)
    books = await _runs(runs_api.dsn, "books", 2)
    bo = await _token(runs_api.client, "bo", {"grants": [{"role": "viewer", "namespace": "books"}]})
    assert sorted(await runs_api.all_pages("/v1/runs", bo)) == sorted(books)
    assert len(await runs_api.all_pages("/v1/namespaces/books/runs", bo)) == 2
    for path in ("/v1/namespaces/shop/runs", "/v1/namespaces/shop/runs/run-1"):
        status, body = await runs_api.get(path, bo)
        assert status == 403, body
        assert body["permission"] == "instances:read"
    status, body = await runs_api.get("/v1/namespaces/books/runs/run-1", bo)
    assert status == 200, body
    status, body = await runs_api.get("/v1/runs", {})
    assert status == 401, body
    # A user with no grant that reads runs is refused the cross-namespace list too.
    nobody = await _token(runs_api.client, "nobody", {"roles": []})
    status, body = await runs_api.get("/v1/runs", nobody)
    assert status == 403, body


async def test_a_run_gives_its_tasks_latest_attempts_a_page_at_a_time(runs_api: RunsApi) -> None:
    tasks = [{"name": f"t{i:03}", "template": {"image": "busybox"}} for i in range(250)]
    run_id = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(runs_api.dsn, autocommit=True) as conn:
        await orchestrator.upsert_workflow_definition(conn, "shop", "wide", {"tasks": tasks})
        await orchestrator.create_workflow_instance(
            conn,
            id=run_id,
            namespace="shop",
            name="wide-run",
            workflow_name="wide",
            workflow_version=1,
            inputs={"size": 250},
        )
        rows: list[tuple[str, int, str, int | None, str | None, str | None, Any]]
        rows = [(f"t{i:03}", 1, "Succeeded", 0, None, None, {"n": i}) for i in range(1, 120)]
        # t000 failed once, then its retry is running.
        rows += [
            ("t000", 1, "Failed", 3, "Failure", "exit code 3", None),
            ("t000", 2, "Running", None, None, None, None),
            ("t120", 1, "Failed", 3, "Failure", "exit code 3", None),
        ]
        # Attempts as they end up, written without walking their state machine (as the
        # operator would, one transition at a time).
        await conn.execute("SET session_replication_role = replica")
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO task_execution_service.task_instances (namespace, "
                "workflow_instance_id, task_name, attempt, job_name, state, exit_code, "
                "failure_cause, message, outputs, started_at, finished_at) "
                "VALUES ('shop', %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), "
                "CASE WHEN %s THEN now() END)",
                [
                    (
                        run_id,
                        t,
                        a,
                        f"wide-run-{t}-{a}",
                        s,
                        code,
                        cause,
                        msg,
                        Jsonb(out) if out else None,
                        s != "Running",
                    )
                    for t, a, s, code, cause, msg, out in rows
                ],
            )
    base = "/v1/namespaces/shop/runs/wide-run"
    status, first = await runs_api.get(base)
    assert status == 200, first
    assert (first["name"], first["uid"], first["inputs"]) == (
        "wide-run",
        str(run_id),
        {"size": 250},
    )
    assert (first["tasksTotal"], len(first["tasks"]), first["nextTasksFrom"]) == (250, 100, 100)
    t000 = first["tasks"][0]
    assert (t000["name"], t000["state"], t000["kind"]) == ("t000", "Running", "container")
    assert [(a["attempt"], a["state"]) for a in t000["attempts"]] == [(2, "Running")]
    assert first["tasks"][1]["attempts"][0] | {
        "createdAt": None,
        "startedAt": None,
        "finishedAt": None,
    } == {
        "task": "t001",
        "attempt": 1,
        "state": "Succeeded",
        "createdAt": None,
        "startedAt": None,
        "finishedAt": None,
        "exitCode": 0,
        "failureCause": None,
        "message": None,
        "outputs": {"n": 1},
    }

    status, failed = await runs_api.get(f"{base}?tasks_from=120&tasks_limit=1")
    assert [t["name"] for t in failed["tasks"]] == ["t120"]
    assert failed["nextTasksFrom"] == 121
    attempt = failed["tasks"][0]["attempts"][0]
    assert (attempt["state"], attempt["exitCode"], attempt["failureCause"]) == (
        "Failed",
        3,
        "Failure",
    )
    assert attempt["message"] == "exit code 3"
    assert attempt["finishedAt"] is not None

    seen: list[str] = []
    start: int | None = 0
    while start is not None:
        status, page = await runs_api.get(f"{base}?tasks_limit=60&tasks_from={start}")
        assert status == 200, page
        assert len(page["tasks"]) <= 60
        seen += [t["name"] for t in page["tasks"]]
        start = page["nextTasksFrom"]
    assert seen == [t["name"] for t in tasks]
    status, last = await runs_api.get(f"{base}?tasks_from=200")
    assert [t["state"] for t in last["tasks"]] == ["Planned"] * 50
    assert all(t["attempts"] == [] for t in last["tasks"])

    for query, said in (
        ("tasks_from=250", "tasks_from must be between 0 and 249 (the run has 250 tasks)"),
        ("tasks_from=-1", "greater than or equal to 0"),
        ("tasks_limit=501", "less than or equal to 500"),
    ):
        status, body = await runs_api.get(f"{base}?{query}")
        assert status == 400, body
        assert said in body["detail"], body
    status, body = await runs_api.get("/v1/namespaces/shop/runs/no-such-run")
    assert status == 404, body
    assert body["detail"].startswith("no run 'no-such-run' is recorded in namespace 'shop'")


async def test_without_the_runs_databases_the_routes_answer_503(
    migrated_database: str, component_dsns: dict[str, str]
) -> None:
    names = ("auth", "event_processing")
    database = await Database.open(
        Settings(database_url=SecretStr(component_dsns["auth"]), database_pool_min=0),
        [component_by_name(n) for n in names],
        environ={
            f"PLAIT_DATABASE_URL_{component_by_name(n).env_suffix}": component_dsns[n]
            for n in names
        },
    )
    config = ApiConfig(tokens=TokenStore([ADMIN_TOKEN]))
    try:
        async with TestClient(TestServer(build_app(database, config))) as client:
            for path in ("/v1/runs", "/v1/namespaces/shop/runs", "/v1/namespaces/shop/runs/a"):
                resp = await client.get(path, headers=ADMIN)
                body = await resp.json()
                assert resp.status == 503, body
                assert "workflow_orchestrator" in body["detail"], body
    finally:
        await database.close()
