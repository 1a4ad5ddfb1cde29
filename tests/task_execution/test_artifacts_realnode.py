"""Artifacts between real containers on the real node, stored in a real S3 server.

The real ``plait operator`` reads the s3 Integration's Secret, presigns the attempt's URLs
into the attempt's Secret; ``plait-artifacts`` (its own image, imported into the node)
downloads and uploads inside the Pod; versitygw listens where the node's pods reach the host.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from plait.testing.images import ARTIFACTS_IMAGE
from plait.testing.s3 import S3Server
from tests.controller.test_operator import wait_condition
from tests.fixtures.kube import Kube, KubeCluster, RealNode
from tests.fixtures.operator import StartOperator
from tests.fixtures.s3 import BUCKET
from tests.task_execution.test_real_tasks import placement, pods_of, shell
from tests.workflow_orchestrator.test_execution import attempts, jobs, submit, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]


@pytest.fixture
def store(
    plait_crds: KubeCluster,
    kube: Kube,
    real_node: RealNode,
    pod_s3: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> Kube:
    """The test's namespace, enforcing the ``restricted`` Pod Security level, with the
    Integration ``store`` (type s3) on ``pod_s3``; the operators started after it use the
    local plait-artifacts image."""
    monkeypatch.setenv("PLAIT_ARTIFACTS_IMAGE", ARTIFACTS_IMAGE)
    kube.kubectl(
        "label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "store-credentials",
        f"--from-literal=accessKeyId={pod_s3.access_key}",
        f"--from-literal=secretAccessKey={pod_s3.secret_key}",
    )
    integration = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "store"},
        "spec": {
            "type": "s3",
            "settings": {
                "bucket": BUCKET,
                "endpoint": pod_s3.endpoint,
                "prefix": f"{kube.namespace}/",
            },
            "secretRef": {"name": "store-credentials"},
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(integration))
    return kube


def artifact_rows(dsn: str, instance: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT a.task_name, a.name, a.size_bytes, a.object_key, a.deleted_at IS NOT NULL "
            "FROM task_execution_service.task_artifacts a "
            "JOIN workflow_orchestrator_service.workflow_instances w "
            "ON w.id = a.workflow_instance_id WHERE w.name = %s ORDER BY a.task_name, a.name",
            (instance,),
        ).fetchall()


def test_a_large_file_flows_to_the_next_task_and_retention_deletes_it(
    store: Kube,
    real_node: RealNode,
    pod_s3: S3Server,
    start_operator: StartOperator,
    migrated_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator = start_operator()
    wait_condition(store, "integrations", "store", "Ready", "True")
    # 20,000 bytes: five times what the termination message could carry.
    make = shell(
        real_node,
        "make",
        "mkdir -p /tmp/out && head -c 20000 /dev/urandom > /tmp/out/data.bin"
        " && printf '{\"made\": true}' > /dev/termination-log",
    )
    make["template"]["outputArtifacts"] = [{"name": "data", "path": "/tmp/out/data.bin"}]
    use = shell(
        real_node,
        "use",
        'printf \'{"sha": "%s", "bytes": %d}\''
        ' "$(sha256sum /in/data.bin | cut -d" " -f1)" "$(wc -c < /in/data.bin)"'
        " > /dev/termination-log",
        dependencies=["make"],
    )
    use["inputArtifacts"] = [
        {"name": "data", "from": "tasks.make.artifacts.data", "path": "/in/data.bin"}
    ]
    submit(
        store,
        "files",
        [make, use],
        artifactRepository={"integration": "store"},
        **placement(real_node),
    )
    final = wait_phase(store, "files-run", timeout=180)
    assert final["phase"] == "Succeeded", (final, operator.output()[-3000:])

    rows = {row[0]: row for row in attempts(migrated_database, "files-run")}
    assert rows["make"][4] == {"made": True}, "the task's own outputs are kept"
    ((task, name, size, key, deleted),) = artifact_rows(migrated_database, "files-run")
    assert (task, name, size, deleted) == ("make", "data", 20_000, False)
    stored = pod_s3.root / BUCKET / key
    assert stored.stat().st_size == 20_000
    # The consumer saw exactly the bytes the producer wrote and the bucket holds.
    assert rows["use"][4] == {
        "sha": hashlib.sha256(stored.read_bytes()).hexdigest(),
        "bytes": 20_000,
    }

    # The URLs were in the attempt's Secret, never in the Job or its Pod; the Secret is
    # deleted once the attempt has ended.
    job = jobs(store)[rows["make"][6]]
    assert job["spec"]["template"]["spec"]["volumes"][-1]["secret"]["secretName"] == (
        f"{rows['make'][6]}-artifacts"
    )
    assert "X-Amz-Signature" not in json.dumps(job)
    assert "X-Amz-Signature" not in json.dumps(pods_of(store, rows["make"][6]))
    wait_until(
        lambda: store.run_kubectl("get", "secret", f"{rows['make'][6]}-artifacts").returncode,
        timeout=30,
        what="the attempt's Secret of URLs to be deleted",
    )

    # Retention: an operator keeping artifacts for a moment deletes the objects.
    operator.stop()
    monkeypatch.setenv("PLAIT_ARTIFACT_RETENTION_DAYS", "0.00001")  # under a second
    monkeypatch.setenv("PLAIT_ARTIFACT_RETENTION_INTERVAL_SECONDS", "1")
    start_operator()
    wait_until(
        lambda: artifact_rows(migrated_database, "files-run")[0][4],
        timeout=60,
        what="artifact retention to delete the object",
    )
    assert not stored.exists()


def test_an_artifact_over_its_limit_fails_the_task_with_why(
    store: Kube,
    real_node: RealNode,
    pod_s3: S3Server,
    start_operator: StartOperator,
    migrated_database: str,
) -> None:
    start_operator()
    wait_condition(store, "integrations", "store", "Ready", "True")
    big = shell(real_node, "big", "head -c 5000 /dev/zero > /tmp/big")
    big["template"]["outputArtifacts"] = [{"name": "big", "path": "/tmp/big", "maxBytes": 4096}]
    submit(
        store, "toobig", [big], artifactRepository={"integration": "store"}, **placement(real_node)
    )
    final = wait_phase(store, "toobig-run", timeout=180)
    assert final["phase"] == "Failed"
    (row,) = attempts(migrated_database, "toobig-run")
    assert (row[2], row[3]) == ("Failed", 1)
    assert row[5] == 'output artifact "big": /tmp/big is 5000 bytes, over its limit of 4096 bytes'
    assert row[5] in final["failure"]["message"]
    ((_, _, size, key, _),) = artifact_rows(migrated_database, "toobig-run")
    assert size is None
    assert not (pod_s3.root / BUCKET / key).exists(), "nothing was uploaded"


def test_an_input_whose_object_is_gone_fails_in_the_init_container_with_why(
    store: Kube,
    real_node: RealNode,
    pod_s3: S3Server,
    start_operator: StartOperator,
    migrated_database: str,
) -> None:
    start_operator()
    wait_condition(store, "integrations", "store", "Ready", "True")
    make = shell(real_node, "make", "echo hello > /tmp/data")
    make["template"]["outputArtifacts"] = [{"name": "data", "path": "/tmp/data"}]
    use = shell(real_node, "use", "cat /in/data; exit 3", dependencies=["make"])
    use["inputArtifacts"] = [
        {"name": "data", "from": "tasks.make.artifacts.data", "path": "/in/data"}
    ]
    submit(
        store,
        "gone",
        [make, use],
        artifactRepository={"integration": "store"},
        **placement(real_node),
    )
    assert wait_phase(store, "gone-run", timeout=180)["phase"] == "Failed"
    ((_, _, _, key, _),) = artifact_rows(migrated_database, "gone-run")
    (pod_s3.root / BUCKET / key).unlink()  # lost behind Plait's back
    store.kubectl("patch", "wfi", "gone-run", "--type", "merge", "-p", '{"spec": {"retry": 1}}')

    def second_failed() -> bool:
        rows = [r for r in attempts(migrated_database, "gone-run") if r[0] == "use"]
        return len(rows) == 2 and rows[1][2] == "Failed"

    wait_until(second_failed, timeout=120, what="the second attempt of use to fail")
    first, second = [r for r in attempts(migrated_database, "gone-run") if r[0] == "use"]
    assert first[3] == 3, "the first attempt ran the command"
    assert second[3] == 1, "the second never did: plait-artifacts init exited 1"
    assert second[5].startswith(
        'input artifact "data": the artifact store answered 404 Not Found: <?xml'
    ), second[5]
    assert "NoSuchKey" in second[5]
