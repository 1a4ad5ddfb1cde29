"""Health checks run by the real operator: an Integration with ``spec.healthCheck`` gets its
``Healthy`` condition, ``lastCheckedTime`` and ``health`` on its status, and the result in
its row; a key removed from its Secret turns it unhealthy with a reason of its own."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import psycopg
import pytest

from tests.controller.test_operator import condition, wait_condition
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

TOKEN = "tok-" + uuid.uuid4().hex


class _GitHub(BaseHTTPRequestHandler):
    """``GET /rate_limit``: 200 with the right token, else 401 (as GitHub answers)."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(f"{self.path} {self.headers.get('Authorization')}")
        ok = self.path == "/rate_limit" and self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = json.dumps({"resources": {}} if ok else {"message": "Bad credentials"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def github() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GitHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_operator_checks_an_integration_and_reports_it(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    github: str,
) -> None:
    kube.kubectl("create", "secret", "generic", "gh", f"--from-literal=token={TOKEN}")
    integration = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "repo"},
        "spec": {
            "type": "github",
            "settings": {"apiUrl": github, "allowInternal": True},
            "secretRef": {"name": "gh"},
            "healthCheck": {"intervalSeconds": 10, "timeoutSeconds": 5},
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(integration))
    start_operator()
    healthy = wait_condition(kube, "integrations", "repo", "Healthy", "True")
    assert condition(healthy, "Healthy")["reason"] == "CheckSucceeded"
    assert healthy["status"]["lastCheckedTime"].endswith("Z")
    assert healthy["status"]["health"]["latencySeconds"] < 5
    assert "error" not in healthy["status"]["health"]
    assert _GitHub.seen[0] == f"/rate_limit Bearer {TOKEN}"
    with psycopg.connect(migrated_database) as conn:
        row = conn.execute(
            "SELECT healthy, health_error, health_checked_at IS NOT NULL "
            "FROM integration_service.integration_instances WHERE name = 'repo'"
        ).fetchone()
    assert row == (True, None, True)

    kube.kubectl(
        "patch", "secret", "gh", "--type=json", "-p", '[{"op": "remove", "path": "/data/token"}]'
    )
    kube.kubectl("patch", "secret", "gh", "-p", '{"stringData": {"other": "x"}}')
    sick = wait_condition(kube, "integrations", "repo", "Healthy", "False", timeout=40)
    assert {k: condition(sick, "Healthy")[k] for k in ("reason", "message")} == {
        "reason": "SecretKeyMissing",
        "message": "Secret 'gh' has no key 'token'",
    }
    assert sick["status"]["health"]["error"] == "Secret 'gh' has no key 'token'"
    assert condition(sick, "Ready")["status"] == "True"  # stored and usable; only unhealthy
    assert TOKEN not in json.dumps(sick)
