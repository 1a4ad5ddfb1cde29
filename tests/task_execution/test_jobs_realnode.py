"""Plait's Job, as built, run by a real kubelet: what only a real process can prove.

A busybox image (whose USER is root) runs under Plait's restricted defaults as uid 65532
with the runtime's seccomp profile, still writes its termination message, has no API
token, and reads an Integration's secret key from the file the kubelet projected from the
Secret, while the Job names only the Secret and the key.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from typing import Any, cast

import pytest
from kubernetes import client

from plait.integration.credentials import SecretItem, TaskIntegration
from plait.resources import ContainerTemplate
from plait.task_execution.jobs import DEFAULT_RUN_AS_USER, JobRequest, build_job
from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster, RealNode

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

SCRIPT = """
f=/var/run/plait/integrations/notifier/token
token=false
[ -e /var/run/secrets/kubernetes.io/serviceaccount/token ] && token=true
printf '{"uid": "%s", "sha": "%s", "url": "%s", "apiToken": %s}' \
  "$(id -u)" "$(sha256sum "$f" | cut -d' ' -f1)" "$PLAIT_INTEGRATION_NOTIFIER_BASE_URL" \
  "$token" > /dev/termination-log
"""


def wait_complete(kube: Kube, name: str, timeout: int = 120) -> None:
    def finished() -> bool:
        status = kube.batch.read_namespaced_job(name, kube.namespace).status
        conditions = (status.conditions if status else None) or []
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)

    wait_until(finished, timeout=timeout, what=f"Job {name} to finish")


def test_a_real_container_runs_restricted_and_reads_its_integration_file(
    plait_crds: KubeCluster, kube: Kube, real_node: RealNode
) -> None:
    plait_crds.kubectl(
        "label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    token = f"tok-{secrets.token_hex(16)}"
    kube.kubectl("create", "secret", "generic", "hooks", f"--from-literal=api-token={token}")
    manifest: dict[str, Any] = build_job(
        JobRequest(
            namespace=kube.namespace,
            instance_name="real",
            instance_uid=str(uuid.uuid4()),
            task="read",
            attempt=1,
            # The template chooses the real node with its nodeSelector and tolerations.
            template=ContainerTemplate.model_validate(
                {
                    "image": real_node.busybox,
                    "command": ["sh", "-c", SCRIPT],
                    "nodeSelector": real_node.node_selector or None,
                    "tolerations": [
                        {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
                        for t in real_node.tolerations
                    ],
                }
            ),
            inputs={},
            integrations=(
                TaskIntegration(
                    "notifier",
                    "http",
                    {"baseUrl": "https://hooks.example.com"},
                    "hooks",
                    (SecretItem("token", "api-token"),),
                ),
            ),
        )
    )
    # No WorkflowInstance owns it here (the garbage collector would delete an orphan).
    del manifest["metadata"]["ownerReferences"]
    assert token not in json.dumps(manifest)
    name = manifest["metadata"]["name"]
    kube.batch.create_namespaced_job(kube.namespace, cast(client.V1Job, manifest))
    wait_complete(kube, name)

    (pod,) = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={name}").items
    assert pod.status is not None
    assert pod.status.container_statuses
    state = pod.status.container_statuses[0].state
    assert state is not None
    terminated = state.terminated
    assert terminated is not None
    assert terminated.exit_code == 0, terminated
    assert json.loads(terminated.message or "") == {
        "uid": str(DEFAULT_RUN_AS_USER),
        "sha": hashlib.sha256(token.encode()).hexdigest(),
        "url": "https://hooks.example.com",
        "apiToken": False,
    }
