"""Plait installed by its chart as real pods on the local cluster's real node.

The image is built without a container engine (:mod:`plait.testing.plait_image`) and
imported into the node; PostgreSQL is a server on the host that listens on the host's end
of the node's link, the chart's "existing database" case. ``helm install`` then runs the
migration hook Job, the operator, the API and the webhook as containers of that image, in
a namespace enforcing the "restricted" Pod Security level; they reach the apiserver through
the ``kubernetes`` Service's ClusterIP (kube-proxy in the node), and the apiserver calls the
webhook at its pod. The example diamond runs through the installed operator, its tasks in
busybox containers beside it; the installed API accepts a signed GitHub delivery (reading
the signing Secret that api.webhookSecrets lets it read) and refuses a wrongly signed one,
and its dashboard, signed in as the chart's first admin, lists the runs, starts a run from
its Submit form and cancels it (the API's ServiceAccount patching the WorkflowInstance);
``helm upgrade`` rolls every pod and the run history stays; ``helm uninstall`` removes the
release's pods.

Marked ``helm`` too, so ``-m 'not helm'`` leaves it out (the image's first build takes
about a minute).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import yaml

from plait.api.access import SESSION_COOKIE
from plait.kernel.components import COMPONENTS, component_by_name
from plait.kernel.roles import reader_role
from plait.testing import PostgresServer
from plait.testing.node import REAL_NODE_NAME, REAL_NODE_TAINT, NodeLayout
from plait.testing.plait_image import PlaitImage, build_plait_image
from tests.fixtures.kube import Kube, KubeCluster, RealNode
from tests.install.conftest import CHART, ROOT, Helm
from tests.integration.test_webhooks import PUSH, github_headers

pytestmark = [pytest.mark.e2e, pytest.mark.realnode, pytest.mark.helm, pytest.mark.timeout(900)]

T = TypeVar("T")
ON_REAL_NODE = {
    "nodeSelector": {"plait.dev/node-kind": "real"},
    "tolerations": [{"operator": "Equal", **REAL_NODE_TAINT}],
}
COMPONENT_PODS = ("operator", "api", "webhook")
#: What the API's dashboard reads as read-only roles (docs/install.md's Secret has them).
READ_ONLY = ("workflow_orchestrator", "task_execution", "testing_framework")
HOOK_SECRET = "gh-" + secrets.token_hex(16)
FINAL = ("Succeeded", "Failed", "Cancelled", "Error")


def poll(what: str, check: Callable[[], T | None], timeout: float = 120.0) -> T:
    """``check()``'s first truthy value; fails naming ``what`` past the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture
def layout(kube_cluster: KubeCluster, real_node: RealNode) -> NodeLayout:
    if not real_node.local or kube_cluster.local_cluster is None:
        pytest.skip("the image is imported into the local cluster's real node")
    assert kube_cluster.local_cluster.node_layout is not None
    return kube_cluster.local_cluster.node_layout


@pytest.fixture
def image(kube_cluster: KubeCluster, layout: NodeLayout) -> PlaitImage:
    built = build_plait_image(progress=False)
    assert kube_cluster.local_cluster is not None
    kube_cluster.local_cluster.import_image(built.archive)
    return built


@pytest.fixture
def database(layout: NodeLayout) -> Iterator[PostgresServer]:
    """A PostgreSQL the node's pods reach: on the host's end of the link, admitting the
    pod subnet with a password."""
    with PostgresServer(
        listen_addresses=("127.0.0.1", layout.host_address), allow_networks=(layout.pod_subnet,)
    ) as server:
        server.create_database("plait")
        yield server


