"""examples/github-to-slack as it is (only the API URLs pointed at a server on loopback that
plays GitHub and Slack): a signed push to main starts the build, and its exit task posts
the outcome to Slack with the bot token; a push to another branch starts nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.api.webhooks import WEBHOOK_SECRETS, KubernetesSecrets
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.resources.validation import check_resource
from plait.testing._process import wait_until
from tests.controller.test_operator import wait_condition
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import wait_phase

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "github-to-slack" / "github-push-slack.yaml"
PUSH = json.loads((Path(__file__).parent / "data" / "github_push.json").read_text())
GITHUB_TOKEN = "ghp-" + uuid.uuid4().hex
HOOK_SECRET = "whs-" + uuid.uuid4().hex
SLACK_TOKEN = "xoxb-" + uuid.uuid4().hex


class _Services(BaseHTTPRequestHandler):
    """GitHub's /rate_limit and Slack's chat.postMessage, checking the tokens."""

    posted: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        ok = self.headers.get("Authorization") == f"Bearer {GITHUB_TOKEN}"
        self._reply(200 if ok else 401, {})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posted.append((self.headers.get("Authorization", ""), body))
        self._reply(200, {"ok": self.headers.get("Authorization") == f"Bearer {SLACK_TOKEN}"})

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def services() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Services)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _example(url: str) -> list[dict[str, Any]]:
    objects = list(yaml.safe_load_all(EXAMPLE.read_text()))
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def lookup(kind: str, name: str) -> Any:
        found = by_name.get((kind, name))
        return found["spec"] if found else None

    for obj in objects:
        assert check_resource(obj, lookup) == [], obj["metadata"]["name"]
    by_name[("Integration", "github")]["spec"]["settings"].update(apiUrl=url, allowInternal=True)
    by_name[("Integration", "slack")]["spec"]["settings"].update(apiUrl=url, allowInternal=True)
    build = by_name[("WorkflowDefinition", "build-on-push")]["spec"]["tasks"][0]
    build["template"]["podMetadata"] = {  # kwok runs no container: what it would report
        "annotations": {"sim.plait.dev/exit-code": "0",
                        "sim.plait.dev/message": '{"built": true}'}
    }  # fmt: skip
    return objects


def _signed(payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": f"sha256={digest}",
    }


async def test_a_push_to_main_builds_and_slack_hears_how_it_went(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    component_dsns: dict[str, str],
    services: str,
) -> None:
    kube.kubectl("create", "secret", "generic", "github",
                 f"--from-literal=token={GITHUB_TOKEN}",
                 f"--from-literal=webhookSecret={HOOK_SECRET}")  # fmt: skip
    kube.kubectl("create", "secret", "generic", "slack", f"--from-literal=token={SLACK_TOKEN}")
    items = _example(services)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}))  # fmt: skip
    start_operator()
    await asyncio.to_thread(wait_condition, kube, "integrations", "github", "Healthy", "True")

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
    commit = "7f0c1a3e9b2d4c6a8e0f1b3d5c7a9e1f2b4d6c8a"
    try:
        async with TestClient(TestServer(app)) as client:
            url = f"/v1/namespaces/{kube.namespace}/webhooks/github"
            for ref in ("refs/heads/feature", "refs/heads/main"):
                body, headers = _signed({**PUSH, "ref": ref, "after": commit})
                answer = await client.post(url, data=body, headers=headers)
                assert answer.status == 202, await answer.text()
    finally:
        reader.close()
        await database.close()

    def runs() -> list[str]:
        return kube.kubectl("get", "wfi", "-o", "jsonpath={.items[*].metadata.name}").split()

    await asyncio.to_thread(wait_until, lambda: bool(runs()), timeout=60, what="a run")
    [run] = runs()  # the push to another branch was filtered out
    status = await asyncio.to_thread(wait_phase, kube, run)
    assert status["phase"] == "Succeeded", status
    assert _Services.posted == [
        (
            f"Bearer {SLACK_TOKEN}",
            {
                "channel": "#builds",
                "text": f"build of Codertocat/Hello-World at {commit}: Succeeded",
            },
        )
    ]
