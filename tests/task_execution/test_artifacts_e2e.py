"""An attempt's artifacts through the real API server: the repository's Secret read (keys
renamed by secretRef.keys), the Secret of URLs created before the Job (a crash between the
two repaired) and deleted when the attempt ends (kwok's nodes: no container runs here)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from kubernetes import config

from plait.integration.handlers import IntegrationStore
from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.resources.common import ContainerTemplate
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import ObjectRef, OperatorContext
from plait.resources.workflow import InputArtifact
from plait.task_execution.jobs import JobRequest
from plait.task_execution.service import TaskExecution
from plait.task_execution.states import TaskState
from plait.testing._process import wait_until
from plait.testing.s3 import S3Server
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.s3 import BUCKET

pytestmark = pytest.mark.e2e


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    async with await Database.open(Settings(database_url=None), environ=environ) as db:
        yield db


@pytest.fixture
async def tasks(
    plait_crds: KubeCluster, kube: Kube, database: Database, s3_server: S3Server
) -> AsyncIterator[TaskExecution]:
    """TaskExecution as the operator runs it, with the Integration ``store`` of type s3
    stored, and its Secret (keys named as AWS tools name them) in the namespace."""
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "aws",
        f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}",
    )
    spec = IntegrationSpec.model_validate(
        {
            "type": "s3",
            "settings": {"bucket": BUCKET, "endpoint": s3_server.endpoint},
            "secretRef": {
                "name": "aws",
                "keys": {
                    "accessKeyId": "AWS_ACCESS_KEY_ID",
                    "secretAccessKey": "AWS_SECRET_ACCESS_KEY",
                },
            },
        }
    )
    ctx = OperatorContext(database, cast(KubeCalls, None))  # storing makes no Kubernetes call
    await IntegrationStore().apply(
        ctx, ObjectRef(kube.namespace, "store", str(uuid.uuid4()), 1), spec
    )
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    calls = KubeCalls(pool_size=4)
    yield TaskExecution(database, calls)
    calls.close()


def instance_uid(kube: Kube) -> str:
    """The uid of the WorkflowInstance ``run`` (created once, never reconciled here): the
    owner of the attempts' Jobs and Secrets, so the garbage collector leaves them be."""
    found = kube.run_kubectl("get", "wfi", "run", "-o", "jsonpath={.metadata.uid}")
    if found.returncode != 0 or not found.stdout:
        run = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowInstance",
            "metadata": {"name": "run"},
            "spec": {"workflowRef": {"name": "none"}},
        }
        kube.kubectl("create", "-f", "-", input=json.dumps(run))
        return kube.kubectl("get", "wfi", "run", "-o", "jsonpath={.metadata.uid}")
    return found.stdout


def request(kube: Kube, task: str, **extra: Any) -> JobRequest:
    return JobRequest(
        namespace=kube.namespace,
        instance_name="run",
        instance_uid=instance_uid(kube),
        task=task,
        attempt=1,
        template=ContainerTemplate.model_validate(
            {
                "image": "busybox",
                "command": ["sh", "-c", "date > /tmp/out"],
                "outputArtifacts": [{"name": "out", "path": "/tmp/out"}],
            }
        ),
        inputs={},
        artifact_repository="store",
        **extra,
    )


def secret_of(kube: Kube, job: str) -> dict[str, Any] | None:
    found = kube.run_kubectl("get", "secret", f"{job}-artifacts", "-o", "json")
    return json.loads(found.stdout) if found.returncode == 0 else None


def job_exists(kube: Kube, job: str) -> bool:
    return kube.run_kubectl("get", "job", job).returncode == 0


async def test_the_url_secret_comes_before_the_job_and_a_crash_between_them_is_repaired(
    kube: Kube, tasks: TaskExecution, s3_server: S3Server
) -> None:
    req = request(kube, "make")
    attempt = await tasks.start(req)
    assert attempt.state is TaskState.PENDING, attempt.message
    job = json.loads(kube.kubectl("get", "job", req.name, "-o", "json"))
    secret = secret_of(kube, req.name)
    assert secret is not None
    owner = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "name": "run",
        "uid": req.instance_uid,
        "blockOwnerDeletion": False,
    }
    assert secret["metadata"]["ownerReferences"] == [owner]
    assert "X-Amz-Signature" not in json.dumps(job)
    # The URL was signed with the Secret's keys (renamed by secretRef.keys): it uploads.
    plan = json.loads(base64.b64decode(secret["data"]["plan.json"]))
    (output,) = plan["outputs"]
    upload = urllib.request.Request(output["url"], data=b"made", method="PUT")
    assert await asyncio.to_thread(lambda: urllib.request.urlopen(upload, timeout=10).status) == 200
    key = f"{kube.namespace}/{req.instance_uid}/make/1/out"
    assert s3_server.objects(BUCKET)[key] == 4

    # The operator died after the Secret, before the Job: the next resume creates the Job
    # and keeps the Secret.
    kube.kubectl("delete", "job", req.name, "--wait=true")
    wait_until(lambda: not job_exists(kube, req.name), timeout=30, what="the Job gone")
    assert await tasks.ensure_jobs([req]) == 1
    assert job_exists(kube, req.name)
    kept = secret_of(kube, req.name)
    assert kept is not None
    assert kept["metadata"]["uid"] == secret["metadata"]["uid"], "the same Secret"

    # Its end recorded, the attempt's Secret goes.
    finished = json.loads(kube.kubectl("get", "job", req.name, "-o", "json"))
    finished["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    changed = await tasks.observe(finished)
    assert changed is not None
    assert changed.state is TaskState.SUCCEEDED, changed.message
    assert secret_of(kube, req.name) is None


async def test_an_input_no_attempt_stored_fails_the_attempt_without_a_job(
    kube: Kube, tasks: TaskExecution
) -> None:
    req = request(
        kube,
        "use",
        input_artifacts=(
            InputArtifact.model_validate(
                {"name": "data", "from": "tasks.make.artifacts.out", "path": "/in/data"}
            ),
        ),
    )
    attempt = await tasks.start(req)
    assert attempt.state is TaskState.FAILED
    assert attempt.message == (
        "the task cannot start: input artifact 'data' (tasks.make.artifacts.out): task 'make' "
        "stored no artifact 'out' (it did not succeed, was skipped, or does not declare it)"
    )
    assert kube.run_kubectl("get", "job", req.name).returncode != 0, "no Job"
