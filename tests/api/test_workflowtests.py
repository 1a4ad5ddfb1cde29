"""WorkflowTests over the API: listing tests with their last run, a test's runs, a run's
case results, and starting a run (the Pending row ``plait test run NAME`` makes, requested
by ``api``), on a real PostgreSQL; the results route against a run the operator carried
out in the local cluster."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.auth.secrets import SecretKey
from plait.auth.settings import AuthSettings
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.testing._process import wait_until
from plait.testing_framework import repository
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

ADMIN_TOKEN = "admin-" + secrets.token_hex(12)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: A mock's failure message that must come back as the text it is, never as markup.
HOSTILE = "<img src=x onerror=alert(1)> broke"


def _sim() -> dict[str, Any]:
    """A container kwok simulates (it never runs here: every task is mocked)."""
    return {
        "image": "busybox",
        "podMetadata": {
            "annotations": {"sim.plait.dev/exit-code": "0", "sim.plait.dev/duration": "0s"}
        },
    }


WORKFLOW = {
    "apiVersion": "plait.dev/v1alpha1",
    "kind": "WorkflowDefinition",
    "metadata": {"name": "checkout"},
    "spec": {
        "tasks": [
            {"name": "charge", "template": _sim()},
            {"name": "receipt", "dependencies": ["charge"], "template": _sim()},
        ]
    },
}
TEST = {
    "apiVersion": "plait.dev/v1alpha1",
    "kind": "WorkflowTest",
    "metadata": {"name": "checkout"},
    "spec": {
        "workflowRef": {"name": "checkout"},
        "cases": [
            {
                "name": "charges-then-sends-a-receipt",
                "mocks": {"charge": {"outputs": {"amount": 12}}, "receipt": {}},
                "expect": {
                    "phase": "Succeeded",
                    "order": ["charge", "receipt"],
                    "tasks": {"charge": {"outputs": {"amount": 12}}},
                },
            },
            {
                "name": "expects-a-charge-that-fails",
                "mocks": {"charge": {"exitCode": 3, "message": HOSTILE}, "receipt": {}},
                "expect": {
                    "phase": "Succeeded",
                    "tasks": {"receipt": {"state": "Succeeded"}},
                },
            },
        ],
    },
}


@dataclass
class TestsApi:
    """The in-process API (testing_framework as its component role) and its users."""

    __test__ = False

    client: TestClient[Any, Any]
    dsn: str
    editor: dict[str, str]
    viewer: dict[str, str]

    async def call(
        self, method: str, path: str, headers: dict[str, str], **kw: Any
    ) -> tuple[int, Any, Any]:
        resp = await self.client.request(method, path, headers=headers, **kw)
        text = await resp.text()
        return resp.status, json.loads(text) if text else None, resp.headers

    async def runs(self, namespace: str, test: str) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cur = await conn.execute(
                "SELECT id, status, requested_by, test_version, workflow_version "
                "FROM testing_framework_service.test_runs WHERE namespace = %s "
                "AND test_name = %s ORDER BY created_at",
                (namespace, test),
            )
            return await cur.fetchall()


async def _token(client: TestClient[Any, Any], username: str, role: str) -> dict[str, str]:
    body = {"username": username, "roles": [role]}
    resp = await client.post("/v1/auth/users", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    resp = await client.post(
        f"/v1/auth/users/{username}/tokens", json={"name": "tests"}, headers=ADMIN
    )
    assert resp.status == 201, await resp.text()
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


@pytest.fixture
async def tests_api(
    migrated_database: str, component_dsns: dict[str, str]
) -> AsyncIterator[TestsApi]:
    names = ("auth", "event_processing", "testing_framework")
    database = await Database.open(
        Settings(database_url=SecretStr(component_dsns["auth"]), database_pool_min=0),
        [component_by_name(n) for n in names],
        environ={
            f"PLAIT_DATABASE_URL_{component_by_name(n).env_suffix}": component_dsns[n]
            for n in names
        },
    )
    settings = AuthSettings(key=SecretKey(secrets.token_bytes(32)), cookie_secure=False)
    config = ApiConfig(tokens=TokenStore([ADMIN_TOKEN]), auth=settings)
    try:
        async with TestClient(TestServer(build_app(database, config))) as client:
            yield TestsApi(
                client,
                migrated_database,
                editor=await _token(client, "ada", "editor"),
                viewer=await _token(client, "vic", "viewer"),
            )
    finally:
        await database.close()


async def _store_test(dsn: str, namespace: str, spec: dict[str, Any]) -> None:
    """Store a WorkflowTest version as the operator does when it is applied (the function
    its handler calls); the cluster test below applies it for real."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await repository.upsert_test_definition(
            conn, namespace, "checkout", workflow_name="checkout", spec=spec
        )


