"""Running workflow instances: carry out the engine's plans and follow their Jobs.

:meth:`Orchestrator.advance` is the one place a run moves forward. It reads the recorded
state, asks :func:`plait.workflow_orchestrator.engine.plan` what to do, and does it with
idempotent writes. It is called when an instance is created, changed or resumed, when one
of its Jobs changes, and when a retry's backoff is over; calling it again at any time is
harmless, so a crash between any two steps loses nothing: the next call (at the latest
when the restarted operator resumes the instance) picks up where the records stand.

The WorkflowInstance's status is a bounded summary (phase, counts, progress, times,
failure) computed from PostgreSQL, never the task list: a 5,000-task run has the same
small object as a one-task run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from plait.controller.conditions import Condition, merge_conditions
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.resources.common import ContainerTemplate
from plait.resources.task import TaskDefinitionSpec
from plait.resources.workflow import Task, WorkflowDefinitionSpec
from plait.task_execution import repository as task_repository
from plait.task_execution.jobs import LABEL_INSTANCE_UID, JobRequest
from plait.task_execution.repository import TaskInstance
from plait.task_execution.service import TaskExecution
from plait.task_execution.states import FINAL_STATES, TaskState
from plait.workflow_orchestrator import repository
from plait.workflow_orchestrator.engine import Attempt, plan
from plait.workflow_orchestrator.repository import WorkflowInstance
from plait.workflow_orchestrator.states import FINAL_PHASES, WorkflowPhase

__all__ = ["Control", "Orchestrator", "register_runtime"]

logger = logging.getLogger(__name__)
COMPONENT = "workflow_orchestrator"
#: How long Job events of one run are gathered into one status write.
STATUS_COALESCE_SECONDS = 1.0
#: Status keys the summary owns (some only in some phases).
SUMMARY_KEYS = frozenset(
    {
        "phase",
        "definitionVersion",
        "progress",
        "counts",
        "startTime",
        "completionTime",
        "duration",
        "failure",
    }
)
#: Final phases as they appear in a summary.
FINAL_VALUES = frozenset(p.value for p in FINAL_PHASES)
#: Phases a retry (spec.retry) can reopen.
RETRYABLE_PHASES = frozenset({WorkflowPhase.FAILED, WorkflowPhase.ERROR})


@dataclass(frozen=True)
class Control:
    """What the user asks of a run through its spec."""

    cancel: bool = False
    suspend: bool = False
    retry: int = 0


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str | None:
    if start is None:
        return None
    seconds = int(((end or dt.datetime.now(dt.UTC)) - start).total_seconds())
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _rfc3339(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def summarize(
    instance: WorkflowInstance, spec: WorkflowDefinitionSpec, attempts: list[TaskInstance]
) -> dict[str, Any]:
    """The bounded status of a run (the same size whatever the number of tasks)."""
    latest: dict[str, TaskInstance] = {}
    for a in attempts:
        if a.superseded_at is not None:
            continue
        if a.task_name not in latest or a.attempt > latest[a.task_name].attempt:
            latest[a.task_name] = a
    names = [t.name for t in spec.tasks] + ([spec.on_exit.name] if spec.on_exit else [])
    by_state = Counter(latest[n].state for n in names if n in latest)
    total = len(names)
    done = sum(by_state[s] for s in FINAL_STATES)
    status: dict[str, Any] = {
        "phase": instance.phase.value,
        "definitionVersion": instance.workflow_version,
        "progress": f"{done}/{total}",
        "counts": {
            "total": total,
            "pending": total - sum(by_state.values()) + by_state[TaskState.PENDING],
            "running": by_state[TaskState.RUNNING] + by_state[TaskState.WAITING],
            "succeeded": by_state[TaskState.SUCCEEDED],
            "failed": by_state[TaskState.FAILED] + by_state[TaskState.TIMED_OUT],
            "skipped": by_state[TaskState.SKIPPED],
            "cancelled": by_state[TaskState.CANCELLED],
        },
    }
    if instance.started_at:
        status["startTime"] = _rfc3339(instance.started_at)
    if instance.finished_at:
        # Only once over: a running duration would change (and be written) on every look.
        status["completionTime"] = _rfc3339(instance.finished_at)
        status["duration"] = _duration(instance.started_at, instance.finished_at)
    if instance.phase in FINAL_PHASES and instance.phase is not WorkflowPhase.SUCCEEDED:
        status["failure"] = instance.failure or {
            "message": instance.message or instance.phase.value
        }
    return status


class Orchestrator:
    """Moves runs forward; one per operator process."""

    def __init__(self, db: Database, kube: Kube, tasks: TaskExecution) -> None:
        self._db = db
        self._kube = kube
        self._tasks = tasks
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._wakeups: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self._pending_status: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._controls: dict[uuid.UUID, Control] = {}
        self._to_publish: dict[uuid.UUID, tuple[str, str]] = {}
        self._dirty: dict[uuid.UUID, tuple[str, str]] = {}
        self._drainers: dict[uuid.UUID, asyncio.Task[None]] = {}

    # -- entry points ----------------------------------------------------------------------
    async def advance(
        self, uid: uuid.UUID, control: Control | None = None, *, ensure_jobs: bool = False
    ) -> dict[str, Any] | None:
        """Move one run forward as far as it can go now; returns its status summary."""
        if control is not None:
            self._controls[uid] = control
        control = self._controls.get(uid, Control())
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            summary = await self._advance(uid, control, ensure_jobs=ensure_jobs)
        if (summary is None or summary["phase"] in FINAL_VALUES) and not lock.locked():
            # A finished run needs no per-run state in memory (a retry recreates it).
            self._locks.pop(uid, None)
            self._controls.pop(uid, None)
        return summary

    async def on_job_event(self, job: Mapping[str, Any]) -> None:
        """A Job changed: record its attempt's state now, and have its run advanced.

        Recording is done before returning (the Job's outcome is then safe in PostgreSQL);
        advancing is coalesced per run: a burst of Job events (a wide fan-out finishing)
        costs one advance, not one per event. If the process dies before that advance,
        resuming the instance at start-up does it.
        """
        changed = await self._tasks.observe(job)
        if changed is None:
            return
        meta = job.get("metadata") or {}
        owner: dict[str, Any] = next(iter(meta.get("ownerReferences") or ()), {})
        if owner.get("name"):
            self.kick(changed.workflow_instance_id, meta["namespace"], owner["name"])

    def kick(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        """Advance a run (and publish its status) soon, once for any number of kicks."""
        self._dirty[uid] = (namespace, name)
        runner = self._drainers.get(uid)
        if runner is None or runner.done():
            self._drainers[uid] = asyncio.ensure_future(self._drain(uid))

    async def _drain(self, uid: uuid.UUID) -> None:
        while uid in self._dirty:
            namespace, name = self._dirty.pop(uid)
            try:
                await self.advance(uid)
            except Exception:
                # The attempt's state is recorded; the next event, the resync or a restart
                # advances the run. Nothing is lost by giving up here.
                logger.exception("advancing %s/%s failed", namespace, name)
            self._publish_soon(uid, namespace, name)
        self._drainers.pop(uid, None)

    # -- internals -------------------------------------------------------------------------
    async def _load(self, uid: uuid.UUID) -> tuple[WorkflowInstance, WorkflowDefinitionSpec] | None:
        async with self._db.connection(COMPONENT) as conn:
            instance = await repository.get_workflow_instance(conn, uid)
            if instance is None:
                return None
            definition = await repository.get_workflow_definition(
                conn, instance.namespace, instance.workflow_name, instance.workflow_version
            )
        assert definition is not None  # the foreign key pins it
        return instance, WorkflowDefinitionSpec.model_validate(definition.spec)

    async def _set_phase(
        self,
        uid: uuid.UUID,
        phase: WorkflowPhase,
        *,
        message: str | None = None,
        outputs: Mapping[str, Any] | None = None,
        failure: Mapping[str, Any] | None = None,
    ) -> None:
        async with self._db.connection(COMPONENT) as conn:
            await repository.set_workflow_phase(
                conn, uid, phase, message=message, outputs=outputs, failure=failure
            )

    async def _advance(
        self, uid: uuid.UUID, control: Control, *, ensure_jobs: bool
    ) -> dict[str, Any] | None:
        loaded = await self._load(uid)
        if loaded is None:
            return None
        instance, spec = loaded
        if control.retry > instance.retries and instance.phase in RETRYABLE_PHASES:
            # Supersede first, then reopen: a crash in between is repaired by the next
            # call, which finds the run still failed and the same retry still asked for.
            await self._tasks.supersede_unsuccessful(uid)
            async with self._db.connection(COMPONENT) as conn:
                await repository.reopen_for_retry(conn, uid, control.retry)
            reloaded = await self._load(uid)
            assert reloaded is not None
            instance = reloaded[0]
        for _ in range(len(spec.tasks) + 2):  # skips can unblock more tasks at once
            everything = await self._tasks.attempts(uid)
            attempts = [a for a in everything if a.superseded_at is None]
            base: dict[str, int] = {}
            for a in everything:
                if a.superseded_at is not None:
                    base[a.task_name] = max(base.get(a.task_name, 0), a.attempt)
            if instance.phase in FINAL_PHASES:
                if any(a.state not in FINAL_STATES for a in attempts):
                    await self._tasks.cancel_active(uid, f"the workflow {instance.phase.value}")
                break
            if control.cancel:
                await self._tasks.cancel_active(uid, "the workflow was cancelled")
                await self._set_phase(
                    uid, WorkflowPhase.CANCELLED, message="cancelled by spec.cancel"
                )
                break
            if control.suspend and instance.phase is WorkflowPhase.RUNNING:
                await self._set_phase(
                    uid, WorkflowPhase.SUSPENDED, message="suspended by spec.suspend"
                )
            elif not control.suspend and instance.phase is WorkflowPhase.SUSPENDED:
                await self._set_phase(uid, WorkflowPhase.RUNNING, message="resumed")
            if ensure_jobs:
                await self._ensure_jobs(instance, spec, attempts)
                ensure_jobs = False
            deadline = (
                instance.started_at + dt.timedelta(seconds=spec.timeout_seconds)
                if instance.started_at and spec.timeout_seconds
                else None
            )
            now = dt.datetime.now(dt.UTC)
            decision = plan(
                spec,
                instance.inputs,
                [_as_attempt(a) for a in attempts],
                now=now,
                suspended=control.suspend,
                deadline=deadline,
                attempt_base=base,
            )
            for skip in decision.skips:
                await self._tasks.record_without_job(
                    namespace=instance.namespace,
                    instance_name=instance.name,
                    instance_uid=str(uid),
                    task=skip.task,
                    attempt=skip.attempt,
                    state=TaskState.FAILED if skip.failed else TaskState.SKIPPED,
                    reason=skip.reason,
                )
            if decision.launches and instance.phase is WorkflowPhase.PENDING:
                await self._set_phase(uid, WorkflowPhase.RUNNING, message="running")
            for launch in decision.launches:
                task = _task(spec, launch.task)
                template, definition = await self._template(instance.namespace, task)
                await self._tasks.start(
                    JobRequest(
                        namespace=instance.namespace,
                        instance_name=instance.name,
                        instance_uid=str(uid),
                        task=launch.task,
                        attempt=launch.attempt,
                        template=template,
                        inputs=launch.inputs,
                        timeout_seconds=task.timeout_seconds,
                    ),
                    definition=definition,
                )
            if decision.retry_at is not None:
                self._wake_at(uid, decision.retry_at)
            if decision.phase is not None:
                if any(a.state not in FINAL_STATES for a in attempts):
                    await self._tasks.cancel_active(uid, "the workflow ended")
                await self._set_phase(
                    uid,
                    decision.phase,
                    message=decision.failure.message if decision.failure else "succeeded",
                    outputs=decision.outputs,
                    failure=decision.failure.as_status() if decision.failure else None,
                )
                break
            if not decision.skips:
                break
            loaded = await self._load(uid)
            assert loaded is not None
            instance = loaded[0]
        refreshed = await self._load(uid)
        assert refreshed is not None
        return summarize(refreshed[0], spec, await self._tasks.attempts(uid))

    async def _template(
        self, namespace: str, task: Task
    ) -> tuple[ContainerTemplate, tuple[str, int] | None]:
        if task.template is not None:
            return task.template, None
        assert task.task_ref is not None  # validated: exactly one of template/taskRef
        async with self._db.connection("task_execution") as conn:
            found = await task_repository.latest_task_definition(
                conn, namespace, task.task_ref.name
            )
        if found is None or found.deleted_at is not None:
            raise kopf.TemporaryError(
                f"TaskDefinition {task.task_ref.name!r} is not stored (yet)", delay=5
            )
        spec = TaskDefinitionSpec.model_validate(found.spec)
        return spec.template, (found.name, found.version)

    async def _ensure_jobs(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, attempts: list[TaskInstance]
    ) -> None:
        requests = []
        for a in attempts:
            if a.state is not TaskState.PENDING:
                continue
            task = _task(spec, a.task_name)
            template, _ = await self._template(instance.namespace, task)
            requests.append(
                JobRequest(
                    namespace=instance.namespace,
                    instance_name=instance.name,
                    instance_uid=str(instance.id),
                    task=a.task_name,
                    attempt=a.attempt,
                    template=template,
                    inputs=a.inputs,
                    timeout_seconds=task.timeout_seconds,
                )
            )
        await self._tasks.ensure_jobs(requests)

    def _wake_at(self, uid: uuid.UUID, when: dt.datetime) -> None:
        """Advance again when a retry's backoff ends (a restart re-plans it anyway)."""
        loop = asyncio.get_running_loop()
        if uid in self._wakeups:
            self._wakeups[uid].cancel()
        delay = max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)
        self._wakeups[uid] = loop.call_later(delay, lambda: asyncio.ensure_future(self._woken(uid)))

    async def _woken(self, uid: uuid.UUID) -> None:
        self._wakeups.pop(uid, None)
        loaded = await self._load(uid)
        if loaded is not None:
            self.kick(uid, loaded[0].namespace, loaded[0].name)

    def _publish_soon(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        """Publish the status shortly, coalescing a burst of Job events into one write."""
        self._to_publish[uid] = (namespace, name)
        if uid in self._pending_status and not self._pending_status[uid].done():
            return
        self._pending_status[uid] = asyncio.ensure_future(self._publish_later(uid))

    async def _publish_later(self, uid: uuid.UUID) -> None:
        # Every status write is an API call: within this window, the changes of a run
        # (its tasks starting and finishing) make one write. The phase is in PostgreSQL
        # at once; only the object's summary trails by up to this much.
        await asyncio.sleep(STATUS_COALESCE_SECONDS)
        while uid in self._to_publish:
            namespace, name = self._to_publish.pop(uid)
            try:
                await self.publish(uid, namespace, name)
            except Exception:
                logger.exception("publishing the status of %s/%s failed", namespace, name)

    async def publish(
        self, uid: uuid.UUID, namespace: str, name: str, *, generation: int | None = None
    ) -> None:
        """Write the run's summary to its object, safely with any number of writers.

        The summary is computed from PostgreSQL *after* the object is read, and the patch
        carries that read's resourceVersion: a writer holding an older view gets a conflict
        and recomputes, so the object never goes back to a stale summary.
        """
        for _ in range(10):
            obj = await self._kube.get_instance(namespace, name)
            loaded = await self._load(uid)
            if obj is None or loaded is None:
                return
            summary = summarize(loaded[0], loaded[1], await self._tasks.attempts(uid))
            current = obj.get("status") or {}
            observed = generation if generation is not None else current.get("observedGeneration")
            condition = succeeded_condition(summary, observed or 0)
            desired: dict[str, Any] = {
                **summary,
                "conditions": merge_conditions(current.get("conditions"), [condition]),
            }
            if observed is not None:
                desired["observedGeneration"] = observed
            # A merge patch keeps keys it does not mention: clear those a reopened (retried)
            # run no longer has.
            for key in SUMMARY_KEYS - desired.keys():
                if key in current:
                    desired[key] = None
            if all(current.get(k) == v for k, v in desired.items()):
                return
            if await self._kube.patch_instance_status(
                namespace, name, desired, resource_version=obj["metadata"]["resourceVersion"]
            ):
                return
        logger.warning("gave up publishing the status of %s/%s after conflicts", namespace, name)


def succeeded_condition(summary: Mapping[str, Any], generation: int) -> Condition:
    """The ``Succeeded`` condition of a run from its summary."""
    phase = summary["phase"]
    failure = summary.get("failure") or {}
    if phase == WorkflowPhase.SUCCEEDED.value:
        return Condition("Succeeded", "True", "Succeeded", "every task succeeded", generation)
    if phase in {p.value for p in FINAL_PHASES}:
        return Condition("Succeeded", "False", phase, failure.get("message", phase), generation)
    return Condition("Succeeded", "Unknown", phase, f"{summary['progress']} tasks done", generation)


def _task(spec: WorkflowDefinitionSpec, name: str) -> Task:
    if spec.on_exit is not None and spec.on_exit.name == name:
        return spec.on_exit
    return next(t for t in spec.tasks if t.name == name)


def _as_attempt(a: TaskInstance) -> Attempt:
    return Attempt(
        task=a.task_name,
        attempt=a.attempt,
        state=a.state,
        outputs=a.outputs,
        exit_code=a.exit_code,
        message=a.message,
        finished_at=a.finished_at,
    )


def register_runtime(registry: kopf.OperatorRegistry, orchestrator: Orchestrator) -> None:
    """Follow Plait's Jobs with an event handler: it writes nothing back to them."""

    async def job_event(body: kopf.Body, **_: Any) -> None:
        await orchestrator.on_job_event(dict(body))

    kopf.on.event(
        "batch",
        "v1",
        "jobs",
        id="follow-plait-jobs",
        labels={LABEL_INSTANCE_UID: kopf.PRESENT},
        registry=registry,
    )(job_event)
