"""Running workflow instances: carry out the engine's plans and follow their Jobs.

:meth:`Orchestrator.advance` is the one place a run moves forward. It reads the recorded
state, asks :func:`plait.workflow_orchestrator.engine.plan` what to do, and does it with
idempotent writes. It is called when an instance is created, changed or resumed, when one
of its Jobs changes, and when one of its deadlines falls due; calling it again at any time
is harmless, so a crash between any two steps loses nothing: the next call (at the latest
when the restarted operator resumes the instance) picks up where the records stand.

Deadlines wake a run by themselves: every advance records in the run's row (``wake_at``)
the earliest moment it must be advanced even if nothing else happens (the workflow's
``timeoutSeconds``, the end of a retry's backoff), and every operator replica runs
:meth:`Orchestrator.run_deadlines`, which claims the due runs (each by one replica) and
advances them. A run that ends finishes what is left of it: running attempts are
cancelled with their Jobs, tasks that never started are recorded Skipped, so no task of a
finished run is left unfinished.

The WorkflowInstance's status is a bounded summary (phase, counts, progress, times,
failure) computed from PostgreSQL, never the task list: a 5,000-task run has the same
small object as a one-task run.

A "wait for event" task runs no Job: its attempt subscribes (a row in
``workflow_event_subscriptions``, written *before* the attempt's row) and waits.
:meth:`Orchestrator.deliver_event` completes the subscriptions an event correlates with
(the event's data stored on the subscription, then the attempt recorded Succeeded), the
deadline loop (:meth:`Orchestrator.run_deadlines`) times out the others. Each step is
idempotent and every advance finishes attempts whose subscription was resolved but not
yet carried over (after a crash in between), so nothing is lost or done twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import time
import uuid
import weakref
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import kopf
from psycopg import AsyncConnection

from plait import API_GROUP, API_VERSION
from plait.errors import ValidationError
from plait.event_processing.repository import EventInstance
from plait.kernel import expressions
from plait.kernel.conditions import Condition, merge_conditions
from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.kernel.watching import Subscription, Watched
from plait.observability import metrics
from plait.observability.tracing import (
    TRACEPARENT_ANNOTATION,
    RunTrace,
    run_trace,
    task_attempt_span,
    task_traceparent,
    workflow_span,
)
from plait.resources.cache import TaskCache
from plait.resources.common import ContainerTemplate
from plait.resources.foreach import split_item_name
from plait.resources.task import TaskDefinitionSpec
from plait.resources.test import Mock
from plait.resources.workflow import MAX_WORKFLOW_DEPTH, Task, WorkflowDefinitionSpec
from plait.task_execution import repository as task_repository
from plait.task_execution.jobs import (
    LABEL_INSTANCE_UID,
    JobRequest,
    job_name,
    with_workflow_defaults,
)
from plait.task_execution.repository import TaskInstance
from plait.task_execution.service import JOB_REFUSAL_EVENTS, TaskExecution
from plait.task_execution.states import FINAL_STATES, FailureCause, TaskState
from plait.workflow_orchestrator import locks, repository
from plait.workflow_orchestrator.engine import (
    Attempt,
    Launch,
    Plan,
    Skip,
    TaskDefaults,
    attempt_names,
    parameters_with_defaults,
    plan,
)
from plait.workflow_orchestrator.http_tasks import http_tasks
from plait.workflow_orchestrator.kept import MAX_KEPT_ATTEMPTS, KeptRecords, Records
from plait.workflow_orchestrator.members import Ownership, sole_owner
from plait.workflow_orchestrator.mocks import MockError, MockOutcome, mock_outcome
from plait.workflow_orchestrator.pacing import Pacing
from plait.workflow_orchestrator.repository import EventSubscription, WorkflowInstance
from plait.workflow_orchestrator.states import (
    FINAL_PHASES,
    RETRYABLE_PHASES,
    SubscriptionStatus,
    WorkflowPhase,
)
from plait.workflow_orchestrator.subscriptions import (
    correlates,
    event_view,
    filter_document,
    outputs_of,
    timeout_message,
)

__all__ = ["Control", "Orchestrator", "Summary", "register_runtime", "task_watches"]

logger = logging.getLogger(__name__)
COMPONENT = "workflow_orchestrator"
#: How long Job events of one run are gathered into one status write.
STATUS_COALESCE_SECONDS = 1.0
#: How long a task merely going Running waits to be written to the run's status: a task
#: that ends sooner costs no write of its own (its end is written, running or not).
RUNNING_COALESCE_SECONDS = 5.0
#: At stop, the longest wait for the status writes still queued.
STOP_PUBLISH_SECONDS = 5.0
#: How many of its own status writes per run this process recognises when the watch
#: delivers them late.
WRITES_REMEMBERED = 8
#: Parsed definition versions kept in memory (versions are immutable).
SPEC_CACHE_SIZE = 256
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
#: Longest sleep of the deadline loop: it also picks up deadlines other replicas recorded
#: (a replica that records one wakes its own loop at once).
DEADLINE_POLL_SECONDS = 10.0
#: How far a claimed run's wake_at moves ahead until its advance records the next one: a
#: replica that dies after claiming delays the run by this much, never strands it.
WAKE_LEASE_SECONDS = 30.0
#: Runs claimed per query by the deadline loop.
WAKE_BATCH = 100
#: Attempts of one advance started at once: each start is a row and a Job create, mostly
#: waiting on round trips, so a few in flight multiply the rate of a wide DAG or a fan-out
#: without flooding the API server (its client pool and the database pool are larger).
LAUNCH_CONCURRENCY = 8
#: After a Job event could not be recorded (the database or the API server failing), how
#: long until the run's Jobs are read again, doubling up to REREAD_MAX_SECONDS: Kopf hands
#: an event over once, so its content must be fetched anew.
REREAD_FIRST_SECONDS = 2.0
REREAD_MAX_SECONDS = 60.0


#: On a sub-workflow's WorkflowInstance: the id of the run whose task started it.
PARENT_ANNOTATION = "plait.dev/parent-uid"
#: On a sub-workflow's WorkflowInstance: the parent's task (or fan-out item) it runs for.
PARENT_TASK_ANNOTATION = "plait.dev/parent-task"


@dataclass(frozen=True)
class ResolvedTask:
    """What one container task runs: the template, the TaskDefinition version it came
    from (None for an inline template), and the attempt's timeout."""

    template: ContainerTemplate
    definition: tuple[str, int] | None
    timeout_seconds: int | None