async def test_a_run_started_over_the_api_is_the_pending_row_plait_test_run_makes(
    tests_api: TestsApi,
) -> None:
    """Only the request and read paths: no operator runs here, so the run stays Pending."""
    api = tests_api
    await _store_test(api.dsn, "shop", TEST["spec"])  # type: ignore[arg-type]
    base = "/v1/namespaces/shop/workflowtests"

    status, listed, _ = await api.call("GET", base, api.viewer)
    assert status == 200, listed
    assert listed == {
        "items": [
            {
                "namespace": "shop",
                "name": "checkout",
                "version": 1,
                "workflow": "checkout",
                "cases": 2,
                "lastRun": None,
            }
        ]
    }

    status, started, headers = await api.call("POST", f"{base}/checkout/runs", api.editor)
    assert status == 202, started
    run_id = started["id"]
    assert headers["Location"] == f"{base}/checkout/runs/{run_id}"
    assert (started["status"], started["requestedBy"], started["testVersion"]) == (
        "Pending",
        "api",
        1,
    )
    assert await api.runs("shop", "checkout") == [(uuid.UUID(run_id), "Pending", "api", 1, None)]
    # An empty JSON object is a request too (the body takes no options).
    status, again, _ = await api.call("POST", f"{base}/checkout/runs", api.editor, json={})
    assert status == 202, again

    status, listed, _ = await api.call("GET", base, api.viewer)
    assert listed["items"][0]["lastRun"]["id"] == again["id"]
    status, page, _ = await api.call("GET", f"{base}/checkout/runs?limit=1", api.viewer)
    assert status == 200, page
    assert [r["id"] for r in page["items"]] == [again["id"]]
    status, older, _ = await api.call(
        "GET", f"{base}/checkout/runs?limit=1&cursor={page['nextCursor']}", api.viewer
    )
    assert [r["id"] for r in older["items"]] == [run_id]
    assert older["nextCursor"] is None

    status, shown, _ = await api.call("GET", headers["Location"], api.viewer)
    assert status == 200, shown
    assert (shown["id"], shown["status"], shown["results"]) == (run_id, "Pending", [])


async def test_unknown_tests_bad_input_and_a_viewer_are_refused(tests_api: TestsApi) -> None:
    api = tests_api
    await _store_test(api.dsn, "shop", TEST["spec"])  # type: ignore[arg-type]
    base = "/v1/namespaces/shop/workflowtests"

    status, body, _ = await api.call("POST", f"{base}/no-such-test/runs", api.editor)
    assert status == 404, body
    assert body["detail"] == (
        "no WorkflowTest 'no-such-test' is stored in namespace 'shop': apply it "
        "(kubectl apply -f) and wait until it is Ready"
    )
    status, body, _ = await api.call("GET", f"{base}/no-such-test/runs", api.viewer)
    assert status == 404, body
    status, body, _ = await api.call("GET", f"{base}/checkout/runs/{uuid.uuid4()}", api.viewer)
    assert status == 404, body
    assert "WorkflowTest 'checkout' in namespace 'shop' has no run" in body["detail"]

    status, body, _ = await api.call("POST", f"{base}/Not_A_Name/runs", api.editor)
    assert status == 400, body
    assert body["errors"][0]["path"] == "name"
    status, body, _ = await api.call("GET", f"{base}/checkout/runs/42", api.viewer)
    assert (status, body["detail"]) == (400, "test run id '42' is not a UUID")
    status, body, _ = await api.call(
        "POST", f"{base}/checkout/runs", api.editor, json={"cases": ["one"]}
    )
    assert status == 400, body
    assert body["detail"] == "a run takes no options: send no body or {} (unknown field 'cases')"
    status, body, _ = await api.call("POST", f"{base}/checkout/runs", api.editor, data=b"{not json")
    assert status == 400, body
    assert body["detail"].startswith("the body is not valid JSON")
    status, body, _ = await api.call("GET", f"{base}/checkout/runs?limit=0", api.viewer)
    assert status == 400, body
    status, body, _ = await api.call("GET", f"{base}/checkout/runs?cursor=zzz", api.viewer)
    assert status == 400, body

    # A viewer reads results but may not start a run; nothing was stored by any of this.
    status, body, _ = await api.call("POST", f"{base}/checkout/runs", api.viewer)
    assert status == 403, body
    assert body["permission"] == "tests:run"
    assert await api.runs("shop", "checkout") == []


