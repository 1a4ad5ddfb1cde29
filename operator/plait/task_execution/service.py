"""Task execution as other components see it: attempts recorded, run as Jobs, observed.

The workflow orchestrator decides *what* runs; this component owns *how*: the attempt rows
in ``task_execution_service`` and the Jobs in Kubernetes. Every operation is idempotent,
keyed by (instance, task, attempt) and by the Job's deterministic name, which is what makes
a crash at any point, or two operators at once, harmless:

- :meth:`start` records the attempt *before* creating its Job, so a Job never exists
  without its row; a row left without its Job by a crash gets it from :meth:`ensure_jobs`.
- :meth:`observe` turns a Job's (and its Pod's) final state into the attempt's state once;
  seeing the same finished Job again changes nothing.
- :meth:`observe_refusal` fails an attempt whose Pod the API server refuses for good (the
  namespace's Pod Security level, a missing ServiceAccount): the Job controller would
  retry such a Pod forever, and a Job says so only in its FailedCreate Events.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from plait.integration import credentials
from plait.kernel.database import Database
from plait.kernel.kube import Kube, PodResult
from plait.task_execution import repository
from plait.task_execution.artifacts import ArtifactError, Artifacts, ArtifactSettings
from plait.task_execution.jobs import (
    LABEL_INSTANCE_UID,
    TERMINATION_MESSAGE_LIMIT,
    JobRequest,
    artifact_secret,
    build_job,
    job_name,
)
from plait.task_execution.pods import PodResults
from plait.task_execution.repository import TaskInstance
from plait.task_execution.states import FINAL_STATES, FailureCause, TaskState

__all__ = [
    "JOB_REFUSAL_EVENTS",
    "PERMANENT_REFUSALS",
    "TaskExecution",
    "failure_cause",
    "outputs_from_message",
]

logger = logging.getLogger(__name__)
COMPONENT = "task_execution"
#: Job names whose recorded state this process remembers (a Job's later events that say
#: nothing new then cost no statement); about 100 bytes each.
RECORDED_JOBS = 20_000

#: Texts of a FailedCreate Event that no retry of the Job controller can cure: the Pod
#: breaks the namespace's Pod Security level, or names a ServiceAccount that does not exist.
PERMANENT_REFUSALS = ("violates PodSecurity", "error looking up service account")
#: Field selector of the Events :meth:`TaskExecution.observe_refusal` reads.
JOB_REFUSAL_EVENTS = "involvedObject.kind=Job,reason=FailedCreate"


def outputs_from_message(message: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """A task's outputs from its termination message: a JSON object, else none (and the
    text is kept as the attempt's message)."""
    if not message:
        return None, None
    text = message[:TERMINATION_MESSAGE_LIMIT]
    try:
        value = json.loads(text)
    except ValueError:
        return None, text
    if isinstance(value, dict):
        return value, None
    return None, text


#: Container reasons that mean the process never ran to an exit of its own.
CONTAINER_ERRORS = frozenset(
    {
        "ContainerCannotRun",
        "ContainerStatusUnknown",
        "CreateContainerConfigError",
        "CreateContainerError",
        "StartError",
    }
)
#: Pod reasons that mean the Pod was stopped from outside, whatever its container did.
POD_ERRORS = frozenset(
    {"Evicted", "NodeAffinity", "NodeLost", "Preempting", "Shutdown", "Terminated"}
)


def failure_cause(result: PodResult | None) -> FailureCause:
    """Whether a failed Job's attempt failed by itself (a non-zero exit of its process)
    or by an error around it (no exit recorded, a container that could not start, an
    evicted Pod): what ``retries.retryOn`` tells apart."""
    if result is None or result.exit_code in (None, 0):
        return FailureCause.ERROR
    if result.reason in CONTAINER_ERRORS or result.pod_reason in POD_ERRORS:
        return FailureCause.ERROR
    return FailureCause.FAILURE


def _pod_words(result: PodResult | None) -> str | None:
    """What the Pod says of its end when the task wrote no message."""
    if result is None:
        return None
    if result.pod_reason in POD_ERRORS:
        return f"the Pod was stopped: {result.pod_reason}"
    return result.reason