def database_secret(kube: Kube, pg: PostgresServer, host: str) -> None:
    """The Secret of docs/install.md: the migration DSN (here the superuser's), and per
    component its role's password and the DSN that logs in as that role."""

    def dsn(user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@{host}:{pg.port}/plait"

    literals = [f"--from-literal=migration-url={dsn(pg.superuser, pg.password)}"]
    for c in COMPONENTS:
        dashed, password = c.name.replace("_", "-"), secrets.token_hex(12)
        literals += [
            f"--from-literal=password-{dashed}={password}",
            f"--from-literal=url-{dashed}={dsn(c.role, password)}",
        ]
    for c in map(component_by_name, READ_ONLY):
        dashed, password = c.name.replace("_", "-"), secrets.token_hex(12)
        literals += [
            f"--from-literal=password-{dashed}-reader={password}",
            f"--from-literal=url-{dashed}-reader={dsn(reader_role(c), password)}",
        ]
    kube.kubectl("create", "secret", "generic", "plait-database", *literals)


def values(image: PlaitImage, namespace: str) -> dict[str, Any]:
    return {
        "image": {"repository": image.repository, "tag": image.tag, "pullPolicy": "Never"},
        "postgresql": {"enabled": False},
        "database": {"existingSecret": "plait-database", "migration": {**ON_REAL_NODE}},
        # Only this namespace: other tests' objects are not this operator's, and the
        # webhook registered with failurePolicy Fail selects only this namespace too.
        "operator": {"allNamespaces": False, "replicas": 1, **ON_REAL_NODE},
        "api": {
            "replicas": 1,
            # The signing Secret of the Integration "repo" (and no other Secret).
            "webhookSecrets": [{"namespace": namespace, "names": ["hooks"]}],
            **ON_REAL_NODE,
        },
        # The test speaks plain HTTP to the API pod.
        "auth": {"session": {"secureCookie": False}},
        "webhook": {"replicas": 1, "failurePolicy": "Fail", **ON_REAL_NODE},
    }


def pods(kube: Kube, selector: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(
        kube.kubectl("get", "pods", "-l", selector, "-o", "json")
    )["items"]
    return found


def ready_components(kube: Kube, selector: str) -> dict[str, dict[str, Any]] | None:
    """component -> its one Ready pod, once each of COMPONENT_PODS has exactly one (no old
    pod of a rollout left)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in pods(kube, selector):
        found.setdefault(pod["metadata"]["labels"]["app.kubernetes.io/component"], []).append(pod)
    if sorted(found) != sorted(COMPONENT_PODS) or any(len(p) != 1 for p in found.values()):
        return None
    for (pod,) in found.values():
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        if pod["metadata"].get("deletionTimestamp") or conditions.get("Ready") != "True":
            return None
    return {component: p[0] for component, p in found.items()}


def instance_phase(kube: Kube, name: str) -> str:
    return kube.kubectl("get", "wfi", name, "-o", "jsonpath={.status.phase}", check=False)


def run_diamond(kube: Kube, pg: PostgresServer, name: str) -> None:
    """One run of the example diamond to Succeeded, checked against what its containers
    computed: the outputs recorded in PostgreSQL, the pods on the real node."""
    instance = yaml.safe_load((ROOT / "examples" / "workflowinstance.yaml").read_text())
    instance["metadata"]["name"] = name
    kube.kubectl("apply", "-f", "-", input=json.dumps(instance))
    phase = poll(
        f"{name} to finish",
        lambda: next((p for p in [instance_phase(kube, name)] if p in FINAL), None),
        timeout=240,
    )
    assert phase == "Succeeded", kube.kubectl("get", "wfi", name, "-o", "yaml")
    task_pods = pods(kube, f"plait.dev/instance={name}")
    assert {p["spec"]["nodeName"] for p in task_pods} == {REAL_NODE_NAME}
    messages = {
        p["metadata"]["labels"]["plait.dev/task"]: p["status"]["containerStatuses"][0]["state"][
            "terminated"
        ].get("message")
        for p in task_pods
        if p["status"].get("phase") == "Succeeded"
    }
    # "kubernetes-native workflow" has 26 characters: two halves of 13, (13 + 13) * 2.
    assert json.loads(messages["join"]) == {"total": 52}
    with psycopg.connect(pg.dsn("plait")) as conn:
        row = conn.execute(
            "SELECT phase, outputs FROM workflow_orchestrator_service.workflow_instances "
            "WHERE namespace = %s AND name = %s",
            (kube.namespace, name),
        ).fetchone()
    assert row == ("Succeeded", {"total": 52, "halves": ["kubernetes-na", "tive workflow"]})


def test_helm_install_runs_plait_as_pods_on_the_real_node(
    plait_crds: KubeCluster,
    kube: Kube,
    helm_bin: Path,
    layout: NodeLayout,
    image: PlaitImage,
    database: PostgresServer,
    tmp_path: Path,
) -> None:
    helm = Helm(helm_bin, kube.kubeconfig)
    kube.kubectl(
        "label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    database_secret(kube, database, layout.host_address)
    release = f"real-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={release}"
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values(image, kube.namespace)))
    ns = ["--namespace", kube.namespace]
    helm.run("install", release, str(CHART), *ns, "-f", str(values_file),
             "--wait", "--timeout", "5m")  # fmt: skip
    try:
        # --wait returned after the pre-install migration Job completed (a real process:
        # the component roles log in) and the Deployments became Ready.
        first = poll(
            "the operator, API and webhook Ready", lambda: ready_components(kube, selector)
        )
        assert {p["spec"]["nodeName"] for p in first.values()} == {REAL_NODE_NAME}
        with psycopg.connect(database.dsn("plait")) as conn:
            roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolcanlogin")}
        assert {c.role for c in COMPONENTS} <= roles
        # The hook Job is gone (hook-succeeded); its pod's events say where it ran.
        events = json.loads(kube.kubectl("get", "events", "-o", "json"))["items"]
        migrate = [
            e for e in events
            if e["involvedObject"]["name"].startswith(f"{release}-plait-migrate-")
        ]  # fmt: skip
        assert any(
            e["reason"] == "Scheduled" and e["message"].endswith(f" to {REAL_NODE_NAME}")
            for e in migrate
        ), migrate
        assert any(e["reason"] == "Started" for e in migrate), migrate
        # The apiserver reaches the API pod (its service proxy goes to the pod's address).
        api_service = f"{release}-plait-api"
        health = kube.kubectl(
            "get", "--raw",
            f"/api/v1/namespaces/{kube.namespace}/services/http:{api_service}:80/proxy/healthz",
        )  # fmt: skip
        assert health.strip()

        # The webhook in its pod answers the apiserver, which reaches it at the pod's address:
        # a dependency cycle (beyond the CRD's schema) is refused by it.
        task = {"template": {"image": "busybox:1.35"}}
        cyclic = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": "cyclic"},
            "spec": {"tasks": [{"name": "a", "dependencies": ["b"], **task},
                               {"name": "b", "dependencies": ["a"], **task}]},
        }  # fmt: skip
        denied = kube.run_kubectl("apply", "-f", "-", input=json.dumps(cyclic))
        assert denied.returncode != 0
        assert 'admission webhook "' in denied.stderr, denied.stderr
        assert "denied the request" in denied.stderr, denied.stderr

        kube.kubectl("create", "secret", "generic", "notifier-credentials",
                     f"--from-literal=token={secrets.token_hex(8)}")  # fmt: skip
        kube.kubectl("create", "secret", "generic", "hooks",
                     f"--from-literal=webhookSecret={HOOK_SECRET}")  # fmt: skip
        repo = {"type": "github", "secretRef": {"name": "hooks"}}
        kube.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "plait.dev/v1alpha1", "kind": "Integration",
            "metadata": {"name": "repo"}, "spec": repo,
        }))  # fmt: skip
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            if path.name != "workflowinstance.yaml":
                kube.kubectl("apply", "-f", str(path))
        placement = json.dumps({"spec": ON_REAL_NODE})
        kube.kubectl("patch", "workflowdefinition", "diamond", "--type", "merge", "-p", placement)

        def reconciled() -> bool:
            # WorkflowTests are run by `plait test run`; the operator does not reconcile them.
            items = json.loads(kube.kubectl("get", "plait", "-o", "json"))["items"]
            return bool(items) and all(
                o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
                for o in items
                if o["kind"] != "WorkflowTest"
            )

        poll("the installed operator to reconcile the examples", reconciled)
        run_diamond(kube, database, "diamond-run-1")
        api = Api(first["api"]["status"]["podIP"])
        signed_deliveries(api, kube, database)
        dashboard(api, kube, release)

        before = {c: p["metadata"]["uid"] for c, p in first.items()}
        helm.run("upgrade", release, str(CHART), *ns, "-f", str(values_file),
                 "--set", "logLevel=DEBUG", "--wait", "--timeout", "5m")  # fmt: skip

        def rolled() -> dict[str, dict[str, Any]] | None:
            ready = ready_components(kube, selector)
            if ready and all(ready[c]["metadata"]["uid"] != before[c] for c in COMPONENT_PODS):
                return ready
            return None

        after = poll("the rolled pods Ready", rolled)
        for pod in after.values():
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env["PLAIT_LOG_LEVEL"] == "DEBUG"
        history = json.loads(helm.run("history", release, *ns, "-o", "json").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"]
        # The first run's history survives the upgrade, and the new pods run a second one.
        assert instance_phase(kube, "diamond-run-1") == "Succeeded"
        run_diamond(kube, database, "diamond-run-2")
    except BaseException:
        print_logs(kube, selector)  # the pods' own words, before the uninstall takes them
        raise
    finally:
        helm.run("uninstall", release, *ns, "--wait", "--timeout", "2m")
    poll("no pod of the release left", lambda: not pods(kube, selector) or None)
    assert not json.loads(kube.kubectl("get", "jobs", "-l", selector, "-o", "json"))["items"]


def print_logs(kube: Kube, selector: str, lines: int = 60) -> None:
    """The last lines of each of the release's pods' logs, shown with a failure."""
    for pod in json.loads(kube.kubectl("get", "pods", "-l", selector, "-o", "json"))["items"]:
        name = pod["metadata"]["name"]
        logs = kube.kubectl("logs", name, "--all-containers", f"--tail={lines}", check=False)
        print(f"--- {name} (last {lines} lines) ---\n{logs}")


class Api:
    """Plain HTTP to the API's pod (the host routes the node's pod subnet), no redirects
    followed, the session cookie kept."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.cookie = ""

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.address, 8000, timeout=30)
        try:
            sent = dict(headers or {})
            if self.cookie:
                sent["Cookie"] = self.cookie
            conn.request(method, path, body=body or None, headers=sent)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
            for name, value in response.getheaders():
                if name.lower() == "set-cookie" and value.startswith(f"{SESSION_COOKIE}="):
                    self.cookie = value.split(";", 1)[0]
            return response.status, {k.lower(): v for k, v in response.getheaders()}, text
        finally:
            conn.close()

    def form(self, path: str, fields: dict[str, str]) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(fields).encode()
        content_type = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.request("POST", path, body, content_type)


