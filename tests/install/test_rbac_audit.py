"""The chart's RBAC is what the processes use: the granted rules against their real requests.

``helm/plait/files/rbac.yaml`` lists every rule the chart grants ``plait operator`` and
``plait webhook``, with the code that needs it. Here the chart's ServiceAccounts,
(Cluster)Roles and bindings are applied to the local control plane, both processes run with
their ServiceAccount's token and their Deployment's arguments, and they are driven through
what they do in production: admission of the examples (the chart's
ValidatingWebhookConfiguration pointed at the webhook), a run of the example workflow to
its end, an EventTrigger that starts a run and cancels it for a newer one, and a run whose
definition is missing (a Warning Event). The API server's audit log
(``plait.testing.cluster.AUDIT_POLICY``: every request made with a ServiceAccount token)
then says what each did: a request outside its rules, a refused request, or a rule that no
request used fails the test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from plait.event_processing import repository as repo
from plait.kernel.certificates import write_self_signed_certificate
from plait.kernel.components import COMPONENTS
from plait.testing._process import free_port, wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import OperatorProcess
from tests.install.conftest import (
    RBAC_TABLE,
    ROOT,
    Helm,
    Triple,
    find,
    granted_triples,
    table_triples,
)

pytestmark = pytest.mark.e2e

ACCOUNTS = ("operator", "webhook")
EXAMPLES = ["eventdefinition", "integration", "taskdefinition", "workflowdefinition"]
EXAMPLES += ["eventtrigger", "workflowinstance"]
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
#: What the example's containers compute, given to kwok's pods (examples/ run real ones).
SIMULATED = {
    "split": {"head": "kubernetes-na", "tail": "tive workflow"},
    "echo": {"length": 13},
    "join": {"total": 52},
}


def simulated(example: str) -> str:
    """The example, each of its task templates with its outputs as kwok's annotation."""
    obj = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    spec = obj["spec"]
    named = [(obj["metadata"]["name"], spec["template"])] if "template" in spec else []
    for task in [*spec.get("tasks", ()), *([spec["onExit"]] if "onExit" in spec else [])]:
        if "template" in task:
            named.append((task["name"], task["template"]))
    for name, template in named:
        if name in SIMULATED:
            annotations = {"sim.plait.dev/message": json.dumps(SIMULATED[name])}
            template["podMetadata"] = {"annotations": annotations}
    return json.dumps(obj)


def audit_log(cluster: KubeCluster) -> Path:
    """The API server's audit log: next to the kubeconfig of a LocalCluster."""
    path = cluster.kubeconfig.parent / "logs" / "audit.log"
    if not path.exists():
        pytest.skip("this cluster keeps no audit log (only the local control plane does)")
    return path


def requests_by(log: Path, start: int, user: str) -> list[dict[str, Any]]:
    """The resource requests ``user`` made, from byte ``start`` of the audit log on."""
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if e["user"]["username"] == user and "objectRef" in e]


def triple(entry: dict[str, Any]) -> Triple:
    ref = entry["objectRef"]
    resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return (ref.get("apiGroup", ""), resource, entry["verb"])


def apply(kube: Kube, kind: str, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "plait.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}
    kube.kubectl("apply", "-f", "-", input=json.dumps({**body, "spec": spec}))


def trigger_runs(kube: Kube, trigger: str) -> dict[str, str]:
    out = kube.kubectl("get", "wfi", "-l", f"plait.dev/trigger={trigger}", "-o", "json")
    return {
        r["metadata"]["name"]: (r.get("status") or {}).get("phase", "")
        for r in json.loads(out)["items"]
    }


async def send_order(dsn: str, namespace: str, event_id: str) -> None:
    """Store an event as ``plait api`` does (insert plus NOTIFY, as event_processing)."""
    event = repo.NewEvent(
        namespace=namespace,
        source="/shop",
        id=event_id,
        type="order.created",
        subject="k",
        data={"orderId": event_id},
        partition_key="k",
    )
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn,
        conn.transaction(),
    ):
        await repo.insert_event(conn, event, max_attempts=5)
        await repo.notify_new_events(conn)


def token_kubeconfig(kube: Kube, account: str, path: Path) -> Path:
    """A kubeconfig with ``account``'s token, as its pods would mount it."""
    token = kube.kubectl("create", "token", account, "--duration=1h").strip()
    config = yaml.safe_load(kube.cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def container_args(docs: list[dict[str, Any]], suffix: str) -> list[str]:
    deployment = find(docs, "Deployment", suffix)
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


@pytest.fixture
def cleanup(kube: Kube) -> Iterator[list[tuple[str, str]]]:
    """Cluster-scoped objects to delete at the end: (kind, name)."""
    objects: list[tuple[str, str]] = []
    yield objects
    for kind, name in objects:
        kube.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)


