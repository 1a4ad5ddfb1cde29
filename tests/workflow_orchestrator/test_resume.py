"""What a replica reads again when it resumes runs: the Jobs of every run it owns at a
resync (a Job event lost on the way is repaired), and, for a run it gains, also the Jobs
lost with the replica that had it.

The Orchestrator runs in this process with no operator beside it and no Job watch: every
Job event is "lost", so only what resuming reads can move a run on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.task_execution.service import TaskExecution
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.members import Ownership
from plait.workflow_orchestrator.runtime import Control, Orchestrator
from tests.fixtures.kube import Kube, KubeCluster
from tests.workflow_orchestrator.test_execution import task

pytestmark = pytest.mark.e2e


class Switchable(Ownership):
    """This replica owns every run, or none (as if another replica had them all)."""

    def __init__(self) -> None:
        super().__init__("me")
        self.mine = True

    def owns(self, uid: uuid.UUID | str) -> bool:
        return self.mine


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    db = await Database.open(Settings(database_url=None), environ=environ)
    async with db:
        yield db


async def start_run(
    kube: Kube, database: Database, name: str, tasks: list[dict[str, Any]]
) -> uuid.UUID:
    """A WorkflowInstance and its rows, as the operator records them."""
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": name}},
    }
    created = json.loads(
        kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(instance))
    )
    uid = uuid.UUID(created["metadata"]["uid"])
    async with database.connection("workflow_orchestrator") as conn:
        definition, _ = await repo.upsert_workflow_definition(
            conn, kube.namespace, name, {"tasks": tasks}
        )
        await repo.create_workflow_instance(
            conn,
            id=uid,
            namespace=kube.namespace,
            name=name,
            workflow_name=name,
            workflow_version=definition.version,
        )
    return uid


def jobs_of(kube: Kube, uid: uuid.UUID) -> list[str]:
    listed = json.loads(
        kube.kubectl("get", "jobs", "-l", f"plait.dev/instance-uid={uid}", "-o", "json")
    )
    return [j["metadata"]["name"] for j in listed["items"]]


async def phase_of(database: Database, uid: uuid.UUID) -> str:
    async with database.connection("workflow_orchestrator") as conn:
        instance = await repo.get_workflow_instance(conn, uid)
    assert instance is not None
    return str(instance.phase.value)


@pytest.fixture
def orchestrator(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> tuple[Orchestrator, Switchable, KubeCalls]:
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    calls = KubeCalls()
    ownership = Switchable()
    return (
        Orchestrator(
            database,
            calls,
            TaskExecution(database, calls),
            namespaces=[kube.namespace],
            ownership=ownership,
        ),
        ownership,
        calls,
    )


async def test_a_resync_records_a_finished_job_whose_event_was_lost(
    kube: Kube, database: Database, orchestrator: tuple[Orchestrator, Switchable, KubeCalls]
) -> None:
    runtime, _, calls = orchestrator
    uid = await start_run(kube, database, "lost-event", [task("a")])
    try:
        await runtime.resume_owned()  # start-up: the run is this replica's from now on
        (job,) = jobs_of(kube, uid)
        kube.kubectl("wait", "--for=condition=Complete", f"job/{job}", "--timeout=60s")
        assert await phase_of(database, uid) == "Running", "nothing follows the Jobs here"
        await runtime.resume_owned(all_owned=True)  # the periodic resync
        await runtime.quiesce()
        assert await phase_of(database, uid) == "Succeeded"
    finally:
        await runtime.advance(uid, Control(cancel=True))
        await runtime.quiesce()
        calls.close()


async def test_a_run_gained_again_has_the_job_its_last_owner_lost_recreated(
    kube: Kube, database: Database, orchestrator: tuple[Orchestrator, Switchable, KubeCalls]
) -> None:
    """This replica followed the run, another replica had it for a while (and died
    between recording an attempt and creating its Job), and the run comes back here."""
    runtime, ownership, calls = orchestrator
    uid = await start_run(kube, database, "regained", [task("a", duration="600s")])
    try:
        await runtime.resume_owned()
        (job,) = jobs_of(kube, uid)
        ownership.mine = False
        await runtime.resume_owned()  # the members changed: the run is another's
        kube.kubectl("delete", "job", job, "--wait=true")
        ownership.mine = True
        await runtime.resume_owned()  # the other replica left: the run is this one's again
        assert jobs_of(kube, uid) == [job], "the lost Job was not created again"
    finally:
        await runtime.advance(uid, Control(cancel=True))
        await runtime.quiesce()
        calls.close()


class FailingOnce(TaskExecution):
    """Recording a Job event fails once (the database restarting, say)."""

    failed = False

    async def observe(self, job: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise ConnectionError("the database went away")
        return await super().observe(job)


async def test_a_job_event_that_fails_to_record_is_read_again(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    calls = KubeCalls()
    tasks = FailingOnce(database, calls)
    runtime = Orchestrator(database, calls, tasks, namespaces=[kube.namespace])
    uid = await start_run(kube, database, "failed-event", [task("a")])
    try:
        await runtime.resume_owned()
        (job,) = jobs_of(kube, uid)
        kube.kubectl("wait", "--for=condition=Complete", f"job/{job}", "--timeout=60s")
        finished = json.loads(kube.kubectl("get", "job", job, "-o", "json"))
        await runtime.on_job_event(finished)  # the only event this Job will ever send here
        assert tasks.failed
        assert await phase_of(database, uid) == "Running"
        deadline = asyncio.get_running_loop().time() + 30
        while await phase_of(database, uid) != "Succeeded":
            assert asyncio.get_running_loop().time() < deadline, "the Job was never read again"
            await asyncio.sleep(0.2)
    finally:
        await runtime.advance(uid, Control(cancel=True))
        await runtime.quiesce()
        calls.close()
