"""How a run's status is written, against the real API server: from the object as last
seen (no read before each write), conditional on its resourceVersion, and never back to
an older summary when someone else wrote meanwhile.

The Orchestrator runs in this process with no operator beside it; the test hands it the
object versions a watch would (``Orchestrator.saw``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from kubernetes import config

from plait.kernel.components import COMPONENTS
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.resources.workflow import WorkflowDefinitionSpec
from plait.task_execution.service import TaskExecution
from plait.workflow_orchestrator import repository as repo
from plait.workflow_orchestrator.members import sole_owner
from plait.workflow_orchestrator.runtime import (
    STATUS_COALESCE_SECONDS,
    Control,
    Orchestrator,
    summarize,
)
from tests.fixtures.kube import Kube, KubeCluster
from tests.workflow_orchestrator.test_execution import task

pytestmark = pytest.mark.e2e


class CountingApiServer(KubeCalls):
    """The real client; counts the reads of WorkflowInstances and the status writes."""

    def __init__(self) -> None:
        super().__init__(pool_size=4)
        self.reads = 0
        self.writes: list[dict[str, Any] | None] = []

    async def get_instance(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return await super().get_instance(namespace, name)

    async def patch_instance_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        written = await super().patch_instance_status(
            namespace, name, status, resource_version=resource_version
        )
        self.writes.append(written)
        return written


@pytest.fixture
async def database(component_dsns: dict[str, str]) -> AsyncIterator[Database]:
    environ = {f"PLAIT_DATABASE_URL_{c.env_suffix}": component_dsns[c.name] for c in COMPONENTS}
    db = await Database.open(Settings(database_url=None), environ=environ)
    async with db:
        yield db


async def define(
    database: Database, kube: Kube, name: str, spec: dict[str, Any]
) -> repo.WorkflowDefinition:
    """Record a WorkflowDefinition's version, as its reconciler does."""
    async with database.connection("workflow_orchestrator") as conn:
        definition, _ = await repo.upsert_workflow_definition(conn, kube.namespace, name, spec)
    return definition


async def record_run(
    kube: Kube, database: Database, name: str, definition: repo.WorkflowDefinition
) -> tuple[dict[str, Any], repo.WorkflowInstance]:
    """Create the WorkflowInstance object (its Jobs' owner: without it the garbage
    collector deletes them) and record its row, as the reconciler does; no operator runs."""
    manifest = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": definition.name}},
    }
    created = json.loads(
        kube.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(manifest))
    )
    async with database.connection("workflow_orchestrator") as conn:
        row, inserted = await repo.create_workflow_instance(
            conn,
            id=uuid.UUID(created["metadata"]["uid"]),
            namespace=kube.namespace,
            name=name,
            workflow_name=definition.name,
            workflow_version=definition.version,
        )
    assert inserted
    return created, row


