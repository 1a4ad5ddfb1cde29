"""From a signed GitHub push to a workflow run, and no secret value anywhere Plait writes.

The real operator (event dispatcher included) and the API application run against one
database and the test cluster: a GitHub Integration with a health check and a task that
lists it, an EventTrigger on ``com.github.push``, and a push delivered to the webhook route.
Then every row of every Plait schema, the operator's and the API's log records (spans are
rows of the observability schema) and every object in the namespace that Plait wrote are
searched for the Secret's values."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from psycopg import sql

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.api.webhooks import WEBHOOK_SECRETS, KubernetesSecrets
from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.testing._process import wait_until
from tests.controller.test_operator import wait_condition
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, jobs, task, wait_phase

PUSH = (Path(__file__).parent / "data" / "github_push.json").read_bytes()
TOKEN = "ghp-" + uuid.uuid4().hex
HOOK_SECRET = "whs-" + uuid.uuid4().hex


class _GitHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def github() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _apply(kube: Kube, *objects: dict[str, object]) -> None:
    items = [{"apiVersion": "plait.dev/v1alpha1", **o} for o in objects]
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}))  # fmt: skip


def _table_dump(dsn: str) -> str:
    """Every row of every table of every component schema, as JSON text."""
    parts = []
    with psycopg.connect(dsn) as conn:
        for component in COMPONENTS:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (component.schema,)
            ).fetchall()
            for (table,) in tables:
                query = sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                    sql.Identifier(component.schema), sql.Identifier(table)
                )
                parts += [row[0] for row in conn.execute(query).fetchall()]
    return "\n".join(parts)


def _objects_plait_wrote(kube: Kube) -> str:
    """Every object of the namespace but the Secret the test made, as JSON."""
    kinds = "workflowdefinitions,workflowinstances,eventtriggers,integrations,jobs,pods,events"
    objects = json.loads(kube.kubectl("get", kinds, "-o", "json"))["items"]
    secrets = json.loads(kube.kubectl("get", "secrets", "-o", "json"))["items"]
    objects += [s for s in secrets if s["metadata"]["name"] != "gh"]
    return json.dumps(objects)


async def test_a_signed_push_starts_a_run_and_no_secret_value_is_written_anywhere(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    component_dsns: dict[str, str],
    github: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    kube.kubectl(
        "create", "secret", "generic", "gh",
        f"--from-literal=token={TOKEN}", f"--from-literal=webhookSecret={HOOK_SECRET}",
    )  # fmt: skip
    build = task("build", outputs={"built": True}, inputs={"commit": "params.commit"})
    build["template"]["integrations"] = [{"name": "repo"}]
    _apply(
        kube,
        {
            "kind": "Integration",
            "metadata": {"name": "repo"},
            "spec": {
                "type": "github",
                "settings": {"apiUrl": github, "owner": "Codertocat", "allowInternal": True},
                "secretRef": {"name": "gh"},
                "healthCheck": {"intervalSeconds": 10, "timeoutSeconds": 5},
            },
        },
        {
            "kind": "WorkflowDefinition",
            "metadata": {"name": "build"},
            "spec": {
                "parameters": [{"name": "commit", "type": "string"}],
                "tasks": [build],
                "onExit": {  # the operator itself sends the token
                    "name": "check",
                    "http": {
                        "integration": "repo",
                        "path": "'/rate_limit'",
                        "successCondition": "response.status == 200",
                    },
                },
            },
        },
        {
            "kind": "EventTrigger",
            "metadata": {"name": "on-push"},
            "spec": {
                "eventType": "com.github.push",
                "filter": "event.subject == 'Codertocat/Hello-World'",
                "workflowRef": {"name": "build"},
                "arguments": {"commit": "event.data.before"},
            },
        },
    )
    operator = start_operator()
    await asyncio.to_thread(wait_condition, kube, "integrations", "repo", "Healthy", "True")

    database = await Database.open(
        Settings(database_url=component_dsns["event_processing"], database_pool_min=1),
        list(map(component_by_name, ("event_processing", "integration", "auth"))),
        environ={
            "PLAIT_DATABASE_URL_AUTH": component_dsns["auth"],
            "PLAIT_DATABASE_URL_INTEGRATION": component_dsns["integration"],
        },
    )
    app = build_app(database, ApiConfig(tokens=TokenStore(["t"])))
    reader = KubernetesSecrets(str(kube.kubeconfig))
    app[WEBHOOK_SECRETS] = reader
    signature = hmac.new(HOOK_SECRET.encode(), PUSH, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={signature}",
    }
    try:
        async with TestClient(TestServer(app)) as client:
            url = f"/v1/namespaces/{kube.namespace}/webhooks/repo"
            answer = await client.post(url, data=PUSH, headers=headers)
            assert answer.status == 202, await answer.text()
            forged = await client.post(
                url, data=PUSH, headers={**headers, "X-Hub-Signature-256": "sha256=00"}
            )
            assert forged.status == 401
    finally:
        reader.close()
        await database.close()

    def started() -> str:
        names = kube.kubectl("get", "wfi", "-o", "jsonpath={.items[*].metadata.name}").split()
        return names[0] if names else ""

    await asyncio.to_thread(wait_until, started, timeout=60, what="the run the push started")
    run = started()
    status = await asyncio.to_thread(wait_phase, kube, run)
    assert status["phase"] == "Succeeded", status
    states = {r[0]: r[2] for r in attempts(migrated_database, run)}
    assert states == {"build": "Succeeded", "check": "Succeeded"}
    [job] = jobs(kube).values()
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["PLAIT_INPUT_COMMIT"] == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert env["PLAIT_INTEGRATION_REPO_OWNER"] == "Codertocat"

    operator.stop()
    written = {
        "tables": _table_dump(migrated_database),
        "operator log": operator.log.read_text(errors="replace"),
        "API log records": "\n".join(r.getMessage() for r in caplog.records),
        "Kubernetes objects": _objects_plait_wrote(kube),
    }
    assert "com.github.push" in written["tables"]  # the dump holds what happened
    with psycopg.connect(migrated_database) as conn:
        spans = conn.execute(
            "SELECT count(*) FROM observability_service.observability_traces"
        ).fetchone()
    assert spans is not None
    assert spans[0] > 0  # spans are rows of the dump
    assert "refused" in written["API log records"]  # the forged delivery was logged
    for where, text in written.items():
        for value in (TOKEN, HOOK_SECRET):
            assert value not in text, f"a secret value is in the {where}"
