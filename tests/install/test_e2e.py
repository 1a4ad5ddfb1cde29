"""The chart and manifests/ on the real control plane (kube-apiserver with kwok's node).

kwok schedules pods and reports them Running (and Job pods Succeeded) without running any
container. So these tests prove what the API server and the controllers decide: every
object is valid and admitted (Pod Security "restricted" included), RBAC can be granted,
pods get scheduled, hooks complete, upgrade and uninstall behave. They cannot prove that
the processes start: nothing answers the admission webhook, so installs use
tests/install/values/kwok.yaml (webhook failurePolicy Ignore, no PVC).
CRDs are cluster-scoped and shared by the whole session: these tests never delete them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from plait.kernel.components import COMPONENTS
from tests.fixtures.kube import Kube, KubeCluster
from tests.install.conftest import CHART, PRODUCTION_VALUES, ROOT, VALUES_DIR, Helm

pytestmark = pytest.mark.e2e

KWOK_VALUES = VALUES_DIR / "kwok.yaml"
NODE = "kwok-node-0"
# Namespaced kinds a release creates; with the cluster-scoped ones below, what must be gone
# after an uninstall.
NAMESPACED = (
    "deployments,statefulsets,jobs,pods,services,serviceaccounts,secrets,configmaps,"
    "roles,rolebindings,networkpolicies,poddisruptionbudgets,persistentvolumeclaims"
)
CLUSTER_SCOPED = "clusterroles,clusterrolebindings,validatingwebhookconfigurations"


@pytest.fixture
def cluster_helm(helm_bin: Path, kube_cluster: KubeCluster) -> Helm:
    return Helm(helm_bin, kube_cluster.kubeconfig)


def restricted(kube: Kube) -> None:
    """Enforce the "restricted" Pod Security Standard in the test's namespace."""
    kube.cluster.kubectl(
        "label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )


def database_secret_literals() -> list[str]:
    """The keys docs/install.md puts in the database Secret: the migration DSN, and per
    component its role's password and the DSN that logs in as that role."""
    db = "db.invalid:5432/plait"
    literals = [f"--from-literal=migration-url=postgresql://plait_migrator:x@{db}"]
    for c in COMPONENTS:
        dashed = c.name.replace("_", "-")
        literals += [
            f"--from-literal=password-{dashed}=pw-{dashed}",
            f"--from-literal=url-{dashed}=postgresql://{c.role}:pw-{dashed}@{db}",
        ]
    return literals


def database_secret(kube: Kube) -> None:
    kube.kubectl("create", "secret", "generic", "plait-database", *database_secret_literals())


def items(cluster: KubeCluster, *args: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", *args, "-o", "json")
    result: list[dict[str, Any]] = json.loads(out)["items"]
    return result


def wait_for(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def running_pods(cluster: KubeCluster, namespace: str, selector: str) -> dict[str, str]:
    """component -> node of the Running pods matching ``selector``."""
    pods = items(cluster, "pods", "-n", namespace, "-l", selector)
    return {
        p["metadata"]["labels"]["app.kubernetes.io/component"]: p["spec"].get("nodeName", "")
        for p in pods
        if p["status"].get("phase") == "Running"
    }


def wait_for_running(
    cluster: KubeCluster, namespace: str, selector: str, *components: str
) -> dict[str, str]:
    """component -> node, once a pod of each of ``components`` is Running."""

    def check() -> dict[str, str] | None:
        pods = running_pods(cluster, namespace, selector)
        return pods if set(components) <= pods.keys() else None

    result: dict[str, str] = wait_for(f"{', '.join(components)} pods Running", check)
    return result


def leftovers(cluster: KubeCluster, namespace: str, selector: str) -> list[str]:
    found = items(cluster, NAMESPACED, "-n", namespace, "-l", selector)
    found += items(cluster, CLUSTER_SCOPED, "-l", selector)
    return [f"{o['kind']}/{o['metadata']['name']}" for o in found]


def crds_established(cluster: KubeCluster) -> None:
    names = [f"crd/{p.stem}" for p in sorted((CHART / "crds").glob("*.yaml"))]
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.mark.parametrize("values", [[], [PRODUCTION_VALUES]], ids=["default", "production"])
def test_render_passes_server_dry_run(
    plait_crds: KubeCluster, kube: Kube, helm: Helm, values: list[Path]
) -> None:
    """Every rendered object (hooks included) is accepted by the real API server."""
    restricted(kube)
    rendered = helm.template(values=values, namespace=kube.namespace, release="dry").stdout
    proc = kube.run_kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/dry-plait-operator created (server dry run)" in proc.stdout


def test_helm_install_upgrade_uninstall(
    plait_crds: KubeCluster, kube: Kube, cluster_helm: Helm
) -> None:
    """The default install (bundled PostgreSQL) through one whole life cycle."""
    restricted(kube)
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={release}"
    ns = ["--namespace", kube.namespace]
    cluster_helm.run("install", release, str(CHART), *ns, "-f", str(KWOK_VALUES),
                     "--wait", "--timeout", "3m")  # fmt: skip
    try:
        crds_established(kube.cluster)
        pods = wait_for_running(
            kube.cluster, kube.namespace, selector, "operator", "api", "webhook"
        )
        assert "postgresql" in pods
        assert set(pods.values()) == {NODE}
        # The post-install migration hook ran and, having succeeded, was cleaned up.
        assert not items(kube.cluster, "jobs", "-n", kube.namespace, "-l", selector)
        # The webhook is registered; with failurePolicy Ignore a resource is still admitted
        # although no operator answers it, and `kubectl get plait` lists it.
        webhook = items(kube.cluster, "validatingwebhookconfigurations", "-l", selector)
        assert webhook[0]["webhooks"][0]["clientConfig"]["caBundle"]
        kube.kubectl("apply", "-f", str(ROOT / "examples" / "taskdefinition.yaml"))
        listed = kube.kubectl("get", "plait", "-o", "name").split()
        assert [n.split("/")[0] for n in listed] == ["taskdefinition.plait.dev"]

        cert_before = webhook[0]["webhooks"][0]["clientConfig"]["caBundle"]
        database = f"secret/{release}-plait-postgresql"
        passwords_before = json.loads(kube.kubectl("get", database, "-o", "json"))["data"]
        assert {f"password-{c.name.replace('_', '-')}" for c in COMPONENTS} <= set(passwords_before)
        cluster_helm.run("upgrade", release, str(CHART), *ns, "-f", str(KWOK_VALUES),
                         "--set", "api.replicas=3", "--wait", "--timeout", "3m")  # fmt: skip
        api = json.loads(kube.kubectl("get", "deployment", f"{release}-plait-api", "-o", "json"))
        assert api["spec"]["replicas"] == 3
        assert api["metadata"]["labels"]["app.kubernetes.io/instance"] == release
        api_pods = f"{selector},app.kubernetes.io/component=api"
        wait_for(
            "three API pods",
            lambda: len(items(kube.cluster, "pods", "-n", kube.namespace, "-l", api_pods)) == 3,
        )
        # lookup kept the webhook CA and the bundled database's passwords stable.
        webhook = items(kube.cluster, "validatingwebhookconfigurations", "-l", selector)
        assert webhook[0]["webhooks"][0]["clientConfig"]["caBundle"] == cert_before
        passwords = json.loads(kube.kubectl("get", database, "-o", "json"))["data"]
        assert passwords == passwords_before
        history = json.loads(cluster_helm.run("history", release, *ns, "-o", "json").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"]
    finally:
        cluster_helm.run("uninstall", release, *ns, "--wait", "--timeout", "2m")

    assert wait_for(
        "no object of the release left",
        lambda: not leftovers(kube.cluster, kube.namespace, selector),
    )
    # Helm never deletes CRDs, and the resource created above is still there.
    crds_established(kube.cluster)
    assert kube.kubectl("get", "taskdefinitions", "-o", "name").strip()


def test_helm_install_production_values(
    plait_crds: KubeCluster, kube: Kube, cluster_helm: Helm
) -> None:
    """Production values: external database Secret, pre-install migration hook, replicas."""
    restricted(kube)
    database_secret(kube)
    release = f"e2e-{uuid.uuid4().hex[:6]}"
    selector = f"app.kubernetes.io/instance={release}"
    ns = ["--namespace", kube.namespace]
    out = cluster_helm.run("install", release, str(CHART), *ns, "-f", str(PRODUCTION_VALUES),
                           "-f", str(KWOK_VALUES), "--wait", "--timeout", "3m").stdout  # fmt: skip
    try:
        assert "Plait 0.1.0 is installed" in out  # NOTES.txt
        pods = wait_for_running(kube.cluster, kube.namespace, selector, "operator", "api")
        assert set(pods.values()) == {NODE}
        assert "postgresql" not in pods
        deployments = {
            d["metadata"]["name"]: d["status"].get("readyReplicas")
            for d in items(kube.cluster, "deployments", "-n", kube.namespace, "-l", selector)
        }
        assert deployments == {
            f"{release}-plait-operator": 2,
            f"{release}-plait-api": 3,
            f"{release}-plait-webhook": 2,
        }
        policies = items(kube.cluster, "networkpolicies", "-n", kube.namespace, "-l", selector)
        assert len(policies) == 4
    finally:
        cluster_helm.run("uninstall", release, *ns, "--wait", "--timeout", "2m")
    assert wait_for(
        "no object of the release left",
        lambda: not leftovers(kube.cluster, kube.namespace, selector),
    )


def test_kubectl_apply_manifests(plait_crds: KubeCluster) -> None:
    """manifests/ as a user applies them: namespace `plait`, the Secret, then everything."""
    cluster = plait_crds
    if cluster.run_kubectl("get", "namespace", "plait").returncode == 0:
        pytest.skip("namespace plait exists (a real install?): manifests/ would overwrite it")
    manifests = ROOT / "manifests"
    selector = "app.kubernetes.io/instance=plait"
    cluster.kubectl("apply", "-f", str(manifests / "00-namespace.yaml"))
    try:
        cluster.kubectl(
            "-n", "plait", "create", "secret", "generic", "plait-database",
            *database_secret_literals(),
        )  # fmt: skip
        proc = cluster.run_kubectl("apply", "-f", str(manifests))
        assert proc.returncode == 0, proc.stderr
        crds_established(cluster)
        pods = wait_for_running(cluster, "plait", selector, "operator", "api")
        assert set(pods.values()) == {NODE}
        cluster.kubectl("-n", "plait", "wait", "--for=condition=Complete", "--timeout=60s",
                        "job/plait-migrate")  # fmt: skip
        # Removing Plait but not the CRDs: the documented command.
        cluster.kubectl("delete", "--wait", "-f", str(manifests / "20-plait.yaml"))
        assert wait_for("no object left", lambda: not leftovers(cluster, "plait", selector))
    finally:
        cluster.kubectl("delete", "--ignore-not-found", "-f", str(manifests / "20-plait.yaml"))
        cluster.kubectl("delete", "--wait", "-f", str(manifests / "00-namespace.yaml"))
    crds_established(cluster)