async def test_status_is_written_from_the_last_seen_version_and_never_goes_back(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = CountingApiServer()
    orchestrator = Orchestrator(database, api, TaskExecution(database, api))
    definition = await define(database, kube, "pair", {"tasks": [task("a"), task("b")]})
    created, row = await record_run(kube, database, "status-run", definition)
    uid = row.id

    def status() -> dict[str, Any]:
        obj = json.loads(kube.kubectl("get", "workflowinstance", "status-run", "-o", "json"))
        return dict(obj.get("status") or {})

    try:
        orchestrator.saw(created)  # what the watch's ADDED event hands over
        await orchestrator.advance(uid, Control(), ensure_jobs=True)
        await orchestrator.publish(uid, kube.namespace, "status-run", generation=1)
        assert api.reads == 0, "the first write started from the version the watch delivered"
        assert len(api.writes) == 1
        assert api.writes[0] is not None
        first = status()
        assert (first["phase"], first["progress"], first["observedGeneration"]) == (
            "Running",
            "0/2",
            1,
        )
        assert first["counts"]["pending"] == 2

        # Nothing changed: no write at all.
        await orchestrator.publish(uid, kube.namespace, "status-run")
        assert (api.reads, len(api.writes)) == (0, 1)

        # Someone else writes an older summary meanwhile (the watch has not delivered it):
        # the next write conflicts, reads the object, and puts the records' summary back.
        kube.kubectl(
            "patch",
            "workflowinstance",
            "status-run",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": "Pending", "progress": "0/0"}}),
        )
        async with database.connection("task_execution") as conn:
            await conn.execute(
                "UPDATE task_execution_service.task_instances SET state = 'Running', "
                "started_at = now() WHERE workflow_instance_id = %s",
                (uid,),
            )
        orchestrator.records_changed(uid)  # as every writer of a run's records says
        await orchestrator.publish(uid, kube.namespace, "status-run")
        assert api.reads == 1, "a conflict, and only a conflict, reads the object"
        assert api.writes[-2] is None
        assert api.writes[-1] is not None
        after = status()
        assert (after["phase"], after["progress"]) == ("Running", "0/2")
        assert after["counts"]["running"] == 2, after["counts"]
    finally:
        await orchestrator.advance(uid, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


class CountedTransactions:
    """Wraps ``Database.connection`` of one database: every use is one transaction."""

    def __init__(self, database: Database) -> None:
        self.components: list[str] = []
        self._connection = database.connection
        database.connection = self.connection  # type: ignore[method-assign]

    def connection(self, component: str) -> contextlib.AbstractAsyncContextManager[Any]:
        self.components.append(str(component))
        return self._connection(component)


async def test_a_run_just_recorded_is_launched_and_summarised_without_reading_it_again(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    """The reconciler hands the advance the row it has just inserted: the first advance
    reads neither the run nor its (no) attempts, and summarises what it wrote; that
    summary is the one the records give when read afresh."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = CountingApiServer()
    orchestrator = Orchestrator(database, api, TaskExecution(database, api))
    definition = await define(database, kube, "one", {"tasks": [task("only")]})
    runs: dict[str, tuple[uuid.UUID, repo.WorkflowInstance]] = {}
    for name in ("recorded-run", "read-run"):
        _, row = await record_run(kube, database, name, definition)
        runs[name] = (row.id, row)
    await orchestrator.advance(runs["read-run"][0], Control())  # the definition is cached

    await orchestrator.quiesce()  # nothing of that run is counted below
    counted = CountedTransactions(database)
    uid, row = runs["recorded-run"]
    try:
        advanced = await orchestrator.advance(uid, Control(), ensure_jobs=True, recorded=row)
        assert counted.components[:] == ["workflow_orchestrator", "task_execution"], (
            "the run goes Running, its attempt is recorded: nothing is read"
        )
        assert advanced is not None
        summary = advanced.status()
        assert (summary["phase"], summary["progress"], summary["counts"]["pending"]) == (
            "Running",
            "0/1",
            1,
        )
        async with database.connection("workflow_orchestrator") as conn:
            now = await repo.get_workflow_instance(conn, uid)
        assert now is not None
        spec = WorkflowDefinitionSpec.model_validate(definition.spec)
        attempts = await TaskExecution(database, api).attempts(uid)
        assert [a.task_name for a in attempts] == ["only"]
        assert summary == summarize(now, spec, attempts), "the same as read afresh"
        jobs = json.loads(kube.kubectl("get", "jobs", "-o", "json"))["items"]
        owners = {ref["uid"] for job in jobs for ref in job["metadata"]["ownerReferences"]}
        assert str(uid) in owners, "the run's Job was created"

        # A run advanced before by this process: the row handed over may be older than
        # that advance, so it is not used; the records that advance kept are.
        await orchestrator.quiesce()
        counted.components.clear()
        await orchestrator.advance(uid, Control(), recorded=row)
        assert counted.components[:] == [], (
            "nothing read, nothing written: the old row would have launched the task again"
        )
        # Once something else changed its records, they are read (once: an advance that
        # launched nothing reads no more).
        orchestrator.records_changed(uid)
        await orchestrator.advance(uid, Control(), recorded=row)
        assert counted.components[:] == ["workflow_orchestrator", "task_execution"]
    finally:
        for uid, _ in runs.values():
            await orchestrator.advance(uid, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


class RunningBeforeTheAdvanceEnds(KubeCalls):
    """The real client; once a Job it created is active, hands that Job to the
    orchestrator (as its watch would) before the create returns to the advance."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(pool_size=4)
        self.kube = kube
        self.orchestrator: Orchestrator | None = None
        self.delivered: list[str] = []

    async def create_job(self, manifest: Mapping[str, Any]) -> bool:
        created = await super().create_job(manifest)
        name = manifest["metadata"]["name"]
        job = await job_when(self.kube, name, lambda status: bool(status.get("active")))
        assert self.orchestrator is not None
        await self.orchestrator.on_job_event(job)
        self.delivered.append(name)
        return created


async def test_a_task_going_running_during_the_advance_that_launched_it_is_published(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    """A Job's event recorded while the advance that created the Job is still under way
    (a busy machine, a burst of launches): that advance's summary does not know it, so
    the next status write reads the records instead of reusing it."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = RunningBeforeTheAdvanceEnds(kube)
    orchestrator = Orchestrator(database, api, TaskExecution(database, api))
    api.orchestrator = orchestrator
    definition = await define(database, kube, "slow", {"tasks": [task("long", duration="300s")]})
    created, row = await record_run(kube, database, "busy-run", definition)
    uid = row.id
    try:
        orchestrator.saw(created)
        advanced = await orchestrator.advance(uid, Control(), ensure_jobs=True, recorded=row)
        assert len(api.delivered) == 1, "the Job's event came during the advance"
        assert advanced is not None
        assert advanced.status()["counts"]["running"] == 0, "the advance itself did not see it"
        await orchestrator.publish(uid, kube.namespace, "busy-run", generation=1)
        obj = json.loads(kube.kubectl("get", "workflowinstance", "busy-run", "-o", "json"))
        assert obj["status"]["counts"]["running"] == 1, obj["status"]
    finally:
        await orchestrator.advance(uid, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


async def job_when(
    kube: Kube, name: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The Job as its watch would deliver it once ``ready`` holds (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        job = json.loads(await asyncio.to_thread(kube.kubectl, "get", "job", name, "-o", "json"))
        if ready(job.get("status") or {}):
            return dict(job)
        assert time.monotonic() < deadline, job.get("status")
        await asyncio.sleep(0.1)


async def test_a_run_is_advanced_and_published_from_the_records_it_kept(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    """Between advances the orchestrator keeps a run's row and attempts, updated by the
    Job events it records: the status write after the task goes Running and the advance
    after it ends read nothing, and say what the records, read afresh, say."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = CountingApiServer()
    definition = await define(database, kube, "kept", {"tasks": [task("only", duration="2s")]})
    spec = WorkflowDefinitionSpec.model_validate(definition.spec)
    created, row = await record_run(kube, database, "kept-run", definition)
    uid = row.id

    async def afresh() -> dict[str, Any]:
        async with database.connection("workflow_orchestrator") as conn:
            now = await repo.get_workflow_instance(conn, uid)
        assert now is not None
        return summarize(now, spec, await TaskExecution(database, api).attempts(uid))

    def status() -> dict[str, Any]:
        obj = json.loads(kube.kubectl("get", "workflowinstance", "kept-run", "-o", "json"))
        return dict(obj.get("status") or {})

    tasks = TaskExecution(database, api)
    orchestrator = Orchestrator(database, api, tasks)
    counted = CountedTransactions(database)
    try:
        orchestrator.saw(created)
        await orchestrator.advance(uid, Control(), ensure_jobs=True, recorded=row)
        await orchestrator.publish(uid, kube.namespace, "kept-run", generation=1)
        jobs = json.loads(kube.kubectl("get", "jobs", "-o", "json"))["items"]
        [name] = [j["metadata"]["name"] for j in jobs]

        running = await job_when(kube, name, lambda s: bool(s.get("active")))
        counted.components.clear()
        await orchestrator.on_job_event(running)
        await orchestrator.publish(uid, kube.namespace, "kept-run")
        assert counted.components == ["task_execution"], "the attempt goes Running; no read"
        assert status()["counts"] == (await afresh())["counts"]
        assert status()["counts"]["running"] == 1

        done = await job_when(kube, name, lambda s: bool(s.get("succeeded")))
        for pod in json.loads(kube.kubectl("get", "pods", "-l", f"job-name={name}", "-o", "json"))[
            "items"
        ]:
            tasks.pods.on_pod("MODIFIED", pod)  # as the Pod watch delivers it
        counted.components.clear()
        await orchestrator.on_job_event(done)
        await orchestrator.quiesce()
        assert counted.components == ["task_execution", "workflow_orchestrator"], (
            "the attempt goes Succeeded, the run goes Succeeded: nothing is read"
        )
        fresh = await afresh()
        assert (fresh["phase"], fresh["progress"]) == ("Succeeded", "1/1")
        shown = status()
        for key in ("phase", "progress", "counts", "startTime", "completionTime", "duration"):
            assert shown[key] == fresh[key], key
    finally:
        await orchestrator.advance(uid, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


@pytest.mark.parametrize(
    ("tasks", "exclusive"),
    [
        ([task("only")], False),
        (
            [
                task("only"),
                {"name": "wait", "waitForEvent": {"eventType": "paid", "correlation": "true"}},
            ],
            True,
        ),
    ],
    ids=["not-sharing", "waits-for-an-event"],
)
async def test_a_run_another_process_may_advance_is_read_at_every_advance(
    plait_crds: KubeCluster,
    kube: Kube,
    database: Database,
    tasks: list[dict[str, Any]],
    exclusive: bool,
) -> None:
    """Replicas that each advance every run (--no-share-runs), and a run a wait's event
    may advance in another replica, keep no records between advances: they are read."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = CountingApiServer()
    ownership = sole_owner(exclusive=exclusive)
    orchestrator = Orchestrator(database, api, TaskExecution(database, api), ownership=ownership)
    definition = await define(database, kube, "shared", {"tasks": tasks})
    _, row = await record_run(kube, database, "shared-run", definition)
    counted = CountedTransactions(database)
    try:
        await orchestrator.advance(row.id, Control(), ensure_jobs=True, recorded=row)
        await orchestrator.advance(row.id, Control())  # one that launches nothing
        await orchestrator.quiesce()
        counted.components.clear()
        await orchestrator.advance(row.id, Control())
        assert counted.components[:2] == ["workflow_orchestrator", "task_execution"], (
            "the run and its attempts are read"
        )
    finally:
        await orchestrator.advance(row.id, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


async def test_an_advance_overtaken_by_a_change_keeps_nothing_though_the_object_is_forgotten(
    plait_crds: KubeCluster, kube: Kube, database: Database
) -> None:
    """A change to a run's records while an advance is under way keeps that advance from
    keeping what it read, also when the run's object is forgotten meanwhile (a watch event
    that still says Failed while the run is retried): the next advance reads again."""
    config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
    api = CountingApiServer()
    orchestrator = Orchestrator(database, api, TaskExecution(database, api))
    definition = await define(database, kube, "overtaken", {"tasks": [task("only")]})
    _, row = await record_run(kube, database, "overtaken-run", definition)
    counted = CountedTransactions(database)
    try:
        await orchestrator.advance(row.id, Control(), ensure_jobs=True, recorded=row)
        under_way = asyncio.ensure_future(orchestrator.advance(row.id, ensure_jobs=True))
        await asyncio.sleep(0)  # it has begun, and waits for its first read
        assert not under_way.done()
        orchestrator.records_changed(row.id)
        orchestrator.forget_object(row.id)
        await under_way
        await orchestrator.quiesce()
        counted.components.clear()
        await orchestrator.advance(row.id)
        assert counted.components[:2] == ["workflow_orchestrator", "task_execution"], (
            "the run and its attempts are read"
        )
    finally:
        await orchestrator.advance(row.id, Control(cancel=True))
        await orchestrator.quiesce()
        api.close()


class SlowWrites(Orchestrator):
    """Each status write takes WRITE_SECONDS (a busy API server); records when each began.
    Only the coalescing of writes is under test, so nothing is written."""

    def __init__(self, database: Database, kube: KubeCalls) -> None:
        super().__init__(database, kube, TaskExecution(database, kube))
        self.write_began: list[float] = []

    async def publish(
        self, uid: uuid.UUID, namespace: str, name: str, *, generation: int | None = None
    ) -> None:
        self.write_began.append(time.monotonic())
        await asyncio.sleep(WRITE_SECONDS)


WRITE_SECONDS = 0.3


async def test_changes_asked_for_during_a_write_wait_for_their_own_turn(
    database: Database,
) -> None:
    """A run whose Job events never stop (a big fan-out) is written once per coalescing
    period, not again the moment each write ends."""
    orchestrator = SlowWrites(database, CountingApiServer())
    uid = uuid.uuid4()
    asked_until = time.monotonic() + 3.5
    while time.monotonic() < asked_until:
        last_asked = time.monotonic()
        orchestrator._publish_soon(uid, "ns", "run")  # what each advance asks for
        await asyncio.sleep(0.05)
    await orchestrator._pending_status[uid]
    began = orchestrator.write_began
    assert began[-1] >= last_asked, "the last change asked for was never written"
    gaps = [later - earlier for earlier, later in itertools.pairwise(began)]
    assert len(began) >= 3, began
    assert min(gaps) >= STATUS_COALESCE_SECONDS - 0.1, gaps