def _job_condition(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """("Complete"|"Failed", reason) once the Job is finished."""
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            return cond["type"], cond.get("reason") or ""
    return None


def _has_artifacts(job: Mapping[str, Any]) -> bool:
    """The Job carries artifacts (plait-artifacts is its init container)."""
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return any(c.get("name") == "plait-artifacts" for c in pod.get("initContainers") or ())


@dataclasses.dataclass(frozen=True)
class _Ending:
    """What a finished Job's attempt is recorded with."""

    state: TaskState
    exit_code: int | None
    outputs: dict[str, Any] | None
    message: str | None
    cause: FailureCause | None = None


def _ending(kind: str, reason: str, result: PodResult | None, problem: str | None) -> _Ending:
    """How an attempt ended, from its Job's condition (``kind``, ``reason``), its Pod's
    terminated container, and a problem with its artifacts."""
    exit_code = result.exit_code if result else None
    outputs, text = outputs_from_message(result.message if result else None)
    if problem is not None:
        return _Ending(
            TaskState.FAILED, 0 if exit_code is None else exit_code, None, problem,
            FailureCause.FAILURE,
        )  # fmt: skip
    if kind == "Complete":
        return _Ending(TaskState.SUCCEEDED, 0 if exit_code is None else exit_code, outputs, text)
    if reason == "DeadlineExceeded":
        return _Ending(
            TaskState.TIMED_OUT, exit_code, None, "the task exceeded its timeoutSeconds",
            FailureCause.FAILURE,
        )  # fmt: skip
    message = text or _pod_words(result) or reason or "the Job failed"
    return _Ending(TaskState.FAILED, exit_code, None, message, failure_cause(result))


class TaskExecution:
    """The task-execution component's interface."""

    def __init__(
        self,
        db: Database,
        kube: Kube,
        *,
        job_ttl_seconds: int = 600,
        artifacts: ArtifactSettings | None = None,
    ) -> None:
        self._db = db
        self._kube = kube
        self._ttl = job_ttl_seconds
        self.artifacts = Artifacts(db, kube, artifacts)
        #: How the Pods of Jobs ended, from the Pod watch (see plait.task_execution.pods.pod_watch).
        self.pods = PodResults()
        #: By Job name, whether its attempt's end (True) or start (False) is recorded, as
        #: this process last did or read it; the oldest are forgotten.
        self._recorded: OrderedDict[str, bool] = OrderedDict()

    async def attempts(self, instance_uid: uuid.UUID) -> list[TaskInstance]:
        async with self._db.connection(COMPONENT) as conn:
            return await repository.tasks_of_instance(conn, instance_uid)

    async def current_states(self, instance_uid: uuid.UUID) -> list[tuple[str, int, TaskState]]:
        """(task name, attempt, state) of the run's current attempts: enough to count
        them, at a fraction of the cost of :meth:`attempts` for a run of thousands."""
        async with self._db.connection(COMPONENT) as conn:
            return await repository.current_task_states(conn, instance_uid)

    async def _manifest(self, request: JobRequest) -> tuple[dict[str, Any], JobRequest] | str:
        """The attempt's Job and its request with Integrations and artifacts resolved; or
        why it cannot have one."""
        names = [i.name for i in request.template.integrations or ()]
        try:
            if names:
                found = await credentials.for_task(self._db, request.namespace, names)
                request = dataclasses.replace(request, integrations=tuple(found))
            request = await self.artifacts.prepare(request)
            return build_job(request), request
        except (credentials.IntegrationUnavailable, ArtifactError, ValueError) as exc:
            return f"the task cannot start: {exc}"

    async def _create(self, manifest: dict[str, Any], request: JobRequest) -> bool:
        """Create the Secret of the attempt's artifact URLs, then its Job (each idempotent,
        so a crash in between is repaired by the next try); True when the Job was created
        now."""
        secret = artifact_secret(request)
        if secret is not None:
            await self._kube.create_secret(secret)
        return await self._kube.create_job(manifest)

    async def start(
        self,
        request: JobRequest,
        *,
        definition: tuple[str, int] | None = None,
        cache_key: str | None = None,
        reuse_since: datetime | None = None,
    ) -> TaskInstance:
        """Record the attempt, then create its Job (both idempotent). An attempt whose Job
        cannot be built (an Integration missing or unfit) is returned Failed, with why.

        The attempt records ``cache_key``; with ``reuse_since`` too, when an attempt with
        that key in the namespace succeeded after it, this one is returned Succeeded with
        its outputs (``cached_from`` naming it) and no Job is created."""
        request = dataclasses.replace(request, ttl_seconds=self._ttl)
        async with self._db.connection(COMPONENT) as conn:
            attempt, _ = await repository.insert_task_attempt(
                conn,
                namespace=request.namespace,
                workflow_instance_id=uuid.UUID(request.instance_uid),
                task_name=request.task,
                attempt=request.attempt,
                job_name=request.name,
                inputs=request.inputs,
                definition=definition,
                cache_key=cache_key,
            )
            if attempt.state is TaskState.PENDING and cache_key and reuse_since:
                source = await repository.cached_attempt(
                    conn, request.namespace, cache_key, reuse_since
                )
                if source is not None:
                    hit = await repository.record_cache_hit(conn, request.name, source)
                    return hit or attempt
        if attempt.state is TaskState.PENDING:
            built = await self._manifest(dataclasses.replace(request, attempt_id=attempt.id))
            if isinstance(built, str):
                return await self._fail_unbuilt(request.name, built) or attempt
            await self._create(*built)
        return attempt

    async def _fail_unbuilt(self, job: str, message: str) -> TaskInstance | None:
        async with self._db.connection(COMPONENT) as conn:
            return await repository.set_task_state(
                conn, job, TaskState.FAILED, message=message[:4096], cause=FailureCause.ERROR
            )

    async def ensure_jobs(self, requests: list[JobRequest]) -> int:
        """Create the Jobs of recorded Pending attempts that have none (after a crash
        between the row and the Job); returns how many were missing."""
        created = 0
        for request in requests:
            req = dataclasses.replace(request, ttl_seconds=self._ttl)
            built = await self._manifest(req)
            if isinstance(built, str):
                await self._fail_unbuilt(req.name, built)
                continue
            if await self._create(*built):
                created += 1
                logger.info("created missing Job %s/%s", req.namespace, req.name)
        return created

    async def record_without_job(
        self,
        *,
        namespace: str,
        instance_name: str,
        instance_uid: str,
        task: str,
        attempt: int,
        state: TaskState,
        reason: str,
        inputs: Mapping[str, Any] | None = None,
        cause: FailureCause | None = None,
    ) -> None:
        """Record a task attempt that runs no Job: skipped, failed before it could start
        (with its ``cause``), or (``Waiting``) waiting for an event. It gets the name its
        Job would have had, so names stay unique. Repeating it changes nothing once the
        attempt is final."""
        name = job_name(instance_name, instance_uid, task, attempt)
        async with self._db.connection(COMPONENT) as conn:
            await repository.insert_task_attempt(
                conn,
                namespace=namespace,
                workflow_instance_id=uuid.UUID(instance_uid),
                task_name=task,
                attempt=attempt,
                job_name=name,
                inputs=inputs,
            )
            await repository.set_task_state(conn, name, state, message=reason[:4096], cause=cause)

    async def record_not_started(
        self,
        *,
        namespace: str,
        instance_name: str,
        instance_uid: str,
        attempts: Sequence[tuple[str, int]],
        reason: str,
    ) -> int:
        """Record tasks that will never start (their run ended first) as Skipped, each
        (task, attempt) in one insert, all in one transaction: an attempt recorded
        meanwhile (a launch racing the end) is left to be cancelled with its Job, never
        marked as not started. Returns how many were recorded."""
        recorded = 0
        async with self._db.connection(COMPONENT) as conn:
            for task, attempt in attempts:
                _, created = await repository.insert_task_attempt(
                    conn,
                    namespace=namespace,
                    workflow_instance_id=uuid.UUID(instance_uid),
                    task_name=task,
                    attempt=attempt,
                    job_name=job_name(instance_name, instance_uid, task, attempt),
                    state=TaskState.SKIPPED,
                    message=reason[:4096],
                )
                recorded += created
        return recorded

    async def update_without_job(
        self,
        instance_uid: uuid.UUID,
        task: str,
        attempt: int,
        state: TaskState,
        *,
        outputs: Mapping[str, Any] | None = None,
        message: str | None = None,
        cause: FailureCause | None = None,
        exit_code: int | None = None,
    ) -> TaskInstance | None:
        """Move a recorded attempt that runs no Job (a wait for an event, a mocked task)
        to ``state``; None when it is missing or already final (so repeating it is
        harmless)."""
        async with self._db.connection(COMPONENT) as conn:
            current = await repository.get_task_attempt(conn, instance_uid, task, attempt)
            if current is None or current.state in FINAL_STATES:
                return None
            return await repository.set_task_state(
                conn,
                current.job_name,
                state,
                outputs=outputs,
                message=message[:4096] if message is not None else None,
                cause=cause,
                exit_code=exit_code,
            )

    async def observe_jobs_of(self, namespace: str, instance_uid: str) -> list[TaskInstance]:
        """Record what the run's Jobs say now (one LIST, read a page at a time), for a run
        taken over from a replica that died: the events its Jobs sent meanwhile went to
        nobody. Returns the attempts whose rows changed."""
        changed: list[TaskInstance] = []
        selector = f"{LABEL_INSTANCE_UID}={instance_uid}"
        async for page in self._kube.list_jobs(namespace, selector):
            for job in page:
                attempt = await self.observe(job)
                if attempt is not None:
                    changed.append(attempt)
        return changed

    async def observe(self, job: Mapping[str, Any]) -> TaskInstance | None:
        """Record what a Job event says about its attempt; the changed row, else None.

        A Job sends several events per state (its Pod's phases, readiness, counters): those
        that say nothing new to this process (the state it recorded already) cost nothing,
        and the end of a Job whose Pod the watch delivered is one statement."""
        meta = job.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not name or not namespace or LABEL_INSTANCE_UID not in (meta.get("labels") or {}):
            return None
        finished = _job_condition(job)
        if finished is None:
            status = job.get("status") or {}
            if not (status.get("active") or status.get("ready")) or name in self._recorded:
                return None
            async with self._db.connection(COMPONENT) as conn:
                changed = await repository.set_task_state(conn, name, TaskState.RUNNING)
            self._remember_recorded(name, final=False)
            return changed
        if self._recorded.get(name):
            return None  # its end is recorded
        kind, reason = finished
        result = self.pods.take(namespace, name)
        problem: str | None = None
        if result is None or _has_artifacts(job):
            async with self._db.connection(COMPONENT) as conn:
                current = await repository.attempt_by_job(conn, name)
            if current is None or current.state in FINAL_STATES:
                self._remember_recorded(name, final=True)
                return None
            if result is None:
                result = await self._kube.pod_result(namespace, name)
            if kind == "Complete" and _has_artifacts(job):
                problem = await self.artifacts.verify(
                    current.workflow_instance_id, current.task_name, current.attempt
                )
        end = _ending(kind, reason, result, problem)
        async with self._db.connection(COMPONENT) as conn:
            changed = await repository.set_task_state(
                conn,
                name,
                end.state,
                exit_code=end.exit_code,
                outputs=end.outputs,
                message=end.message,
                cause=end.cause,
            )
        self._remember_recorded(name, final=True)
        if _has_artifacts(job):  # the attempt's URLs are of no more use
            await self._kube.delete_secret(namespace, f"{name}-artifacts")
        return changed

    def _remember_recorded(self, job: str, *, final: bool) -> None:
        """The attempt of ``job`` is recorded Running (or beyond), or ended."""
        self._recorded[job] = final
        self._recorded.move_to_end(job)
        if len(self._recorded) > RECORDED_JOBS:
            self._recorded.popitem(last=False)

    async def observe_refusal(self, event: Mapping[str, Any]) -> TaskInstance | None:
        """A Job's FailedCreate Event: when it is a :data:`PERMANENT_REFUSALS`, the Job is
        deleted (its controller would retry the Pod forever) and the attempt Failed with
        the API server's words; the changed row, else None.

        The Job goes first: should the process die in between, the attempt is a Pending row
        without a Job, which the next resume recreates, is refused again, and lands here.
        """
        involved = event.get("involvedObject") or {}
        message = str(event.get("message") or "")
        if (
            event.get("reason") != "FailedCreate"
            or involved.get("kind") != "Job"
            or not any(text in message for text in PERMANENT_REFUSALS)
        ):
            return None
        name = involved.get("name")
        namespace = involved.get("namespace") or (event.get("metadata") or {}).get("namespace")
        if not name or not namespace:
            return None
        async with self._db.connection(COMPONENT) as conn:
            current = await repository.attempt_by_job(conn, name)
        if current is None or current.state in FINAL_STATES or current.namespace != namespace:
            return None
        await self._kube.delete_job(namespace, name)
        refusal = message.removeprefix("Error creating: ")
        async with self._db.connection(COMPONENT) as conn:
            return await repository.set_task_state(
                conn,
                name,
                TaskState.FAILED,
                message=f"the cluster refused the task's Pod: {refusal}"[:4096],
                cause=FailureCause.ERROR,
            )

    async def supersede_unsuccessful(self, instance_uid: uuid.UUID) -> int:
        """Set aside a run's unsuccessful attempts so that a retry plans afresh."""
        async with self._db.connection(COMPONENT) as conn:
            return await repository.supersede_unsuccessful(conn, instance_uid)

    async def cancel_active(self, instance_uid: uuid.UUID, reason: str) -> int:
        """Stop every unfinished attempt of an instance: its Job deleted, its row Cancelled."""
        cancelled = 0
        for attempt in await self.attempts(instance_uid):
            if attempt.state in FINAL_STATES:
                continue
            await self._kube.delete_job(attempt.namespace, attempt.job_name)
            async with self._db.connection(COMPONENT) as conn:
                if await repository.set_task_state(
                    conn, attempt.job_name, TaskState.CANCELLED, message=reason
                ):
                    cancelled += 1
        return cancelled