def signed_deliveries(api: Api, kube: Kube, pg: PostgresServer) -> None:
    """GitHub's push, signed with the Secret's key: accepted and stored; signed with another
    key: 401, nothing stored."""
    path = f"/v1/namespaces/{kube.namespace}/webhooks/repo"
    delivery = str(uuid.uuid4())
    status, _, text = api.request("POST", path, PUSH, github_headers(PUSH, delivery, HOOK_SECRET))
    assert status == 202, text
    assert json.loads(text)["id"] == delivery
    wrong = str(uuid.uuid4())
    status, _, text = api.request("POST", path, PUSH, github_headers(PUSH, wrong, "guessed"))
    assert status == 401, text
    assert HOOK_SECRET not in text
    with psycopg.connect(pg.dsn("plait")) as conn:
        stored = conn.execute(
            "SELECT event_id, type FROM event_processing_service.event_instances WHERE source = %s",
            (f"/namespaces/{kube.namespace}/webhooks/repo",),
        ).fetchall()
    assert stored == [(delivery, "com.github.push")]


def dashboard(api: Api, kube: Kube, release: str) -> None:
    """Signed in as the chart's first admin: the runs list, a run submitted from the form,
    and that run cancelled, with the API's own database roles and ServiceAccount."""
    status, headers, _ = api.request("GET", "/ui/runs")
    assert status == 303, status
    assert headers["location"].startswith("/ui/login"), headers
    admin = json.loads(
        kube.kubectl("get", "secret", f"{release}-plait-initial-admin", "-o", "json")
    )["data"]
    fields = {k: base64.b64decode(admin[k]).decode() for k in ("username", "password")}
    status, headers, text = api.form("/ui/login", {**fields, "next": "/ui/runs"})
    assert status == 303, text[-2000:]
    assert api.cookie
    status, _, text = api.request("GET", "/ui/runs")
    assert status == 200, text[-2000:]
    assert "diamond-run-1" in text
    status, _, text = api.request("GET", f"/ui/runs/{kube.namespace}/diamond-run-1")
    assert status == 200, text[-2000:]

    submit = f"/ui/submit/{kube.namespace}/diamond"
    status, _, text = api.request("GET", submit)
    assert status == 200, text[-2000:]
    match = re.search(r'name="csrf" value="([^"]+)"', text)
    assert match, text[-2000:]
    csrf = match[1]
    status, headers, text = api.form(submit, {"csrf": csrf, "message": "from the form"})
    assert status == 303, text[-2000:]
    prefix = f"/ui/runs/{kube.namespace}/"
    assert headers["location"].startswith(prefix), headers
    name = headers["location"].removeprefix(prefix)
    created = json.loads(kube.kubectl("get", "wfi", name, "-o", "json"))
    assert created["spec"]["arguments"]["message"] == "from the form"
    assert created["metadata"]["annotations"]["plait.dev/submitted-by"] == fields["username"]

    status, headers, text = api.form(f"{prefix}{name}/cancel", {"csrf": csrf})
    assert status == 303, text[-2000:]
    assert "cancel+requested" in headers["location"], headers
    changed = json.loads(kube.kubectl("get", "wfi", name, "-o", "json"))
    assert changed["spec"]["cancel"] is True
    annotation = changed["metadata"]["annotations"]["plait.dev/last-action"]
    assert annotation == f"cancel by {fields['username']}"
    phase = poll(
        f"{name} to end",
        lambda: next((p for p in [instance_phase(kube, name)] if p in FINAL), None),
        timeout=180,
    )
    assert phase == "Cancelled", kube.kubectl("get", "wfi", name, "-o", "yaml")