@pytest.mark.timeout(600)  # two processes and a cluster on a busy machine
@pytest.mark.parametrize("mode", ["allNamespaces", "namespaced"])
async def test_requests_are_exactly_the_granted_rules(
    plait_crds: KubeCluster,
    kube: Kube,
    helm: Helm,
    component_dsns: dict[str, str],
    cleanup: list[tuple[str, str]],
    tmp_path: Path,
    mode: str,
) -> None:
    log = audit_log(kube.cluster)
    ns = kube.namespace
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    docs = helm.render(
        namespace=ns,
        release=release,
        sets=[f"operator.allNamespaces={str(mode == 'allNamespaces').lower()}"],
    )
    names = {account: f"{release}-plait-{account}" for account in ACCOUNTS}
    rbac = {
        account: [
            d
            for d in docs
            if d["kind"] in RBAC_KINDS
            and d["metadata"]["name"] in (name, f"{name}-cluster")
            and d["metadata"].get("namespace") in (None, ns)
        ]
        for account, name in names.items()
    }
    for account, objects in rbac.items():
        assert granted_triples(objects) == table_triples(account, mode), account
        cleanup += [
            (d["kind"].lower(), d["metadata"]["name"])
            for d in objects
            if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}
        ]
        kube.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_")}
    cert, _ = write_self_signed_certificate(tmp_path / "webhook", ["127.0.0.1"])
    webhook_port = free_port()
    start = log.stat().st_size
    processes: list[OperatorProcess] = []
    try:
        health = free_port()
        args = [*container_args(docs, "-webhook"), f"--cert-dir={cert.parent}"]
        args += ["--port", str(webhook_port), "--health-port", str(health)]
        kubeconfig = token_kubeconfig(kube, names["webhook"], tmp_path / "webhook.kubeconfig")
        webhook = OperatorProcess(
            args=[sys.executable, "-m", "plait", *args],
            env={**env, "KUBECONFIG": str(kubeconfig)},
            log=tmp_path / "webhook.log",
            health_port=health,
        )
        processes.append(webhook.start(timeout=120))
        health = free_port()
        args = [*container_args(docs, "-operator"), "--health-port", str(health)]
        kubeconfig = token_kubeconfig(kube, names["operator"], tmp_path / "operator.kubeconfig")
        dsns = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
        operator = OperatorProcess(
            args=[sys.executable, "-m", "plait", *args],
            env={**env, "KUBECONFIG": str(kubeconfig), **dsns},
            log=tmp_path / "operator.log",
            health_port=health,
        )
        processes.append(operator.start(timeout=120))

        # A run of a workflow that does not exist: a Warning Event (applied before the
        # webhook is registered, as a GitOps tool may apply it before its definition).
        apply(kube, "WorkflowInstance", "orphan", {"workflowRef": {"name": "not-there"}})

        # The chart's webhook configuration, pointed at this webhook and this namespace.
        configuration = find(docs, "ValidatingWebhookConfiguration")
        for hook in configuration["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{webhook_port}{path}",
                "caBundle": base64.b64encode(cert.read_bytes()).decode(),
            }
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
        cleanup.append(("validatingwebhookconfiguration", configuration["metadata"]["name"]))
        kube.cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))

        for example in EXAMPLES:
            kube.kubectl("apply", "-f", "-", input=simulated(example))
        # A trigger that replaces a long run by the newer one: start, list, cancel.
        annotations = {"sim.plait.dev/exit-code": "0", "sim.plait.dev/duration": "120s"}
        pod = {"image": "busybox", "podMetadata": {"annotations": annotations}}
        apply(kube, "WorkflowDefinition", "slow", {"tasks": [{"name": "wait", "template": pod}]})
        trigger = {"workflowRef": {"name": "slow"}, "eventType": "order.created"}
        apply(kube, "EventTrigger", "latest-only", {**trigger, "concurrencyPolicy": "Replace"})
        ready = "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
        wait_until(
            lambda: kube.kubectl("get", "etr", "latest-only", "-o", ready) == "True",
            timeout=120,
            what="the trigger to be Ready",
        )
        await send_order(component_dsns["event_processing"], ns, "o-1")
        wait_until(
            lambda: list(trigger_runs(kube, "latest-only").values()) == ["Running"],
            timeout=120,
            what="the first triggered run to run",
        )
        await send_order(component_dsns["event_processing"], ns, "o-2")

        # Everything else (the example run's pods read, the first run cancelled, the Warning
        # Event posted) shows in the audit log as it happens: wait for it there.
        users = {a: f"system:serviceaccount:{ns}:{name}" for a, name in names.items()}
        expected = {a: table_triples(a, mode, audited_only=True) for a in ACCOUNTS}

        def all_seen() -> bool:
            return all(
                expected[a] <= {triple(e) for e in requests_by(log, start, users[a])}
                for a in ACCOUNTS
            )

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if all_seen():
                break
            await asyncio.sleep(1)
    finally:
        for process in reversed(processes):
            process.stop()

    for account in ACCOUNTS:
        requests = requests_by(log, start, users[account])
        started = dict(zip(("webhook", "operator"), processes, strict=False))
        output = started[account].output()[-3000:] if account in started else ""
        decided = [
            e for e in requests if "authorization.k8s.io/decision" in e.get("annotations", {})
        ]
        assert decided == requests, f"{account}: audit entries without the authorizer's decision"
        # A refusal by RBAC is the authorizer's "forbid"; a 403 it did not decide (a create
        # in another test's namespace while it terminates, seen by an operator watching all
        # namespaces) is the API server's admission, not a missing rule.
        refused = sorted(
            {
                (triple(e), e["objectRef"].get("namespace"), e["responseStatus"]["code"])
                for e in requests
                if e["responseStatus"]["code"] == 401
                or e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
            }
        )
        assert not refused, f"{account}: requests its rules refused: {refused}\n{output}"
        observed = {triple(e) for e in requests}
        granted = table_triples(account, mode)
        assert observed <= granted, f"{account}: allowed by other rules: {observed - granted}"
        unused = sorted(expected[account] - observed)
        assert not unused, f"{account}: rules of {RBAC_TABLE.name} no request used: {unused}"
        if mode == "namespaced":
            outside = {
                (triple(e), e["objectRef"].get("namespace"))
                for e in requests
                if e["objectRef"].get("namespace") not in (None, ns)
            }
            assert not outside, f"{account}: requests outside the watched namespace: {outside}"