@dataclass(frozen=True)
class Control:
    """What the user asks of a run through its spec."""

    cancel: bool = False
    suspend: bool = False
    retry: int = 0
    traceparent: str | None = None
    bypass_cache: bool = False
    priority: int = 0
    """The ``plait.dev/traceparent`` annotation: the trace (an event's) the run joins."""


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
    instance: WorkflowInstance,
    spec: WorkflowDefinitionSpec,
    attempts: list[TaskInstance],
    waiting_for: str | None = None,
    fan_outs: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The bounded status of a run (the same size whatever the number of tasks); each
    item of a fan-out counts as a task once its list is known. ``fan_outs``: the sizes
    the last plan found (planned again from the attempts when not given)."""
    if fan_outs is None:
        fan_outs = fan_out_sizes(instance, spec, attempts)
    current = [(a.task_name, a.attempt, a.state) for a in attempts if a.superseded_at is None]
    return summarize_states(instance, spec, current, waiting_for, fan_outs)


def summarize_states(
    instance: WorkflowInstance,
    spec: WorkflowDefinitionSpec,
    current: Iterable[tuple[str, int, TaskState]],
    waiting_for: str | None,
    fan_outs: Mapping[str, int],
) -> dict[str, Any]:
    """:func:`summarize` from the (task, attempt, state) of the run's current attempts
    (what :func:`~plait.task_execution.repository.current_task_states` reads, without
    decoding every attempt's inputs and outputs) and its fan-outs' known sizes."""
    latest: dict[str, tuple[int, TaskState]] = {}
    for name, attempt, state in current:
        known = latest.get(name)
        if known is None or attempt > known[0]:
            latest[name] = (attempt, state)
    names = attempt_names(spec, fan_outs)
    by_state = Counter(latest[n][1] for n in names if n in latest)
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
    # null, not absent: the status is merge-patched, and a lock once waited for is had.
    status["waitingFor"] = waiting_for if instance.phase not in FINAL_PHASES else None
    if instance.phase in FINAL_PHASES and instance.phase is not WorkflowPhase.SUCCEEDED:
        status["failure"] = instance.failure or {
            "message": instance.message or instance.phase.value
        }
    return status


class Summary:
    """A run's status summary as an advance left it, made when first asked for: a big
    run's takes milliseconds, and one status write uses the last of many advances'."""

    __slots__ = ("_make", "_status", "phase")

    def __init__(self, phase: WorkflowPhase, make: Callable[[], dict[str, Any]]) -> None:
        self.phase = phase.value
        self._make: Callable[[], dict[str, Any]] | None = make
        self._status: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """The summary (see :func:`summarize`), made on the first call."""
        if self._status is None:
            assert self._make is not None
            self._status, self._make = self._make(), None
        return self._status


class Orchestrator:
    """Moves runs forward; one per operator process."""

    def __init__(
        self,
        db: Database,
        kube: Kube,
        tasks: TaskExecution,
        *,
        namespaces: Sequence[str] | None = None,
        ownership: Ownership | None = None,
        pacing: Pacing | None = None,
    ) -> None:
        """``namespaces``: the namespaces this operator watches (None: all); the deadline
        loop wakes only runs of those. ``ownership``: which runs this replica advances
        when replicas share them (None: all). ``pacing``: how soon a run is advanced
        again (None: the defaults of :mod:`~plait.workflow_orchestrator.pacing`)."""
        self.ownership = ownership or sole_owner()
        self._db = db
        self._kube = kube
        self._tasks = tasks
        self._namespaces = tuple(namespaces) if namespaces is not None else None
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._pending_status: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._controls: dict[uuid.UUID, Control] = {}
        #: What a run waits for (a lock), shown in its status until it has it.
        self._waiting_for: dict[uuid.UUID, str] = {}
        self._to_publish: dict[uuid.UUID, tuple[str, str]] = {}
        self._dirty: dict[uuid.UUID, tuple[str, str]] = {}
        self._drainers: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._deadlines_changed = asyncio.Event()
        self._deadlines: asyncio.Task[None] | None = None
        # Plait's overhead (plait_task_overhead_seconds): each attempt's launch stage, kept
        # for its span, and the completions observed that no plan has been made on yet.
        self._launch_seconds: dict[tuple[uuid.UUID, str, int], float] = {}
        self._observed: dict[uuid.UUID, list[tuple[TaskInstance, dt.datetime]]] = {}
        #: Per run, the fan-out sizes its last plan found: a status write counts the items
        #: from them instead of planning again.
        self._fan_outs: dict[uuid.UUID, Mapping[str, int]] = {}
        #: Runs whose Job events this replica ignored (another owned them then).
        self._unseen_jobs: set[uuid.UUID] = set()
        #: The unfinished runs this replica owned at its last resume_owned: one not among
        #: them is gained then (its Jobs are read, a lost one is recreated). Per-run state
        #: such as ``_controls`` is no proof of following: a run once owned, or woken by a
        #: deadline, may have been another replica's since.
        self._followed: set[uuid.UUID] = set()
        #: Per run, the pending re-read of its Jobs after a Job event failed to record.
        self._rereads: dict[uuid.UUID, asyncio.Task[None]] = {}
        #: When each run's pending status write is due (time.monotonic()), and the event
        #: that wakes its writer when that moves earlier.
        self._publish_due: dict[uuid.UUID, float] = {}
        #: Set by publish_now: the process is stopping, status writes are not coalesced.
        self._stopping = False
        self._due_sooner: dict[uuid.UUID, asyncio.Event] = {}
        #: Orders what this process learns of a run: object versions seen and summaries
        #: computed (see publish).
        self._clock = itertools.count(1)
        #: Per unfinished run owned here, its object as last seen (a watch event or this
        #: process's own status write): a status write carries that resourceVersion
        #: instead of reading the object first.
        self._views: dict[uuid.UUID, _View] = {}
        #: One status write at a time per run: two at once would start from the same
        #: view, and one of them would conflict and read the object again.
        self._writing: dict[uuid.UUID, asyncio.Lock] = {}
        #: Per run, the summary its last advance ended with, stamped before that advance
        #: read anything; dropped whenever the run's records change outside an advance.
        self._summaries: dict[uuid.UUID, tuple[int, Summary]] = {}
        #: Per run, when (on the same clock) its records last changed outside an advance:
        #: an advance that began before keeps no summary (it may not have seen the change).
        self._changed_at: dict[uuid.UUID, int] = {}
        #: Per unfinished run owned here, its row and attempts as its last advance left
        #: them, kept up to date by the Job events recorded since: the next advance (and a
        #: status write meanwhile) starts from them instead of reading them. Kept only while
        #: no other process may write them (Ownership.exclusive, _advanced_by_its_owner_only);
        #: dropped by any other change of the run's records, not used in another epoch;
        #: at most MAX_KEPT_ATTEMPTS attempts in all (the runs kept longest ago go first).
        self._records = KeptRecords()
        #: The engine's view of each attempt, made once per recorded version of it (each
        #: change is a new TaskInstance): every plan of a run from its kept records would
        #: otherwise convert all its attempts again, thousands for a wide run. Keyed by the
        #: attempt id's integer (a UUID hashes in Python, an int in C).
        self._engine_views: OrderedDict[int, tuple[TaskInstance, Attempt]] = OrderedDict()
        #: Parsed WorkflowDefinition specs by (namespace, name, version), least recently
        #: used first.
        self._specs: OrderedDict[tuple[str, str, int], WorkflowDefinitionSpec] = OrderedDict()
        #: When each run may be advanced again: a big run's Job events make one advance
        #: for many (see pacing).
        self._pacing = pacing or Pacing()

    # -- entry points ----------------------------------------------------------------------
    async def advance(
        self,
        uid: uuid.UUID,
        control: Control | None = None,
        *,
        ensure_jobs: bool = False,
        recorded: WorkflowInstance | None = None,
    ) -> Summary | None:
        """Move one run forward as far as it can go now; returns its status summary (made
        when asked for).

        ``recorded``: the run's row as the caller has just inserted it, so the run has no
        attempts yet; the first advance then reads neither (unless this process has
        advanced the run before, its record then maybe older, or no longer owns it).
        ``ensure_jobs``: the run's records are read, never taken from memory."""
        if control is not None:
            self._controls[uid] = control
        control = self._controls.get(uid, Control())
        owned = self.ownership.owns(uid)
        if uid in self._locks or not owned:
            recorded = None  # advanced here before, or another replica's now: read it
        lock = self._locks.setdefault(uid, asyncio.Lock())
        async with lock:
            self._summaries.pop(uid, None)  # a status write meanwhile reads the records
            kept = self._records.pop(uid)  # ... and so does a Job event's update
            start: Records | None = None
            if recorded is not None:
                start = Records.of(recorded, [], {}, self.ownership.epoch)
            elif kept is not None and owned and not ensure_jobs:
                start = kept if kept.epoch == self.ownership.epoch else None
            stamp = next(self._clock)
            try:
                summary, left = await self._advance(
                    uid, control, ensure_jobs=ensure_jobs, start=start
                )
            finally:
                self._pacing.advanced(uid)
            if summary is not None and self._changed_at.get(uid, stamp) <= stamp:
                self._summaries[uid] = (stamp, summary)
                if left is not None and owned:
                    self._records.keep(uid, left)
        if (summary is None or summary.phase in FINAL_VALUES) and not lock.locked():
            # A finished run needs no per-run state in memory (a retry recreates it).
            self._records.pop(uid)
            self._changed_at.pop(uid, None)
            self._locks.pop(uid, None)
            self._controls.pop(uid, None)
            self._observed.pop(uid, None)  # a deleted run's (an ended one's are recorded)
            self._fan_outs.pop(uid, None)
            self._pacing.forget(uid)
        return summary

    def saw(self, obj: Mapping[str, Any]) -> None:
        """The watch delivered this version of a run's object: the next status write of an
        unfinished run this replica owns starts from it (see publish)."""
        meta = obj.get("metadata") or {}
        uid = uuid.UUID(meta["uid"])
        phase = (obj.get("status") or {}).get("phase")
        if not self.ownership.owns(uid) or (phase in FINAL_VALUES and uid not in self._publish_due):
            self.forget_object(uid)
            return
        known = self._views.get(uid)
        if known is not None and str(meta.get("resourceVersion")) in known.written:
            return  # a version this process wrote, delivered late: it knows a newer one
        self._remember(uid, obj)

    def forget_object(self, uid: uuid.UUID) -> None:
        """The run's object is gone (or not this replica's concern any more)."""
        self._views.pop(uid, None)
        self._summaries.pop(uid, None)
        self._records.pop(uid)
        self._pacing.forget(uid)
        advancing = self._locks.get(uid)
        if advancing is not None and advancing.locked():
            # An advance under way keeps nothing it ends with: a change it may have missed
            # was stamped here, and dropping the stamp would let it keep stale records.
            self._changed_at[uid] = next(self._clock)
        else:
            self._changed_at.pop(uid, None)
        lock = self._writing.get(uid)
        if lock is not None and not lock.locked():
            del self._writing[uid]

    def _remember(self, uid: uuid.UUID, obj: Mapping[str, Any], *, wrote: bool = False) -> _View:
        """Keep ``obj`` as the run's view; ``wrote``: this process's own write returned it
        (the watch delivers it later, maybe after newer writes of this process)."""
        version = str(obj["metadata"]["resourceVersion"])
        known = self._views.get(uid)
        written = known.written if known is not None else ()
        if wrote:
            written = (*written[-(WRITES_REMEMBERED - 1) :], version)
        view = _View(next(self._clock), version, obj.get("status") or {}, written)
        self._views[uid] = view
        summary = self._summaries.get(uid)
        if summary is not None and summary[0] < view.stamp:
            # Never used now (see _summary_since): the attempts it would be made from go.
            del self._summaries[uid]
        return view

    def job_event(self, _kind: str | None, job: Mapping[str, Any]) -> Awaitable[None] | None:
        """The Job watch's handler: another replica's Job is set aside here, without a
        task (most Job events a replica sees are others' when replicas share the runs)."""
        meta = job.get("metadata") or {}
        owner: dict[str, Any] = next(iter(meta.get("ownerReferences") or ()), {})
        if owner.get("uid") and not self.ownership.owns(owner["uid"]):
            # Another replica's run: it records and advances it. Should the run come to
            # this replica (its owner gone), what this event said is read again then.
            self._unseen_jobs.add(uuid.UUID(owner["uid"]))
            return None
        return self.on_job_event(job)

    def job_refused(self, _kind: str | None, event: Mapping[str, Any]) -> Awaitable[None]:
        """The handler of the watch of Jobs' FailedCreate Events."""
        return self.on_job_refused(event)

    async def on_job_event(self, job: Mapping[str, Any]) -> None:
        """A Job of a run this replica owns changed (see job_event): record its attempt's
        state now, and have its run advanced.

        Recording is done before returning (the Job's outcome is then safe in PostgreSQL);
        advancing is coalesced per run: a burst of Job events (a wide fan-out finishing)
        costs one advance, not one per event. If the process dies before that advance,
        resuming the instance at start-up does it.
        """
        meta = job.get("metadata") or {}
        owner: dict[str, Any] = next(iter(meta.get("ownerReferences") or ()), {})
        try:
            changed = await self._tasks.observe(job)
        except Exception:
            if not (owner.get("uid") and owner.get("name")):
                raise
            logger.exception(
                "recording Job %s/%s failed: its run's Jobs are read again shortly",
                meta.get("namespace"),
                meta.get("name"),
            )
            self._reread_jobs_later(uuid.UUID(owner["uid"]), meta["namespace"], owner["name"])
            return
        if changed is None:
            return
        uid = changed.workflow_instance_id
        self._records_changed(uid, changed)
        if changed.state not in FINAL_STATES:
            # Going Running changes nothing the engine plans on: no advance, and the status
            # says so only if the task is still running a few seconds later.
            if owner.get("name"):
                self._publish_soon(uid, meta["namespace"], owner["name"], RUNNING_COALESCE_SECONDS)
            return
        await self._attempt_finished(changed)
        if owner.get("name"):
            self._advance_soon(uid, meta["namespace"], owner["name"])

    def _reread_jobs_later(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        """Read the run's Jobs again after a backoff (once for any number of failures)
        until it works, then advance the run: what a failed Job event said is not lost."""
        pending = self._rereads.get(uid)
        if pending is not None and not pending.done():
            return

        async def reread() -> None:
            delay = REREAD_FIRST_SECONDS
            while True:
                await asyncio.sleep(delay)
                if not self.ownership.owns(uid):
                    self._unseen_jobs.add(uid)  # its new owner reads them on taking it
                    return
                try:
                    await self._observe_jobs(uid, namespace)
                except Exception:
                    logger.exception("reading the Jobs of %s/%s failed", namespace, name)
                    delay = min(delay * 2, REREAD_MAX_SECONDS)
                    continue
                self.kick(uid, namespace, name)
                return

        self._rereads[uid] = asyncio.ensure_future(reread())
        self._rereads[uid].add_done_callback(lambda _: self._rereads.pop(uid, None))

    async def _observe_jobs(self, uid: uuid.UUID, namespace: str) -> None:
        """Record what the run's Jobs say now (one LIST, a page at a time): what their
        events said when this replica did not follow the run, or did not manage to record
        it."""
        self._unseen_jobs.discard(uid)
        self._records_changed(uid)  # whatever the LIST finds is recorded
        observed = await self._tasks.observe_jobs_of(namespace, str(uid))
        self._records_changed(uid)  # ... and an advance meanwhile may have kept records
        for attempt in observed:
            if attempt.state in FINAL_STATES:
                await self._attempt_finished(attempt)

    async def on_job_refused(self, event: Mapping[str, Any]) -> None:
        """A Job's FailedCreate Event: a Pod refused for good fails its attempt (see
        TaskExecution.observe_refusal), and the run is advanced."""
        changed = await self._tasks.observe_refusal(event)
        if changed is None:
            return
        await self._attempt_finished(changed)
        async with self._db.connection(COMPONENT) as conn:
            instance = await repository.get_workflow_instance(conn, changed.workflow_instance_id)
        if instance is not None:
            self.kick(instance.id, instance.namespace, instance.name)

    def trace_of(self, uid: uuid.UUID) -> RunTrace:
        """The run's trace: its own (ids from its uid) or the event's it was started by."""
        control = self._controls.get(uid)
        annotations = (
            {TRACEPARENT_ANNOTATION: control.traceparent}
            if control is not None and control.traceparent
            else None
        )
        return run_trace(uid, annotations)

    async def _attempt_finished(self, attempt: TaskInstance) -> None:
        """Count a finished attempt now (Kubernetes' wait and the task's own time apart:
        created -> running is queueing, running -> finished is the task); its span waits
        for the plan made on it, which ends its ``advance`` stage (see _measure_advance)."""
        if attempt.state not in _OUTCOMES:
            return
        queue_wait, run_time = _split(attempt)
        metrics.task_attempt_finished(
            _OUTCOMES[attempt.state], queue_wait_seconds=queue_wait, run_seconds=run_time
        )
        observed = self._observed.setdefault(attempt.workflow_instance_id, [])
        observed.append((attempt, _now()))

    def _measure_advance(
        self, instance: WorkflowInstance, attempts: list[TaskInstance], planned: dt.datetime
    ) -> None:
        """A plan was made on these attempts: for each completion this process observed and
        the plan saw, observe its ``advance`` stage (completion observed -> plan made) and
        record its span, with ``launch`` + ``advance`` as its overhead."""
        waiting = self._observed.get(instance.id)
        if not waiting:
            return
        # Only the completions waiting are looked for: a big run's other attempts cost a
        # name lookup each, not a key made for every one at every advance.
        wanted = {a.task_name for a, _ in waiting}
        seen = {
            (a.task_name, a.attempt)
            for a in attempts
            if a.task_name in wanted and a.state in FINAL_STATES
        }
        for attempt, observed_at in list(waiting):
            if (attempt.task_name, attempt.attempt) not in seen:
                continue  # finished after this plan's records were read: the next plan's
            waiting.remove((attempt, observed_at))
            advance = (planned - observed_at).total_seconds()
            metrics.task_overhead("advance", advance)
            launch = self._launch_seconds.pop(
                (instance.id, attempt.task_name, attempt.attempt), None
            )
            self._attempt_span(instance, attempt, None if launch is None else launch + advance)
        if not waiting:
            self._observed.pop(instance.id, None)

    def _forget_overhead(self, instance: WorkflowInstance) -> None:
        """The run has ended: record the spans no plan will measure (no overhead), and drop
        the launch stages of attempts whose completion was never observed."""
        for attempt, _ in self._observed.pop(instance.id, []):
            self._attempt_span(instance, attempt, None)
        for key in [k for k in self._launch_seconds if k[0] == instance.id]:
            del self._launch_seconds[key]

    def _attempt_span(
        self, instance: WorkflowInstance, attempt: TaskInstance, overhead: float | None
    ) -> None:
        outcome = _OUTCOMES[attempt.state]
        end = attempt.finished_at or attempt.updated_at
        queue_wait, run_time = _split(attempt)
        task_attempt_span(
            self.trace_of(instance.id),
            namespace=instance.namespace,
            instance=instance.name,
            workflow=instance.workflow_name,
            task=attempt.task_name,
            attempt=attempt.attempt,
            start=attempt.created_at,
            end=end,
            outcome=outcome,
            job_name=attempt.job_name,
            queue_wait_seconds=queue_wait,
            run_seconds=run_time,
            overhead_seconds=overhead,
            error=attempt.message if outcome != "succeeded" else None,
            attributes=(
                {"plait.cache.hit": True, "plait.cache.source": str(attempt.cached_from)}
                if attempt.cached_from is not None
                else None
            ),
        )

    async def deliver_event(self, event: EventInstance, *, run: uuid.UUID | None = None) -> int:
        """Complete the waits this event correlates with; returns how many it completed.
        ``run``: only the waits of that run (an event of a WorkflowTest case, meant for the
        case's run alone).

        Called by the event dispatcher for every event it dequeues (before triggers), and
        again after a crash (at-least-once): a subscription is completed by one event only,
        the first in dispatch order that matches, and redelivering an event completes
        nothing new but finishes recording what its first delivery matched. Only waits of
        unfinished runs in the event's namespace, of its type and not past their timeout
        are considered. The event's data becomes the task's outputs (a non-object value as
        ``{"data": value}``), and the runs move on at once.
        """
        view = event_view(event)
        outputs = outputs_of(event)
        completed: list[EventSubscription] = []
        async with self._db.connection(COMPONENT) as conn:
            earlier = await repository.matched_by(conn, event.id)
            candidates = await repository.waiting_subscriptions(
                conn, namespace=event.namespace, event_type=event.type, subject=event.subject
            )
            for sub in candidates:
                if run is not None and sub.workflow_instance_id != run:
                    continue
                if not correlates(sub.filter, view):
                    continue
                matched = await repository.mark_matched(
                    conn, sub.id, event_id=event.id, outputs=outputs
                )
                if matched is not None:
                    completed.append(matched)
        for sub in [*earlier, *completed]:
            if await self._resolve_wait(sub) or sub in completed:
                await self._kick_instance(sub.workflow_instance_id)
        if completed:
            logger.info(
                "event %s (%s) completed %d wait(s)", event.event_id, event.type, len(completed)
            )
        return len(completed)

    async def expire_due(self) -> int:
        """Time out the waits past their deadline: the attempt TimedOut, its run advanced
        (the task's retry policy applies); returns how many expired."""
        total = 0
        while True:
            async with self._db.connection(COMPONENT) as conn:
                expired = await repository.expire_due(conn, namespaces=self._namespaces)
            for sub in expired:
                await self._resolve_wait(sub)
                await self._kick_instance(sub.workflow_instance_id)
            total += len(expired)
            if not expired:
                return total

    async def wake_due(self) -> int:
        """Advance the runs whose ``wake_at`` has passed (a workflow timeout, a retry's
        backoff); returns how many this replica claimed."""
        total = 0
        while True:
            async with self._db.connection(COMPONENT) as conn:
                due = await repository.claim_due_runs(
                    conn,
                    lease_seconds=WAKE_LEASE_SECONDS,
                    namespaces=self._namespaces,
                    limit=WAKE_BATCH,
                )
            for run in due:
                try:
                    await self._learn_control(run.id, run.namespace, run.name)
                except Exception:
                    # Not knowing what the user asks (a suspend?), leave the run claimed:
                    # its lease runs out and it is woken again then.
                    logger.exception("reading %s/%s failed", run.namespace, run.name)
                    continue
                logger.info("%s/%s is due: advancing it", run.namespace, run.name)
                self.kick(run.id, run.namespace, run.name)
            total += len(due)
            if len(due) < WAKE_BATCH:
                return total

    async def run_deadlines(self, *, max_sleep: float = DEADLINE_POLL_SECONDS) -> None:
        """Expire waits and wake runs as their deadlines fall due, until cancelled: sleeps
        until the next deadline in PostgreSQL (at most ``max_sleep``), woken early when
        this process records a new one."""
        while True:
            self._deadlines_changed.clear()
            delay = max_sleep
            try:
                await self.expire_due()
                await self.wake_due()
                async with self._db.connection(COMPONENT) as conn:
                    due_in = await repository.next_deadline(conn, self._namespaces)
                if due_in is not None:
                    delay = min(max(due_in, 0.05), max_sleep)
            except Exception:
                logger.exception("waking runs at their deadlines failed; trying again")
                delay = min(5.0, max_sleep)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deadlines_changed.wait(), delay)

    def start_deadlines(self) -> None:
        """Run :meth:`run_deadlines` in the background (once)."""
        if self._deadlines is None or self._deadlines.done():
            self._deadlines = asyncio.ensure_future(self.run_deadlines())

    async def stop_deadlines(self) -> None:
        if self._deadlines is not None:
            self._deadlines.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deadlines
            self._deadlines = None

    async def _learn_control(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        """Read what the user asks of a run (cancel, suspend, retry) from its object when
        this process has not seen it yet: a run woken here after another replica handled
        it (or before this one resumed it) must not be advanced as if nothing was asked."""
        if uid in self._controls:
            return
        obj = await self._kube.get_instance(namespace, name)
        if obj is not None:
            self._controls.setdefault(uid, control_of(obj))

    async def resume_owned(self, *, all_owned: bool = False) -> int:
        """Advance the unfinished runs this replica owns and has not been following: at
        start-up, after taking over a departed replica's share, and (``all_owned``: every
        owned run) at each resync, which repairs what a lost event left behind. A run
        gained, or whose Job events were missed, and every run at a resync, has its Jobs
        read again (one LIST each, a page at a time); a gained run has its lost Jobs
        recreated. A run whose object is gone (deleted while no replica watched) is
        cancelled. Returns how many runs were advanced; LAUNCH_CONCURRENCY at a time."""
        async with self._db.connection(COMPONENT) as conn:
            runs = await repository.unfinished_runs(conn, self._namespaces)
        self._unseen_jobs &= {r.id for r in runs}  # ended runs need nothing more
        owned = [r for r in runs if self.ownership.owns(r.id)]
        followed, self._followed = self._followed, {r.id for r in owned}
        chosen = [
            r for r in owned if all_owned or r.id not in followed or r.id in self._unseen_jobs
        ]
        gate = asyncio.Semaphore(LAUNCH_CONCURRENCY)

        async def resume(run: repository.DueRun) -> None:
            async with gate:
                try:
                    obj = await self._kube.get_instance(run.namespace, run.name)
                    if obj is None or obj["metadata"].get("uid") != str(run.id):
                        control = Control(cancel=True)
                    else:
                        control = control_of(obj)
                    gained = run.id not in followed
                    await self._observe_jobs(run.id, run.namespace)
                    await self.advance(run.id, control, ensure_jobs=gained)
                except Exception:
                    logger.exception("resuming %s/%s failed", run.namespace, run.name)
                    self._followed.discard(run.id)  # gained again at the next resume
                    return
                self._publish_soon(run.id, run.namespace, run.name)

        await asyncio.gather(*(resume(r) for r in chosen))
        if chosen:
            logger.info("resumed %d run(s) this replica owns", len(chosen))
            # The http requests a departed replica left in flight in them.
            await http_tasks(self).settle_orphans()
        return len(chosen)

    async def run_resync(self, stop: asyncio.Event, *, interval: float) -> None:
        """Every ``interval`` seconds, advance every run this replica owns (see
        resume_owned), until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.resume_owned(all_owned=True)
            except Exception:
                logger.exception("the resync of runs failed")

    async def publish_now(self, *, grace_seconds: float) -> None:
        """Write at once the statuses waiting to be coalesced, and wait (``grace_seconds``
        at most) for what is queued: a replica that stops shows what it knows of its runs
        before it goes, rather than leaving it to the next owner (and its exit to a
        timeout)."""
        self._stopping = True  # and what is asked for from now on is written at once
        now = time.monotonic()
        for uid in list(self._publish_due):
            self._publish_due[uid] = now
            self._due_sooner.setdefault(uid, asyncio.Event()).set()
        try:
            await asyncio.wait_for(self.quiesce(), grace_seconds)
        except TimeoutError:
            logger.warning("status writes still queued after %s s at stop", grace_seconds)

    async def quiesce(self) -> None:
        """Wait until the advances and status writes this process has queued are done."""
        while True:
            queued = (*self._drainers.values(), *self._pending_status.values())
            pending = [t for t in queued if not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def kick(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        """The run's records changed: advance it (and publish its status) soon, once for
        any number of kicks."""
        self._records_changed(uid)
        self._advance_soon(uid, namespace, name)

    def records_changed(self, uid: uuid.UUID) -> None:
        """Something other than an advance or a recorded Job event changed the run's
        records (its labels, an HTTP task's answer): what is kept of them is dropped."""
        self._records_changed(uid)

    def _advance_soon(self, uid: uuid.UUID, namespace: str, name: str) -> None:
        self._dirty[uid] = (namespace, name)
        runner = self._drainers.get(uid)
        if runner is None or runner.done():
            self._drainers[uid] = asyncio.ensure_future(self._drain(uid))

    def _records_changed(self, uid: uuid.UUID, attempt: TaskInstance | None = None) -> None:
        """Something changed the run's records outside an advance: the last summary is old,
        and so is the one of an advance under way. ``attempt``: the change was this
        attempt's, as now recorded, which the records kept in memory take in (any other
        change drops them)."""
        self._summaries.pop(uid, None)
        self._changed_at[uid] = next(self._clock)
        if attempt is None:
            self._records.pop(uid)
        else:
            self._records.take(uid, attempt)

    async def _drain(self, uid: uuid.UUID) -> None:
        while uid in self._dirty:
            # Kicks while this waits are coalesced into the advance that follows.
            if (wait := self._pacing.delay(uid)) > 0:
                await asyncio.sleep(wait)
                continue  # an advance meanwhile may have set a later pace
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
    async def _kick_instance(self, uid: uuid.UUID) -> None:
        loaded = await self._load(uid)
        if loaded is not None:
            self.kick(uid, loaded[0].namespace, loaded[0].name)

    async def _resolve_wait(self, sub: EventSubscription) -> bool:
        """Carry a resolved subscription over to its attempt; True if that changed it."""
        if sub.status is SubscriptionStatus.MATCHED:
            state = TaskState.SUCCEEDED
            message = f"matched event {sub.matched_event_id}"
        elif sub.status is SubscriptionStatus.EXPIRED:
            state = TaskState.TIMED_OUT
            seconds = sub.filter.get("timeoutSeconds")
            message = (
                timeout_message(sub.event_type, seconds)
                if isinstance(seconds, int)
                else f"no matching event of type {sub.event_type} in time"
            )
        elif sub.status is SubscriptionStatus.CANCELLED:
            state, message = TaskState.CANCELLED, "the wait for an event was cancelled"
        else:
            return False
        changed = await self._tasks.update_without_job(
            sub.workflow_instance_id,
            sub.task_name,
            sub.attempt,
            state,
            outputs=sub.outputs if state is TaskState.SUCCEEDED else None,
            message=message,
            cause=FailureCause.FAILURE if state is TaskState.TIMED_OUT else None,
        )
        if changed is not None:
            self._records_changed(sub.workflow_instance_id)
        if changed is not None and state is not TaskState.CANCELLED:
            await self._attempt_finished(changed)  # a wait is an attempt too: span, metrics
        return changed is not None

    async def _start_wait(self, instance: WorkflowInstance, task: Task, launch: Launch) -> None:
        """Subscribe, then record the attempt Waiting (a Waiting attempt always has its
        subscription); both idempotent. A subscription resolved before a crash let the
        attempt be recorded is carried over at once."""
        wait = task.wait_for_event
        assert wait is not None
        assert launch.wait_bindings is not None
        timeout = wait.timeout_seconds or task.timeout_seconds
        document = filter_document(
            wait.correlation,
            launch.wait_bindings.get("params") or {},
            launch.wait_bindings.get("tasks") or {},
            {"name": instance.name, "namespace": instance.namespace},
        )
        if timeout is not None:
            document["timeoutSeconds"] = timeout
        async with self._db.connection(COMPONENT) as conn:
            sub, created = await repository.subscribe(
                conn,
                workflow_instance_id=instance.id,
                task_name=launch.task,
                attempt=launch.attempt,
                event_type=wait.event_type,
                filter=document,
                timeout_seconds=timeout,
            )
        await self._tasks.record_without_job(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=launch.task,
            attempt=launch.attempt,
            state=TaskState.WAITING,
            reason=f"waiting for event {wait.event_type}",
            inputs=launch.inputs,
        )
        if sub.status is not SubscriptionStatus.WAITING:
            await self._resolve_wait(sub)
        elif created and timeout is not None:
            self._deadlines_changed.set()

    async def _settle_waits(
        self, uid: uuid.UUID, spec: WorkflowDefinitionSpec, attempts: list[TaskInstance]
    ) -> bool:
        """Finish the unfinished attempts of wait tasks whose subscription is resolved
        (a crash came between the two writes); True when any attempt changed."""
        if not any(t.wait_for_event is not None for t in spec.all_tasks()):
            return False  # a big run's thousands of attempts are not looked through
        open_waits = [
            a
            for a in attempts
            if a.state not in FINAL_STATES and _task(spec, a.task_name).wait_for_event is not None
        ]
        if not open_waits:
            return False
        async with self._db.connection(COMPONENT) as conn:
            subs = {
                (s.task_name, s.attempt): s
                for s in await repository.subscriptions_of_instance(conn, uid)
            }
        changed = False
        for a in open_waits:
            sub = subs.get((a.task_name, a.attempt))
            if sub is None:
                # Cannot happen (the subscription is written first); fail rather than hang.
                done = await self._tasks.update_without_job(
                    uid,
                    a.task_name,
                    a.attempt,
                    TaskState.FAILED,
                    message="its event subscription is missing",
                )
                changed = changed or done is not None
            elif sub.status is SubscriptionStatus.WAITING:
                if a.state is not TaskState.WAITING:  # recorded, not yet marked Waiting
                    await self._tasks.update_without_job(
                        uid,
                        a.task_name,
                        a.attempt,
                        TaskState.WAITING,
                        message=f"waiting for event {sub.event_type}",
                    )
            elif await self._resolve_wait(sub):
                changed = True
        return changed

    async def _start_child(
        self, instance: WorkflowInstance, task: Task, launch: Launch, *, suspended: bool
    ) -> None:
        """Start a sub-workflow: its WorkflowInstance (owned by the parent's object, named
        like the attempt's Job would be), then the attempt, Running; both idempotent."""
        assert task.workflow_ref is not None
        name = job_name(instance.name, str(instance.id), launch.task, launch.attempt)
        async with self._db.connection(COMPONENT) as conn:
            levels = await repository.depth(conn, instance.id) + 1
        if levels >= MAX_WORKFLOW_DEPTH:
            why = (
                f"cannot start: sub-workflows would nest {levels + 1} levels deep, "
                f"more than {MAX_WORKFLOW_DEPTH}"
            )
            await self._record_skip(instance, Skip(launch.task, why, True, launch.attempt))
            self.kick(instance.id, instance.namespace, instance.name)
            return
        parent = await self._kube.get_instance(instance.namespace, instance.name)
        if parent is None:
            return  # the parent's object is gone: its deletion cancels the run
        ref: dict[str, Any] = {"name": task.workflow_ref.name}
        if task.workflow_ref.version is not None:
            ref["version"] = task.workflow_ref.version
        await self._kube.create_instance(
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": "WorkflowInstance",
                "metadata": {
                    "name": name,
                    "namespace": instance.namespace,
                    "annotations": {
                        PARENT_ANNOTATION: str(instance.id),
                        PARENT_TASK_ANNOTATION: launch.task,
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": f"{API_GROUP}/{API_VERSION}",
                            "kind": "WorkflowInstance",
                            "name": instance.name,
                            "uid": parent["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "workflowRef": ref,
                    "arguments": dict(launch.inputs),
                    **({"suspend": True} if suspended else {}),
                },
            }
        )
        await self._tasks.record_without_job(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=launch.task,
            attempt=launch.attempt,
            state=TaskState.RUNNING,
            reason=f"running workflow {task.workflow_ref.name} as {name}",
            inputs=launch.inputs,
        )

    async def _settle_children(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        attempts: list[TaskInstance],
        *,
        recreate: bool,
    ) -> bool:
        """Carry the end of finished sub-workflows over to their attempts (outputs, or
        why they did not succeed); True when any attempt changed. With ``recreate``
        (resuming after a crash), a sub-workflow whose object was never made is."""
        if not any(t.workflow_ref is not None for t in spec.all_tasks()):
            return False
        running = [
            a
            for a in attempts
            if a.state not in FINAL_STATES and _task(spec, a.task_name).workflow_ref is not None
        ]
        changed = False
        for a in running:
            async with self._db.connection(COMPONENT) as conn:
                child = await repository.instance_by_name(conn, instance.namespace, a.job_name)
            if child is None or child.parent_id != instance.id:
                if recreate:
                    launch = Launch(a.task_name, a.attempt, a.inputs)
                    await self._start_child(
                        instance, _task(spec, a.task_name), launch, suspended=False
                    )
                continue
            if child.phase not in FINAL_PHASES:
                continue
            state, message, cause = _child_outcome(child)
            done = await self._tasks.update_without_job(
                instance.id,
                a.task_name,
                a.attempt,
                state,
                outputs=child.outputs if state is TaskState.SUCCEEDED else None,
                message=message,
                cause=cause,
            )
            changed = changed or done is not None
        return changed

    async def _tell_children(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, change: Mapping[str, Any]
    ) -> None:
        """Pass a cancel or a suspend of the run on to its running sub-workflows."""
        if not any(t.workflow_ref is not None for t in spec.all_tasks()):
            return
        for a in await self._tasks.attempts(instance.id):
            if a.state not in FINAL_STATES and _task(spec, a.task_name).workflow_ref is not None:
                await self._kube.patch_instance_spec(instance.namespace, a.job_name, change)

    async def _wake_parent(self, instance: WorkflowInstance) -> None:
        """A sub-workflow has ended: advance the run whose task it is, now."""
        if instance.parent_id is None:
            return
        async with self._db.connection(COMPONENT) as conn:
            parent = await repository.get_workflow_instance(conn, instance.parent_id)
        if parent is not None and parent.phase not in FINAL_PHASES:
            await self._wake([locks.Waiter(parent.id, parent.namespace, parent.name)])

    async def _cancel_waits(self, uid: uuid.UUID) -> None:
        async with self._db.connection(COMPONENT) as conn:
            await repository.cancel_subscriptions(conn, uid)

    async def _load(self, uid: uuid.UUID) -> tuple[WorkflowInstance, WorkflowDefinitionSpec] | None:
        async with self._db.connection(COMPONENT) as conn:
            instance = await repository.get_workflow_instance(conn, uid)
            if instance is None:
                return None
            return instance, await self._spec_of(instance, conn)

    async def _spec_of(
        self, instance: WorkflowInstance, conn: AsyncConnection[Any] | None = None
    ) -> WorkflowDefinitionSpec:
        """The parsed definition version the run runs: cached (versions never change),
        read on ``conn`` (or a connection of its own) the first time."""
        key = (instance.namespace, instance.workflow_name, instance.workflow_version)
        spec = self._specs.get(key)
        if spec is not None:
            self._specs.move_to_end(key)
            return spec
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self._db.connection(COMPONENT))
            definition = await repository.get_workflow_definition(conn, *key)
        assert definition is not None  # the foreign key pins it
        spec = WorkflowDefinitionSpec.model_validate(definition.spec)
        self._specs[key] = spec
        if len(self._specs) > SPEC_CACHE_SIZE:
            self._specs.popitem(last=False)
        return spec

    async def _set_phase(
        self,
        uid: uuid.UUID,
        phase: WorkflowPhase,
        *,
        message: str | None = None,
        outputs: Mapping[str, Any] | None = None,
        failure: Mapping[str, Any] | None = None,
        starting: bool = False,
    ) -> WorkflowInstance | None:
        """Record a phase change; ``starting``: the run's first launch (Pending -> Running).
        Returns the changed run, None when the move was not allowed any more (a lost race:
        another writer moved it first)."""
        async with self._db.connection(COMPONENT) as conn:
            changed = await repository.set_workflow_phase(
                conn, uid, phase, message=message, outputs=outputs, failure=failure
            )
        if changed is None:
            return None  # e.g. already final: another writer recorded (and measured) the end
        if starting:
            metrics.workflow_instance_started(changed.namespace)
        if phase in FINAL_PHASES:
            start = changed.started_at or changed.created_at
            end = changed.finished_at or changed.updated_at
            metrics.workflow_instance_finished(phase.value, (end - start).total_seconds())
            workflow_span(
                self.trace_of(uid),
                namespace=changed.namespace,
                instance=changed.name,
                workflow=changed.workflow_name,
                start=start,
                end=end,
                outcome=phase.value.lower(),
                error=message if phase is not WorkflowPhase.SUCCEEDED else None,
            )
        return changed

    async def _advance(
        self, uid: uuid.UUID, control: Control, *, ensure_jobs: bool, start: Records | None
    ) -> tuple[Summary | None, Records | None]:
        """One advance, in named steps, each idempotent: retry the run if asked, and hold
        its lock (or wait in the lock's queue); then, until nothing more can happen now,
        let go of the locks of ended attempts, finish what is left of a run that has
        ended, cancel or suspend it as asked, settle resolved waits and finished
        sub-workflows, plan and carry the plan out (ending the run when the plan says
        so); last, record when the run must be woken if nothing else happens.

        ``start``: the run's records as known without reading them (just recorded, or
        kept since the last advance; see :meth:`advance`). What an advance that only
        launched Jobs recorded is summarised as it stands, without reading it again, and
        returned as the records the next advance starts from (None: read them then)."""
        if start is not None:
            loaded: tuple[WorkflowInstance, WorkflowDefinitionSpec] | None = (
                start.instance,
                await self._spec_of(start.instance),
            )
        else:
            loaded = await self._load(uid)
        if loaded is None:
            return None, None
        instance, spec = loaded
        seen_wake = instance.wake_at  # read before the tasks: see repository.set_wake_at
        instance = await self._retry_if_asked(instance, control)
        if instance is not loaded[0]:
            start = None  # reopened for a retry: its attempts are read again
        if not await self._hold_run_lock(instance, spec, control):
            return self._summarize(instance, spec, await self._tasks.attempts(uid)), None
        defaults = await self._task_defaults(instance.namespace, spec)
        retry_at: dt.datetime | None = None
        mock_due: dt.datetime | None = None  # when the next mocked attempt ends
        resuming = False  # set with ensure_jobs: sub-workflows lost in a crash are recreated
        ended: _Ended | None = None  # the run as this advance ended it, when known as such
        # The run and its attempts as this advance left them, when known without a read.
        known: Records | None = None
        known_attempts: list[TaskInstance] = []  # known's attempts, as a list
        for _ in range(len(spec.tasks) + 2):  # skips can unblock more tasks at once
            attempts: list[TaskInstance]
            base: dict[str, int]
            if start is not None:
                with self._pacing.planning(uid):  # grows with the run, as planning does
                    attempts, base = list(start.attempts.values()), dict(start.base)
                start = None
            else:
                attempts, base = await self._current_attempts(uid)
            await self._release_task_locks(instance, spec, attempts)
            if instance.phase in FINAL_PHASES:
                await self._close_out(instance, spec, attempts, base)
                break
            if control.cancel:
                ended = await self._end(
                    instance,
                    spec,
                    WorkflowPhase.CANCELLED,
                    "cancelled by spec.cancel",
                    current=(attempts, base),
                )
                break
            instance = await self._follow_suspend(instance, spec, control)
            if ensure_jobs:
                ensure_jobs = False
                if attempts:  # a new run has none: nothing can be lost yet
                    resuming = True
                    await self._ensure_jobs(instance, spec, attempts)
                    continue  # an attempt whose Job cannot be built is now Failed: plan on that
            settled, mock_due = await self._settle_mocks(instance, spec, attempts)
            if settled:
                continue  # plan on the attempts as they now stand
            real = (
                [a for a in attempts if _mock_of(instance, a.task_name) is None]
                if instance.mocks
                else attempts
            )
            if await self._settle_waits(uid, spec, real):
                continue  # plan on the attempts as they now stand
            if await self._settle_children(instance, spec, real, recreate=resuming):
                continue
            planned = _now()
            with self._pacing.planning(uid):
                decision = self._plan(instance, spec, control, attempts, base, defaults)
                self._fan_outs[uid] = decision.fan_outs
                self._measure_advance(instance, attempts, planned)
            retry_at = decision.retry_at
            instance, launched = await self._carry_out(instance, spec, decision, planned, control)
            if decision.phase is not None:
                unchanged = not (decision.skips or decision.launches)
                ended = await self._end(
                    instance,
                    spec,
                    decision.phase,
                    decision.failure.message if decision.failure else "succeeded",
                    outputs=decision.outputs,
                    failure=decision.failure.as_status() if decision.failure else None,
                    current=(attempts, base) if unchanged else None,
                )
                break
            if not decision.skips:
                if launched is not None and instance.wake_at is None:
                    # With no wake_at, no deadline loop claims (and writes) the row.
                    with self._pacing.planning(uid):
                        known_attempts = [*attempts, *launched]
                        known = Records.of(instance, known_attempts, base, self.ownership.epoch)
                        if len(known.attempts) != len(known_attempts):
                            known_attempts = list(known.attempts.values())  # one relaunched
                break
            instance = await self._reload(uid)
        if ended is not None:  # its records as it left them: nothing to read again
            self._forget_overhead(ended.instance)
            return self._summarize(ended.instance, spec, ended.attempts), None
        if known is not None:
            # This advance wrote the run's row last (each write returned it), and what it
            # launched is all it changed; a Job event meanwhile keeps the summary (and
            # these records) from being reused (see advance).
            instance, current = known.instance, known_attempts
        else:
            instance = await self._reload(uid)
            current = await self._tasks.attempts(uid)
        if instance.phase in FINAL_PHASES:
            self._forget_overhead(instance)
        wake = min((d for d in (retry_at, mock_due) if d is not None), default=None)
        if await self._schedule_wake(instance, spec, wake, seen=seen_wake):
            known = None  # the deadline loop may claim (and write) the row from now on
        if not (self.ownership.exclusive and _advanced_by_its_owner_only(spec)):
            known = None  # another process may write its records: read them next time
        return self._summarize(instance, spec, current), known

    def _summarize(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        attempts: list[TaskInstance],
    ) -> Summary:
        """The run's status summary, with what this process knows now beside the records
        (``attempts`` must not change after)."""
        waiting_for = self._waiting_for.get(instance.id)
        fan_outs = self._fan_outs.get(instance.id)
        return Summary(
            instance.phase,
            lambda: summarize(instance, spec, attempts, waiting_for, fan_outs=fan_outs),
        )

    async def _reload(self, uid: uuid.UUID) -> WorkflowInstance:
        loaded = await self._load(uid)
        assert loaded is not None  # instances are never deleted while they are advanced
        return loaded[0]

    async def _retry_if_asked(
        self, instance: WorkflowInstance, control: Control
    ) -> WorkflowInstance:
        """Reopen a Failed (or Error) run when spec.retry asks for one more retry."""
        if control.retry <= instance.retries or instance.phase not in RETRYABLE_PHASES:
            return instance
        # Supersede first, then reopen: a crash in between is repaired by the next call,
        # which finds the run still failed and the same retry still asked for.
        await self._tasks.supersede_unsuccessful(instance.id)
        async with self._db.connection(COMPONENT) as conn:
            await repository.reopen_for_retry(conn, instance.id, control.retry)
        return await self._reload(instance.id)

    async def _current_attempts(self, uid: uuid.UUID) -> tuple[list[TaskInstance], dict[str, int]]:
        """The attempts the engine plans from (those no retry of the run set aside), and
        per task the highest attempt number set aside (numbering goes on from there)."""
        everything = await self._tasks.attempts(uid)
        base: dict[str, int] = {}
        for a in everything:
            if a.superseded_at is not None:
                base[a.task_name] = max(base.get(a.task_name, 0), a.attempt)
        return [a for a in everything if a.superseded_at is None], base

    async def _follow_suspend(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, control: Control
    ) -> WorkflowInstance:
        """Suspend a running run, or resume a suspended one, as spec.suspend asks."""
        if control.suspend and instance.phase is WorkflowPhase.RUNNING:
            target, message = WorkflowPhase.SUSPENDED, "suspended by spec.suspend"
        elif not control.suspend and instance.phase is WorkflowPhase.SUSPENDED:
            target, message = WorkflowPhase.RUNNING, "resumed"
        else:
            return instance
        changed = await self._set_phase(instance.id, target, message=message)
        instance = changed or await self._reload(instance.id)
        await self._tell_children(instance, spec, {"suspend": control.suspend})
        return instance

    def _plan(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        control: Control,
        attempts: list[TaskInstance],
        base: Mapping[str, int],
        defaults: Mapping[str, TaskDefaults],
    ) -> Plan:
        """What the engine says must happen now (a pure function of the records)."""
        return plan(
            spec,
            instance.inputs,
            [self._engine_view(a) for a in attempts],
            now=_now(),
            suspended=control.suspend,
            deadline=_deadline(instance, spec),
            attempt_base=base,
            task_defaults=defaults,
        )

    def _engine_view(self, attempt: TaskInstance) -> Attempt:
        """``attempt`` as the engine sees it, made once for this TaskInstance (at most
        MAX_KEPT_ATTEMPTS are remembered, the first made first forgotten)."""
        key = attempt.id.int
        made = self._engine_views.get(key)
        if made is not None and made[0] is attempt:
            return made[1]
        view = _as_attempt(attempt)
        self._engine_views[key] = (attempt, view)
        if len(self._engine_views) > MAX_KEPT_ATTEMPTS:
            self._engine_views.popitem(last=False)
        return view

    async def _task_defaults(
        self, namespace: str, spec: WorkflowDefinitionSpec
    ) -> dict[str, TaskDefaults]:
        """By task name, what the TaskDefinitions its tasks name give them (their newest
        versions, as a launch uses); one query, none for a workflow without taskRef."""
        refs = {t.name: t.task_ref.name for t in spec.all_tasks() if t.task_ref is not None}
        if not refs:
            return {}
        async with self._db.connection("task_execution") as conn:
            found = await task_repository.latest_task_definitions(
                conn, namespace, sorted(set(refs.values()))
            )
        return {
            task: TaskDefaults.of(ref, TaskDefinitionSpec.model_validate(found[ref].spec))
            for task, ref in refs.items()
            if ref in found
        }

    async def _carry_out(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        decision: Plan,
        planned: dt.datetime,
        control: Control,
    ) -> tuple[WorkflowInstance, list[TaskInstance] | None]:
        """Record the plan's skips and start its launches (the first makes the run
        Running); returns the instance as it now stands, and the attempts the launches
        recorded when known without reading them (see :meth:`_start_launches`)."""
        for skip in decision.skips:
            await self._record_skip(instance, skip)
        if decision.launches and instance.phase is WorkflowPhase.PENDING:
            changed = await self._set_phase(
                instance.id, WorkflowPhase.RUNNING, message="running", starting=True
            )
            instance = changed or await self._reload(instance.id)
        launched = await self._start_launches(instance, spec, decision.launches, planned, control)
        return instance, launched

    async def _start_launches(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        launches: Sequence[Launch],
        planned: dt.datetime,
        control: Control,
    ) -> list[TaskInstance] | None:
        """Start the launches in plan order, LAUNCH_CONCURRENCY at a time. A burst of
        thousands (a wide fan-out) takes minutes, so the status is published along the
        way: it never trails the records by more than a status write's coalescing.

        Returns the attempts recorded, when every launch was a Job's (else None: the
        records are read again). After a launch fails no new one begins; those in flight
        end, then the first error is raised (what was not started is planned again by
        the next advance)."""
        pending = iter(launches)
        errors: list[BaseException] = []
        recorded: list[TaskInstance] = []
        unknown = False
        last_publish = time.monotonic()

        async def worker() -> None:
            nonlocal last_publish, unknown
            for launch in pending:
                if errors:
                    return
                try:
                    started = await self._launch(
                        instance,
                        spec,
                        launch,
                        planned,
                        bypass_cache=control.bypass_cache,
                        control_suspended=control.suspend,
                    )
                except Exception as exc:
                    errors.append(exc)
                    return
                if started is None:
                    unknown = True
                else:
                    recorded.append(started)
                if time.monotonic() - last_publish >= STATUS_COALESCE_SECONDS:
                    last_publish = time.monotonic()
                    self._publish_soon(instance.id, instance.namespace, instance.name)

        await asyncio.gather(*(worker() for _ in range(min(LAUNCH_CONCURRENCY, len(launches)))))
        if errors:
            raise errors[0]
        return None if unknown else recorded

    async def _record_skip(self, instance: WorkflowInstance, skip: Skip) -> None:
        await self._tasks.record_without_job(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=skip.task,
            attempt=skip.attempt,
            state=TaskState.FAILED if skip.failed else TaskState.SKIPPED,
            reason=skip.reason,
            cause=FailureCause.INVALID if skip.failed else None,
        )

    async def _launch(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        launch: Launch,
        planned: dt.datetime,
        *,
        bypass_cache: bool = False,
        control_suspended: bool = False,
    ) -> TaskInstance | None:
        """Start one attempt: a wait for an event subscribes, any other task gets its Job
        (its ``launch`` stage: the plan made at ``planned`` -> the Job created), unless
        its cache holds a result to reuse. Returns the attempt's record as a Job launch
        left it; None for the other kinds of task (their records are read when needed)."""
        task = _task(spec, launch.task)
        if _mock_of(instance, launch.task) is not None:
            await self._start_mocked(instance, launch)
            return None
        if task.wait_for_event is not None:
            await self._start_wait(instance, task, launch)
            return None
        if task.workflow_ref is not None:
            await self._start_child(instance, task, launch, suspended=control_suspended)
            return None
        if task.http is not None:  # the operator sends the request: no Job
            await http_tasks(self).start(instance, task, launch)
            return None
        if task.synchronization is not None and not await self._hold_task_lock(
            instance, spec, task, launch
        ):
            return None  # not started: planned again when the lock is granted
        resolved = await self._resolve(instance.namespace, task)
        key, reuse_since = None, None
        if task.cache is not None:
            definition = resolved.definition or (instance.workflow_name, instance.workflow_version)
            try:
                key = cache_key(instance.namespace, task.cache, launch.inputs, definition)
            except ValidationError as exc:
                await self._record_skip(
                    instance,
                    Skip(launch.task, f"cannot start: cache key: {exc}", True, launch.attempt),
                )
                self.kick(instance.id, instance.namespace, instance.name)
                return None
            if bypass_cache:
                metrics.task_cache_lookup("bypassed")
            else:
                reuse_since = _now() - dt.timedelta(seconds=task.cache.ttl_seconds)
        started = await self._tasks.start(
            self._job_request(
                instance, spec, task, launch.task, resolved, launch.attempt, launch.inputs
            ),
            definition=resolved.definition,
            cache_key=key,
            reuse_since=reuse_since,
        )
        if reuse_since is not None:
            metrics.task_cache_lookup("hit" if started.cached_from is not None else "miss")
        if started.cached_from is not None:  # a cached result: count it, and plan again
            await self._attempt_finished(started)
            self.kick(instance.id, instance.namespace, instance.name)
        elif started.state in FINAL_STATES:  # its Job could not be built: plan again
            self.kick(instance.id, instance.namespace, instance.name)
        elif started.state is TaskState.PENDING:  # its Job was just created
            launch_seconds = (_now() - planned).total_seconds()
            metrics.task_overhead("launch", launch_seconds)
            self._launch_seconds[(instance.id, launch.task, launch.attempt)] = launch_seconds
        return started

    async def _start_mocked(self, instance: WorkflowInstance, launch: Launch) -> None:
        """Start an attempt of a mocked task (a WorkflowTest's run): recorded Running with
        no Job and no message; :meth:`_settle_mocks` ends it as its mock says."""
        await self._tasks.record_without_job(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=launch.task,
            attempt=launch.attempt,
            state=TaskState.RUNNING,
            reason="",
            inputs=launch.inputs,
        )
        self.kick(instance.id, instance.namespace, instance.name)

    async def _settle_mocks(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, attempts: list[TaskInstance]
    ) -> tuple[bool, dt.datetime | None]:
        """End the running attempts of mocked tasks whose time has come, as
        :func:`~plait.workflow_orchestrator.mocks.mock_outcome` says (the function local
        WorkflowTest runs use); (whether any ended, when the next one will end)."""
        if not instance.mocks:
            return False, None
        changed, due = False, None
        now = _now()
        for a in attempts:
            mock = _mock_of(instance, a.task_name)
            if mock is None or a.state is not TaskState.RUNNING:
                continue
            task = _task(spec, a.task_name)
            try:
                timeout = task.timeout_seconds
                if task.task_ref is not None:
                    timeout = (await self._resolve(instance.namespace, task)).timeout_seconds
                outcome = mock_outcome(a.task_name, mock, a.attempt, a.inputs or {}, timeout)
            except MockError as exc:
                outcome = MockOutcome(0.0, TaskState.FAILED, message=str(exc),
                                      cause=FailureCause.INVALID)  # fmt: skip
            ends = (a.started_at or a.created_at) + dt.timedelta(seconds=outcome.after)
            if ends > now:
                due = ends if due is None else min(due, ends)
                continue
            finished = await self._tasks.update_without_job(
                instance.id,
                a.task_name,
                a.attempt,
                outcome.state,
                outputs=outcome.outputs,
                message=outcome.message,
                cause=outcome.cause,
                exit_code=outcome.exit_code,
            )
            if finished is not None:
                changed = True
                await self._attempt_finished(finished)
        return changed, due

    async def _hold_run_lock(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, control: Control
    ) -> bool:
        """Whether the run may go on: it has no lock to hold, holds it, or has ended or is
        being cancelled (which needs no lock); else it waits in the lock's queue."""
        sync = spec.synchronization
        if sync is None or instance.phase in FINAL_PHASES or control.cancel:
            return True
        params = parameters_with_defaults(spec, instance.inputs)
        try:
            key = lock_key(sync.key, {"params": params})
        except ValidationError as exc:
            why = f"synchronization key: {exc}"
            await self._end(
                instance, spec, WorkflowPhase.FAILED, why, failure={"message": why[:1024]}
            )
            return False
        return await self._request_lock(instance, key, sync.limit, locks.RUN, control.priority)

    async def _hold_task_lock(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        task: Task,
        launch: Launch,
    ) -> bool:
        """Whether an attempt of a task with synchronization may start (it holds the
        lock); a key that cannot be evaluated fails the attempt."""
        assert task.synchronization is not None
        activation = {
            "params": parameters_with_defaults(spec, instance.inputs),
            "inputs": dict(launch.inputs),
        }
        try:
            key = lock_key(task.synchronization.key, activation)
        except ValidationError as exc:
            why = f"cannot start: synchronization key: {exc}"
            await self._record_skip(instance, Skip(launch.task, why, True, launch.attempt))
            self.kick(instance.id, instance.namespace, instance.name)
            return False
        priority = self._controls.get(instance.id, Control()).priority
        return await self._request_lock(
            instance, key, task.synchronization.limit, launch.task, priority
        )

    async def _request_lock(
        self, instance: WorkflowInstance, key: str, limit: int, holder: str, priority: int
    ) -> bool:
        async with self._db.connection(COMPONENT) as conn:
            state, woken = await locks.request(
                conn,
                namespace=instance.namespace,
                key=key,
                limit=limit,
                workflow_instance_id=instance.id,
                instance_name=instance.name,
                task=holder,
                priority=priority,
            )
        await self._wake(woken)
        if state.granted:
            if self._waiting_for.pop(instance.id, None) is not None:
                self._publish_soon(instance.id, instance.namespace, instance.name)
            return True
        waiting = state.waiting_text()
        if self._waiting_for.get(instance.id) != waiting:
            self._waiting_for[instance.id] = waiting
            logger.info("%s/%s waits for %s", instance.namespace, instance.name, waiting)
            self._publish_soon(instance.id, instance.namespace, instance.name)
        return False

    async def _release_task_locks(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        attempts: Sequence[TaskInstance],
    ) -> None:
        """Let go of the locks of the attempts that have ended (a retry asks again)."""
        if not any(t.synchronization is not None for t in spec.all_tasks()):
            return
        ended = [
            a.task_name
            for a in attempts
            if a.state in FINAL_STATES and _task(spec, a.task_name).synchronization is not None
        ]
        if ended:
            async with self._db.connection(COMPONENT) as conn:
                await self._wake(await locks.release(conn, instance.id, ended))

    async def _release_locks(self, uid: uuid.UUID) -> None:
        """Let go of every lock a run holds or waits for, waking the runs granted them."""
        self._waiting_for.pop(uid, None)
        async with self._db.connection(COMPONENT) as conn:
            woken = await locks.release(conn, uid)
        await self._wake(woken)

    async def _wake(self, woken: Sequence[locks.Waiter]) -> None:
        """Advance the runs just granted a lock (after learning what their users ask)."""
        for waiter in woken:
            try:
                await self._learn_control(
                    waiter.workflow_instance_id, waiter.namespace, waiter.instance_name
                )
            except Exception:
                logger.exception("reading %s/%s failed", waiter.namespace, waiter.instance_name)
            self.kick(waiter.workflow_instance_id, waiter.namespace, waiter.instance_name)

    async def _end(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        phase: WorkflowPhase,
        message: str,
        *,
        outputs: Mapping[str, Any] | None = None,
        failure: Mapping[str, Any] | None = None,
        current: tuple[list[TaskInstance], Mapping[str, int]] | None = None,
    ) -> _Ended | None:
        """End the run: first finish what is left of it, then record its final phase, so a
        final phase is never seen with unfinished tasks. A crash in between leaves the run
        unfinished, and the next advance ends it again. ``current``: the attempts (and
        the numbering base) as they stand, when the caller has just read them.

        Returns the ended run and its attempts when they are known without reading them
        again: nothing was left to finish and this call moved the phase."""
        attempts, base = (
            current if current is not None else await self._current_attempts(instance.id)
        )
        why = "the workflow was cancelled" if phase is WorkflowPhase.CANCELLED else message
        finished = await self._finish_tasks(instance, spec, attempts, base, why)
        changed = await self._set_phase(
            instance.id, phase, message=message, outputs=outputs, failure=failure
        )
        if _uses_locks(spec):
            await self._release_locks(instance.id)
        else:
            self._waiting_for.pop(instance.id, None)
        await self._wake_parent(instance)
        if changed is None or finished:
            return None
        return _Ended(changed, attempts)

    async def _close_out(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        attempts: list[TaskInstance],
        base: Mapping[str, int],
    ) -> None:
        """Finish what is left of a run that has ended (a launch that raced its end), and
        let go of its locks (again, should a crash have come between its end and that)."""
        await self._finish_tasks(instance, spec, attempts, base, _ended_because(instance))
        await self._release_locks(instance.id)

    async def _finish_tasks(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        attempts: list[TaskInstance],
        base: Mapping[str, int],
        why: str,
    ) -> bool:
        """Leave every task of an ending run in a final state: its waits and running
        attempts Cancelled (their Jobs deleted), the tasks (and fan-out items) that never
        started Skipped. True when there was anything to finish."""
        recorded = {a.task_name for a in attempts}
        names = attempt_names(spec, fan_out_sizes(instance, spec, attempts))
        fanned_out = {split_item_name(r)[0] for r in recorded}  # tasks with item attempts
        never_started = [n for n in names if n not in recorded and n not in fanned_out]
        unfinished = any(a.state not in FINAL_STATES for a in attempts)
        if not never_started and not unfinished:
            return False
        await self._cancel_waits(instance.id)
        if unfinished:
            await self._tell_children(instance, spec, {"cancel": True})
            await self._tasks.cancel_active(instance.id, why)
        if never_started:
            await self._tasks.record_not_started(
                namespace=instance.namespace,
                instance_name=instance.name,
                instance_uid=str(instance.id),
                attempts=[(n, base.get(n, 0) + 1) for n in never_started],
                reason=f"not started: {why}",
            )
        return True

    async def _schedule_wake(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        retry_at: dt.datetime | None,
        *,
        seen: dt.datetime | None,
    ) -> bool:
        """Record when an unfinished run must be advanced by itself: the earlier of its
        workflow timeout and the end of a retry's backoff (none: nothing will wake it
        but its tasks and the user). True when the row was written."""
        if instance.phase in FINAL_PHASES:
            return False  # ending the run cleared it
        deadlines = [d for d in (_deadline(instance, spec), retry_at) if d is not None]
        wake = min(deadlines) if deadlines else None
        if wake == instance.wake_at:
            return False
        async with self._db.connection(COMPONENT) as conn:
            stored = await repository.set_wake_at(conn, instance.id, wake, seen=seen)
        if stored is not None:
            self._deadlines_changed.set()  # this replica's loop sleeps until it at once
        return True

    async def _resolve(self, namespace: str, task: Task) -> ResolvedTask:
        """What a container task runs: its own template, or its TaskDefinition's newest
        version (whose timeout applies when the task sets none)."""
        if task.template is not None:
            return ResolvedTask(task.template, None, task.timeout_seconds)
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
        return ResolvedTask(
            spec.template,
            (found.name, found.version),
            task.timeout_seconds or spec.timeout_seconds,
        )

    async def _ensure_jobs(
        self, instance: WorkflowInstance, spec: WorkflowDefinitionSpec, attempts: list[TaskInstance]
    ) -> None:
        requests = []
        for a in attempts:
            if a.state is not TaskState.PENDING:
                continue
            task = _task(spec, a.task_name)
            if task.wait_for_event is not None or _mock_of(instance, a.task_name) is not None:
                continue  # no Job: settled with its subscription, or as its mock says
            resolved = await self._resolve(instance.namespace, task)
            request = self._job_request(
                instance, spec, task, a.task_name, resolved, a.attempt, a.inputs
            )
            requests.append(replace(request, attempt_id=a.id))
        await self._tasks.ensure_jobs(requests)

    def _job_request(
        self,
        instance: WorkflowInstance,
        spec: WorkflowDefinitionSpec,
        task: Task,
        name: str,
        resolved: ResolvedTask,
        attempt: int,
        inputs: Mapping[str, Any],
    ) -> JobRequest:
        """What the Job of one attempt of ``task`` is built from: the same for a launch and
        a resume. ``name``: the attempt's task name (a fan-out item's is ``task[i]``)."""
        return JobRequest(
            namespace=instance.namespace,
            instance_name=instance.name,
            instance_uid=str(instance.id),
            task=name,
            attempt=attempt,
            template=with_workflow_defaults(resolved.template, spec),
            inputs=inputs,
            timeout_seconds=resolved.timeout_seconds,
            traceparent=task_traceparent(self.trace_of(instance.id), name, attempt),
            artifact_repository=(
                spec.artifact_repository.integration if spec.artifact_repository else None
            ),
            input_artifacts=tuple(task.input_artifacts or ()),
        )

    def _publish_soon(
        self, uid: uuid.UUID, namespace: str, name: str, delay: float = STATUS_COALESCE_SECONDS
    ) -> None:
        """Publish the status within ``delay`` seconds, coalescing the changes of a run
        until then (a burst of Job events) into one write."""
        self._to_publish[uid] = (namespace, name)
        due = time.monotonic() + (0.0 if self._stopping else delay)
        if due < self._publish_due.get(uid, due + 1):
            self._publish_due[uid] = due
            self._due_sooner.setdefault(uid, asyncio.Event()).set()
        if uid in self._pending_status and not self._pending_status[uid].done():
            return
        writer = asyncio.ensure_future(self._publish_later(uid))
        self._pending_status[uid] = writer
        writer.add_done_callback(
            lambda done: (
                self._pending_status.pop(uid, None)
                if self._pending_status.get(uid) is done
                else None
            )
        )

    async def _publish_later(self, uid: uuid.UUID) -> None:
        # Every status write is an API call: the changes of a run until it is due (its tasks
        # starting and finishing) make one write. The phase is in PostgreSQL at once; only
        # the object's summary trails by up to that much. The due time can move earlier
        # while this waits (a task ends while another one's Running waits). Changes asked
        # for during a write wait for their own due time too, so that a run whose events
        # never stop is written once per coalescing period, not once per write's duration.
        sooner = self._due_sooner.setdefault(uid, asyncio.Event())
        while uid in self._to_publish:
            while (wait := self._publish_due.get(uid, 0.0) - time.monotonic()) > 0:
                sooner.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sooner.wait(), wait)
            self._publish_due.pop(uid, None)
            namespace, name = self._to_publish.pop(uid)
            try:
                await self.publish(uid, namespace, name)
            except Exception:
                logger.exception("publishing the status of %s/%s failed", namespace, name)
        self._due_sooner.pop(uid, None)
        self._publish_due.pop(uid, None)

    async def publish(
        self, uid: uuid.UUID, namespace: str, name: str, *, generation: int | None = None
    ) -> None:
        """Write the run's summary to its object, safely with any number of writers.

        The patch carries the resourceVersion of the object as last seen (by the watch, or
        from this process's own last write; read only when there is none), and the
        summary is computed from PostgreSQL *after* that version was seen: the summary
        its last advance ended with when that advance began reading later, else read
        afresh. A writer holding an older view gets a conflict, reads the object and
        recomputes, so the object never goes back to a stale summary.
        """
        lock = self._writing.setdefault(uid, asyncio.Lock())
        async with lock:
            await self._publish(uid, namespace, name, generation)
        if uid not in self._views and not lock.locked():
            self._writing.pop(uid, None)  # ended or gone: nothing more is written

    async def _publish(
        self, uid: uuid.UUID, namespace: str, name: str, generation: int | None
    ) -> None:
        view = self._views.get(uid)
        for _ in range(10):
            if view is None:
                obj = await self._kube.get_instance(namespace, name)
                if obj is None or obj["metadata"].get("uid") != str(uid):
                    self.forget_object(uid)
                    return  # gone, or a new object of the same name: not this run's
                view = self._remember(uid, obj)
            summary = await self._summary_since(uid, view.stamp)
            if summary is None:
                return
            desired = self._status_change(summary, view.status, generation)
            if desired is None:
                if summary["phase"] in FINAL_VALUES:
                    self.forget_object(uid)  # shown ended already: nothing more is written
                return
            written = await self._kube.patch_instance_status(
                namespace, name, desired, resource_version=view.resource_version
            )
            if written is not None:
                if summary["phase"] in FINAL_VALUES:
                    self.forget_object(uid)  # nothing more is written to it
                else:
                    self._remember(uid, written, wrote=True)
                return
            view = None  # a conflict (or gone): read the object again
        logger.warning("gave up publishing the status of %s/%s after conflicts", namespace, name)

    async def _summary_since(self, uid: uuid.UUID, stamp: int) -> dict[str, Any] | None:
        """The run's summary from records read after ``stamp``: the last advance's when it
        began later, else read now. None when the run has no record."""
        known = self._summaries.get(uid)
        if known is not None and known[0] > stamp:
            return known[1].status()
        kept = self._records.get(uid)
        if kept is not None and kept.epoch == self.ownership.epoch:
            # Kept current by every change since (see _records_changed): as good as a read.
            spec = await self._spec_of(kept.instance)
            return self._summarize(kept.instance, spec, list(kept.attempts.values())).status()
        loaded = await self._load(uid)
        if loaded is None:
            return None
        instance, spec = loaded
        fan_outs = self._fan_outs.get(uid)
        if fan_outs is None and any(t.for_each is not None for t in spec.tasks):
            # The sizes are planned from the attempts in full (none planned here yet).
            return self._summarize(instance, spec, await self._tasks.attempts(uid)).status()
        current = await self._tasks.current_states(uid)
        return summarize_states(instance, spec, current, self._waiting_for.get(uid), fan_outs or {})

    @staticmethod
    def _status_change(
        summary: Mapping[str, Any], current: Mapping[str, Any], generation: int | None
    ) -> dict[str, Any] | None:
        """The merge patch that makes ``current`` say ``summary``; None when it does."""
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
            return None
        return desired


@dataclass(frozen=True)
class _Ended:
    """A run as the advance that ended it left it."""

    instance: WorkflowInstance
    attempts: list[TaskInstance]


@dataclass(frozen=True)
class _View:
    """A run's object as this process last saw it."""

    stamp: int
    resource_version: str
    status: Mapping[str, Any]
    written: tuple[str, ...] = ()
    """The resourceVersions of this process's last writes to the object."""


_OUTCOMES = {
    TaskState.SUCCEEDED: "succeeded",
    TaskState.FAILED: "failed",
    TaskState.TIMED_OUT: "timed_out",
    TaskState.CANCELLED: "cancelled",
}


def _advanced_by_its_owner_only(spec: WorkflowDefinitionSpec) -> bool:
    """Whether only the replica that owns a run of ``spec`` ever changes its records, so
    that replica may keep them between advances. An event a wait receives, a sub-workflow
    ending and a lock let go of advance the run in whichever replica handles them."""
    return not _uses_locks(spec) and not any(
        t.wait_for_event is not None or t.workflow_ref is not None for t in spec.all_tasks()
    )


def _uses_locks(spec: WorkflowDefinitionSpec) -> bool:
    """Whether runs of ``spec`` ever hold or wait for a lock (a mutex or semaphore)."""
    return spec.synchronization is not None or any(
        t.synchronization is not None for t in spec.all_tasks()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _split(attempt: TaskInstance) -> tuple[float | None, float | None]:
    """A finished attempt's queue wait (created -> running) and run time (running ->
    finished); neither when it was never seen running."""
    if attempt.started_at is None:
        return None, None
    end = attempt.finished_at or attempt.updated_at
    return (
        (attempt.started_at - attempt.created_at).total_seconds(),
        (end - attempt.started_at).total_seconds(),
    )


def succeeded_condition(summary: Mapping[str, Any], generation: int) -> Condition:
    """The ``Succeeded`` condition of a run from its summary."""
    phase = summary["phase"]
    failure = summary.get("failure") or {}
    if phase == WorkflowPhase.SUCCEEDED.value:
        return Condition("Succeeded", "True", "Succeeded", "every task succeeded", generation)
    if phase in {p.value for p in FINAL_PHASES}:
        return Condition("Succeeded", "False", phase, failure.get("message", phase), generation)
    return Condition("Succeeded", "Unknown", phase, f"{summary['progress']} tasks done", generation)


def control_of(obj: Mapping[str, Any]) -> Control:
    """What a WorkflowInstance object asks of its run (its spec and trace annotation)."""
    spec = obj.get("spec") or {}
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return Control(
        cancel=bool(spec.get("cancel", False)),
        suspend=bool(spec.get("suspend", False)),
        retry=int(spec.get("retry", 0) or 0),
        traceparent=annotations.get(TRACEPARENT_ANNOTATION),
        bypass_cache=bool(spec.get("bypassCache", False)),
        priority=int(spec.get("priority", 0) or 0),
    )


def lock_key(expression: str, activation: Mapping[str, Any]) -> str:
    """A lock's name: its key's value, which must be a string of 1 to 253 characters.
    Raises ValidationError otherwise."""
    value = expressions.evaluate(expressions.compile(expression), activation)
    if not isinstance(value, str) or not 0 < len(value) <= 253:
        raise ValidationError(f"{expression!r} gave {value!r}, not a name of 1 to 253 characters")
    return value


def cache_key(
    namespace: str, cache: TaskCache, inputs: Mapping[str, Any], definition: tuple[str, int]
) -> str:
    """The digest an attempt's cache key is stored and looked up by: SHA-256 of the
    namespace and the key's value (canonical JSON), so equal keys meet only within a
    namespace. Raises ValidationError when the key cannot be evaluated."""
    activation = {
        "inputs": dict(inputs),
        "definition": {"name": definition[0], "version": definition[1]},
    }
    value = expressions.evaluate(expressions.compile(cache.key), activation)
    canonical = json.dumps([namespace, value], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fan_out_sizes(
    instance: WorkflowInstance, spec: WorkflowDefinitionSpec, attempts: Sequence[TaskInstance]
) -> Mapping[str, int]:
    """The number of items of each fan-out whose list is known, as the engine sees it."""
    if not any(t.for_each is not None for t in spec.tasks):
        return {}
    base: dict[str, int] = {}
    for a in attempts:
        if a.superseded_at is not None:
            base[a.task_name] = max(base.get(a.task_name, 0), a.attempt)
    current = [_as_attempt(a) for a in attempts if a.superseded_at is None]
    return plan(
        spec, instance.inputs, current, now=_now(), suspended=True, attempt_base=base
    ).fan_outs


def _deadline(instance: WorkflowInstance, spec: WorkflowDefinitionSpec) -> dt.datetime | None:
    """When the run times out (its timeoutSeconds from its start), if it has a timeout."""
    if instance.started_at is None or not spec.timeout_seconds:
        return None
    return instance.started_at + dt.timedelta(seconds=spec.timeout_seconds)


def _ended_because(instance: WorkflowInstance) -> str:
    """Why an ended run's unfinished tasks were stopped (their message)."""
    if instance.phase is WorkflowPhase.CANCELLED:
        return "the workflow was cancelled"
    failure = (instance.failure or {}).get("message")
    return str(failure or instance.message or f"the workflow ended {instance.phase.value}")


def _child_outcome(child: WorkflowInstance) -> tuple[TaskState, str, FailureCause | None]:
    """What a finished sub-workflow makes of the attempt that ran it."""
    if child.phase is WorkflowPhase.SUCCEEDED:
        return TaskState.SUCCEEDED, f"workflow {child.name} succeeded", None
    if child.phase is WorkflowPhase.CANCELLED:
        return TaskState.CANCELLED, f"workflow {child.name} was cancelled", None
    why = (child.failure or {}).get("message") or child.message or child.phase.value
    return (
        TaskState.FAILED,
        f"workflow {child.name} {child.phase.value.lower()}: {why}",
        (FailureCause.FAILURE if child.phase is WorkflowPhase.FAILED else FailureCause.ERROR),
    )


#: Per parsed spec (by id, checked against a weak reference), its tasks by name: an
#: advance of a run of thousands of tasks looks up the task of every attempt, and scanning
#: the list each time made that quadratic.
_TASKS_BY_NAME: dict[int, tuple[weakref.ref[WorkflowDefinitionSpec], object, dict[str, Task]]] = {}


def _task(spec: WorkflowDefinitionSpec, name: str) -> Task:
    """The task an attempt's task name is of (a fan-out item ``task[i]`` is of ``task``)."""
    key = id(spec)
    entry = _TASKS_BY_NAME.get(key)
    if entry is None or entry[0]() is not spec or entry[1] is not spec.tasks:
        by_name = {t.name: t for t in spec.all_tasks()}
        entry = (weakref.ref(spec, lambda _: _TASKS_BY_NAME.pop(key, None)), spec.tasks, by_name)
        _TASKS_BY_NAME[key] = entry
    return entry[2][split_item_name(name)[0]]


def _mock_of(instance: WorkflowInstance, task_name: str) -> Mock | None:
    """The mock of this attempt's task (a fan-out item's is its task's), if the run has one."""
    if not instance.mocks:
        return None
    found = instance.mocks.get(split_item_name(task_name)[0])
    return None if found is None else _parsed_mock(json.dumps(found, sort_keys=True))


@functools.lru_cache(maxsize=1024)
def _parsed_mock(document: str) -> Mock:
    return Mock.model_validate(json.loads(document))


def _as_attempt(a: TaskInstance) -> Attempt:
    return Attempt(
        task=a.task_name,
        attempt=a.attempt,
        state=a.state,
        outputs=a.outputs,
        exit_code=a.exit_code,
        message=a.message,
        finished_at=a.finished_at,
        cause=a.failure_cause,
    )


def task_watches(orchestrator: Orchestrator) -> list[Subscription]:
    """What the engine follows besides its own kinds: Plait's Jobs (it writes nothing back
    to them), and their FailedCreate Events, selected by the API server (a trickle, not
    every Event)."""
    return [
        # A Job gone unseen is handed over with its run (its owner) and Plait's label.
        (
            Watched(
                "batch",
                "v1",
                "jobs",
                label_selector=LABEL_INSTANCE_UID,
                kept_labels=frozenset({LABEL_INSTANCE_UID}),
            ),
            orchestrator.job_event,
        ),
        (Watched("", "v1", "events", field_selector=JOB_REFUSAL_EVENTS), orchestrator.job_refused),
    ]


def register_runtime(registry: kopf.OperatorRegistry, orchestrator: Orchestrator) -> None:
    """Wake runs at their deadlines (and time out waits for events) while the operator
    runs; at stop, write the statuses still waiting."""

    async def start_deadlines(**_: Any) -> None:
        orchestrator.start_deadlines()

    async def stop_deadlines(**_: Any) -> None:
        await orchestrator.stop_deadlines()
        await orchestrator.publish_now(grace_seconds=STOP_PUBLISH_SECONDS)

    kopf.on.startup(id="wake-runs-at-deadlines", registry=registry)(start_deadlines)
    kopf.on.cleanup(id="stop-waking-runs", registry=registry)(stop_deadlines)