def _write(path: Path, *documents: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def _ready(kube: Kube, name: str) -> None:
    def ready() -> bool:
        obj = json.loads(kube.kubectl("get", "workflowtest", name, "-o", "json"))
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, timeout=60, what=f"WorkflowTest {name} to be Ready")


@pytest.mark.e2e
async def test_the_results_route_returns_what_the_operator_recorded(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    tests_api: TestsApi,
    tmp_path: Path,
) -> None:
    api, ns = tests_api, kube.namespace
    start_operator()
    kube.kubectl("apply", "-f", str(_write(tmp_path / "checkout.yaml", WORKFLOW, TEST)))
    await asyncio.to_thread(_ready, kube, "checkout")
    base = f"/v1/namespaces/{ns}/workflowtests/checkout/runs"
    status, started, headers = await api.call("POST", base, api.editor)
    assert status == 202, started

    async def ended() -> dict[str, Any]:
        for _ in range(240):
            status, run, _ = await api.call("GET", headers["Location"], api.viewer)
            assert status == 200, run
            if run["status"] not in ("Pending", "Running"):
                return dict(run)
            await asyncio.sleep(0.5)
        raise AssertionError(f"the run did not end: {run}")

    run = await ended()
    assert (run["status"], run["total"], run["passed"], run["failed"]) == ("Failed", 2, 1, 1)
    assert (run["requestedBy"], run["workflowVersion"]) == ("api", 1)
    assert run["message"] == "cases not passed: expects-a-charge-that-fails"

    # The route gives what test_case_results holds, in the test's case order.
    async with await psycopg.AsyncConnection.connect(api.dsn) as conn:
        cur = await conn.execute(
            "SELECT case_name, outcome, message, details FROM "
            "testing_framework_service.test_case_results WHERE test_run_id = %s",
            (started["id"],),
        )
        stored = {row[0]: row[1:] for row in await cur.fetchall()}
    assert [r["case"] for r in run["results"]] == [
        "charges-then-sends-a-receipt",
        "expects-a-charge-that-fails",
    ]
    for result in run["results"]:
        outcome, message, details = stored[result["case"]]
        assert (result["outcome"], result["message"]) == (outcome, message)
        assert result["mismatches"] == details["mismatches"]
        assert (result["phase"], result["failure"]) == (details["phase"], details.get("failure"))
    passed, failed = run["results"]
    assert (passed["outcome"], passed["mismatches"], passed["phase"]) == ("Passed", [], "Succeeded")
    assert passed["workflowInstance"] == f"checkout-{started['id'].replace('-', '')[:10]}-0"
    assert failed["outcome"] == "Failed"
    assert failed["mismatches"] == [
        {"path": "phase", "expected": "Succeeded", "actual": "Failed"},
        {"path": "tasks.receipt.state", "expected": "Succeeded", "actual": "Skipped"},
    ]
    assert HOSTILE in failed["failure"]
    # The instance the route names is the case's WorkflowInstance in the cluster.
    kube.kubectl("get", "workflowinstance", failed["workflowInstance"])

    status, listed, _ = await api.call("GET", f"/v1/namespaces/{ns}/workflowtests", api.viewer)
    assert listed["items"][0]["lastRun"]["status"] == "Failed"
