"""How one advance starts many attempts: a few at a time, with the status published
along the way, against the real API server made slow (every Job create delayed, as on a
busy control plane).

The Orchestrator runs in this process with no operator beside it, so the advance under
test is the only writer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.task_execution.service import TaskExecution
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.runtime import LAUNCH_CONCURRENCY, Control, Orchestrator
from tests.fixtures.kube import Kube, KubeCluster
from tests.workflow_orchestrator.test_execution import task

pytestmark = pytest.mark.e2e

#: Added to every Job create: 120 items then take 24 s one after another, 3 s eight at once.
CREATE_DELAY = 0.2
ITEMS = 120


class SlowApiServer(KubeCalls):
    """The real client, each Job create delayed; records what was in flight and when the
    status was written."""

    def __init__(self) -> None:
        super().__init__(pool_size=LAUNCH_CONCURRENCY * 2)
        self.in_flight = 0
        self.most_in_flight = 0
        self.create_started: list[float] = []
        self.status_writes: list[tuple[float, Mapping[str, Any]]] = []

    async def create_job(self, manifest: Mapping[str, Any]) -> bool:
        self.create_started.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(CREATE_DELAY)
            return await super().create_job(manifest)
        finally:
            self.in_flight -= 1

    async def patch_instance_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        self.status_writes.append((time.monotonic(), dict(status)))
        return await super().patch_instance_status(
            namespace, name, status, resource_version=resource_version
        )


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    db = await Database.open(Settings(database_url=None), environ=environ)
    async with db:
        yield db


async def test_a_wide_advance_starts_a_few_at_a_time_and_publishes_as_it_goes(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    slow = SlowApiServer()
    orchestrator = Orchestrator(database, slow, TaskExecution(database, slow))
    each = task("each")
    each["forEach"] = {"items": list(range(ITEMS))}
    spec = {"tasks": [each]}
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": "wide-run"},
        "spec": {"workflowRef": {"name": "wide"}},
    }
    created = json.loads(
        kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(instance))
    )
    uid = uuid.UUID(created["metadata"]["uid"])
    async with database.connection("workflow_orchestrator") as conn:
        definition, _ = await repo.upsert_workflow_definition(conn, kube.namespace, "wide", spec)
        await repo.create_workflow_instance(
            conn,
            id=uid,
            namespace=kube.namespace,
            name="wide-run",
            workflow_name="wide",
            workflow_version=definition.version,
        )
    try:
        await orchestrator.advance(uid, Control())
        assert len(slow.create_started) == ITEMS, "one Job per item"
        assert slow.most_in_flight == LAUNCH_CONCURRENCY, "a few at a time, never more"
        last_start = max(slow.create_started)
        during = [s for t, s in slow.status_writes if t < last_start]
        assert during, "no status was written while the items were being started"
        assert during[-1]["counts"]["total"] == ITEMS, during[-1]
        assert during[-1]["phase"] == "Running", during[-1]
        made = json.loads(kube.kubectl("get", "jobs", "-o", "json"))["items"]
        assert len(made) == ITEMS
    finally:
        await orchestrator.advance(uid, Control(cancel=True))
        await orchestrator.quiesce()
        slow.close()
