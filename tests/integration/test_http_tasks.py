"""Tasks of kind http, run by the real operator against a server on loopback that records
every request: the exact request (method, path, headers, credentials, body), outputs from
the response, the guard against internal addresses, and an operator killed while a request
is in flight (sent again only when the task is idempotent)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from plait.admission.access import needs
from plait.errors import ValidationError
from plait.integration.guard import internal_reason
from plait.resources.validation import parse_spec
from plait.testing._process import wait_until
from plait.workflow_orchestrator.http_tasks import LOST_MESSAGE
from tests.controller.test_operator import wait_condition
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, jobs, task, wait_phase

TOKEN = "tok-" + uuid.uuid4().hex


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                recorder.requests.append(
                    {"method": self.command, "path": self.path, "body": body,
                     "headers": {k.lower(): v for k, v in self.headers.items()}}
                )  # fmt: skip
                if self.path.startswith("/slow"):
                    recorder.release.wait(60)
                status, answer = (201, {"id": 7, "ok": True})
                if self.path.startswith("/broken"):
                    status, answer = 500, {"error": "down"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *_: object) -> None:
                pass

        return Handler


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    threading.Thread(target=rec.server.serve_forever, daemon=True).start()
    yield rec
    rec.release.set()
    rec.server.shutdown()
    rec.server.server_close()


def test_internal_addresses_are_named() -> None:
    assert internal_reason("127.0.0.1") == "a loopback address"
    assert internal_reason("169.254.169.254") == "a link-local address (cloud metadata lives there)"
    assert internal_reason("::ffff:127.0.0.1") == "a loopback address"
    assert internal_reason("fd00:ec2::254") == "a cloud metadata address"
    assert internal_reason("10.0.0.1") is None
    assert internal_reason("140.82.112.3") is None


def _integrations(kube: Kube, url: str) -> None:
    kube.kubectl("create", "secret", "generic", "api", f"--from-literal=token={TOKEN}")
    items = [
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "Integration",
            "metadata": {"name": name},
            "spec": {
                "type": "http",
                "settings": {"baseUrl": url, **extra},
                "secretRef": {"name": "api"},
            },
        }
        for name, extra in (("api", {"allowInternal": True}), ("guarded", {}))
    ]
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                       "items": items}))  # fmt: skip
    for name in ("api", "guarded"):
        wait_condition(kube, "integrations", name, "Ready", "True")


def _workflow(kube: Kube, name: str, tasks: list[dict[str, Any]]) -> None:
    objects = [
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": name},
            "spec": {"parameters": [{"name": "who", "type": "string", "default": "ada"}],
                     "tasks": tasks, "outputs": {"id": "tasks.notify.outputs.id"}
                     if any(t["name"] == "notify" for t in tasks) else {}},
        },
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowInstance",
            "metadata": {"name": f"{name}-run"},
            "spec": {"workflowRef": {"name": name}},
        },
    ]  # fmt: skip
    kube.kubectl("apply", "-f", "-", input=json.dumps(objects[0]))
    kube.kubectl("create", "-f", "-", input=json.dumps(objects[1]))


NOTIFY = {
    "name": "notify",
    "inputs": {"who": "params.who"},
    "http": {
        "integration": "api",
        "method": "POST",
        "path": "'/hooks/' + inputs.who",
        "headers": {"X-Run": "'run-' + inputs.who"},
        "body": "{'text': 'hello ' + inputs.who, 'n': 3}",
        "successCondition": "response.status == 201 && response.body.ok",
        "outputs": {"id": "response.body.id", "status": "response.status"},
    },
}


def test_an_http_task_sends_the_exact_request_and_its_outputs_flow_on(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    recorder: Recorder,
) -> None:
    start_operator()
    _integrations(kube, recorder.url)
    refused = {**NOTIFY, "name": "guarded", "http": {**NOTIFY["http"], "integration": "guarded"}}
    broken = {**NOTIFY, "name": "broken", "http": {**NOTIFY["http"], "path": "'/broken'"}}
    _workflow(kube, "hooks", [NOTIFY, refused, broken])
    status = wait_phase(kube, "hooks-run")
    assert status["phase"] == "Failed"
    assert jobs(kube) == {}  # no Pod, no Job
    rows = {r[0]: r for r in attempts(migrated_database, "hooks-run")}
    assert rows["notify"][2:5] == ("Succeeded", None, {"id": 7, "status": 201})
    assert rows["notify"][5] == f"POST {recorder.url}/hooks/ada answered 201"
    assert rows["guarded"][2] == "Failed"
    assert rows["guarded"][5] == (
        "refused: 127.0.0.1 is a loopback address; the Integration does not allow internal "
        "addresses (allowInternal)"
    )
    assert rows["broken"][2] == "Failed"
    assert rows["broken"][5] == f'POST {recorder.url}/broken answered 500: {{"error": "down"}}'
    sent = [r for r in recorder.requests if r["path"] == "/hooks/ada"]
    assert len(sent) == 1
    [request] = sent
    assert request["method"] == "POST"
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["x-run"] == "run-ada"
    assert request["headers"]["content-type"] == "application/json; charset=utf-8"
    assert json.loads(request["body"]) == {"text": "hello ada", "n": 3}
    assert [r["path"] for r in recorder.requests if r["path"] != "/hooks/ada"] == ["/broken"]


@pytest.mark.parametrize("idempotent", [False, True])
def test_an_operator_killed_during_a_request(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    recorder: Recorder,
    idempotent: bool,
) -> None:
    operator = start_operator()
    _integrations(kube, recorder.url)
    slow = {
        "name": "slow",
        "http": {"integration": "api", "method": "PUT", "path": "'/slow'",
                 "idempotent": idempotent},
    }  # fmt: skip
    _workflow(kube, "crash", [slow])
    wait_until(lambda: len(recorder.requests) == 1, timeout=60, what="the request to arrive")
    operator.kill()
    recorder.release.set()  # the server answers, but nobody is there any more
    start_operator()
    status = wait_phase(kube, "crash-run")
    [row] = attempts(migrated_database, "crash-run")
    if idempotent:
        assert status["phase"] == "Succeeded"
        assert row[2] == "Succeeded"
        assert [r["path"] for r in recorder.requests] == ["/slow", "/slow"]
    else:
        assert status["phase"] == "Failed"
        assert (row[1], row[2], row[5]) == (1, "Failed", LOST_MESSAGE)
        assert [r["path"] for r in recorder.requests] == ["/slow"]


def test_its_author_needs_use_on_the_integration_and_bad_cel_is_refused() -> None:
    spec = {"tasks": [NOTIFY], "onExit": {"name": "z", "http": {"integration": "chat"}}}
    assert [(n.path, n.permission()) for n in needs(parse_spec("WorkflowDefinition", spec))] == [
        ("spec.tasks[0].http.integration", "use integrations.plait.dev/api"),
        ("spec.onExit.http.integration", "use integrations.plait.dev/chat"),
    ]
    bad = {"tasks": [{"name": "a", "http": {"integration": "api", "body": "inputs.("}}]}
    with pytest.raises(ValidationError, match=r"http\.body: "):
        parse_spec("WorkflowDefinition", bad)
    both = {"tasks": [{"name": "a", "http": {"integration": "api"}, "template": {"image": "x"}}]}
    with pytest.raises(ValidationError, match="exactly one of taskRef, template, waitForEvent"):
        parse_spec("WorkflowDefinition", both)


def test_a_workflow_notifies_slack_of_its_outcome_from_its_exit_task(
    plait_crds: KubeCluster,
    kube: Kube,
    start_operator: StartOperator,
    migrated_database: str,
    recorder: Recorder,
) -> None:
    start_operator()
    _integrations(kube, recorder.url)
    chat = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "chat"},
        "spec": {
            "type": "slack",
            "settings": {"apiUrl": recorder.url + "/api", "defaultChannel": "#ci",
                         "allowInternal": True},
            "secretRef": {"name": "api"},
        },
    }  # fmt: skip
    kube.kubectl("apply", "-f", "-", input=json.dumps(chat))
    wait_condition(kube, "integrations", "chat", "Ready", "True")
    notify = {
        "name": "notify",
        "inputs": {"phase": "workflow.phase", "who": "params.who"},
        "http": {
            "integration": "chat",
            "method": "POST",
            "path": "'/chat.postMessage'",
            "body": "{'channel': '#ci', 'text': 'build for ' + inputs.who + ': ' + inputs.phase}",
            "successCondition": "response.body.ok",
        },
    }
    for name, code in (("good", 0), ("bad", 1)):
        build = task("build", exit_code=code)
        definition = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": name},
            "spec": {"parameters": [{"name": "who", "type": "string", "default": "ada"}],
                     "tasks": [build], "onExit": notify},
        }  # fmt: skip
        run = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowInstance",
            "metadata": {"name": f"{name}-run"},
            "spec": {"workflowRef": {"name": name}},
        }
        kube.kubectl("apply", "-f", "-", input=json.dumps(definition))
        kube.kubectl("create", "-f", "-", input=json.dumps(run))
    assert wait_phase(kube, "good-run")["phase"] == "Succeeded"
    assert wait_phase(kube, "bad-run")["phase"] == "Failed"
    posted = sorted(json.loads(r["body"])["text"] for r in recorder.requests)
    assert posted == ["build for ada: Failed", "build for ada: Succeeded"]
    assert {r["path"] for r in recorder.requests} == {"/api/chat.postMessage"}
    assert all(r["headers"]["authorization"] == f"Bearer {TOKEN}" for r in recorder.requests)
    for run in ("good-run", "bad-run"):
        rows = {r[0]: r for r in attempts(migrated_database, run)}
        assert rows["notify"][2] == "Succeeded"
