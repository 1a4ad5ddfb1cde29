"""Run a WorkflowTest's cases on the real engine, with mocks and a simulated clock.

No cluster and no database: each case is a run of :func:`plait.workflow_orchestrator.
engine.plan` over attempts recorded in memory, as the operator's runtime records them. The
clock jumps from one happening to the next (an attempt ends, a retry falls due, an event
arrives, a wait or the workflow times out), so backoffs and timeouts take no real time.

What the runtime does around ``plan`` is done the same way here: a skip is recorded
Skipped (Failed, cause Invalid, when the task could not start); the workflow's deadline
runs from its first launch; a wait for an event ends Succeeded with the data of the first
event that correlates (:mod:`plait.workflow_orchestrator.subscriptions`), or TimedOut
after its timeout; when the run ends, its running attempts are Cancelled and the tasks
that never started Skipped.

A mocked task's attempts end as its :class:`~plait.resources.test.Mock` says. A task
without a mock cannot run here (there is no container to start): a container task or a
sub-workflow without a mock makes the case an error that names it; a wait-for-event task
without a mock waits for the case's events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plait.errors import PermanentDispatchError, ValidationError
from plait.event_processing.repository import EventInstance
from plait.resources.foreach import split_item_name
from plait.resources.task import TaskDefinitionSpec
from plait.resources.test import CaseEvent, Mock, TestCase
from plait.resources.trigger import EventTriggerSpec
from plait.resources.workflow import Task, WorkflowDefinitionSpec
from plait.task_execution.states import FINAL_STATES, FailureCause, TaskState
from plait.workflow_orchestrator.engine import (
    Attempt,
    Failure,
    Launch,
    Skip,
    TaskDefaults,
    attempt_names,
    parameters_with_defaults,
    plan,
)
from plait.workflow_orchestrator.mocks import TIMEOUT_MESSAGE, MockError, mock_outcome
from plait.workflow_orchestrator.subscriptions import (
    correlates,
    filter_document,
    outputs_of,
    timeout_message,
)
from plait.workflow_orchestrator.triggers import (
    event_variable,
    filter_holds,
    trigger_arguments,
)

__all__ = [
    "EPOCH",
    "TIMEOUT_MESSAGE",
    "CaseError",
    "Record",
    "RunResult",
    "case_arguments",
    "failure_view",
    "simulate",
    "task_views",
]

#: The simulated clock's zero: the moment every case's run is created.
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
#: Most plans one case may take: a bound that only a run that never settles reaches.
MAX_STEPS = 1_000_000


class CaseError(ValidationError):
    """A case cannot run locally (a task without a mock, a timeout that cannot be had)."""


@dataclass
class Record:
    """One attempt as the simulation records it; ``ends`` is when a running attempt will
    end, with ``outcome`` its final fields."""

    task: str
    attempt: int
    state: TaskState
    started: float | None = None
    finished: float | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] | None = None
    exit_code: int | None = None
    message: str | None = None
    cause: FailureCause | None = None
    ends: float | None = None
    outcome: dict[str, Any] | None = None
    wait: Mapping[str, Any] | None = None
    """A waiting attempt's subscription: event_type, document, expires (or None)."""

    def as_attempt(self) -> Attempt:
        """What the engine sees of it (what the runtime's ``_as_attempt`` gives of a row)."""
        return Attempt(
            task=self.task,
            attempt=self.attempt,
            state=self.state,
            outputs=self.outputs,
            exit_code=self.exit_code,
            message=self.message,
            finished_at=None if self.finished is None else _at(self.finished),
            cause=self.cause,
        )


@dataclass
class RunResult:
    """How a case's run ended: its phase (Running when it never ended), outputs, failure,
    every attempt in the order recorded, and its simulated duration in seconds."""

    phase: str
    outputs: Mapping[str, Any] | None
    failure: Failure | None
    records: list[Record]
    duration: float
    params: Mapping[str, Any]
    stuck: str | None = None
    """Why the run never ended (what it waits for), when it did not."""

    def order(self) -> list[str]:
        """Tasks in the order their first attempt started (items as their task)."""
        seen: dict[str, None] = {}
        started = [r for r in self.records if r.started is not None]
        for r in sorted(started, key=lambda r: r.started or 0.0):  # stable: recording order
            seen.setdefault(split_item_name(r.task)[0], None)
        return list(seen)


def _at(seconds: float) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


def _seconds(moment: dt.datetime) -> float:
    return (moment - EPOCH).total_seconds()


class _Run:
    """One case's run in progress."""

    def __init__(
        self,
        spec: WorkflowDefinitionSpec,
        case: TestCase,
        task_definitions: Mapping[str, TaskDefinitionSpec],
        name: str,
        triggers: Mapping[str, EventTriggerSpec],
    ) -> None:
        self.spec = spec
        self.case = case
        self.name = name
        self.tasks = {t.name: t for t in spec.all_tasks()}
        self.defaults: dict[str, TaskDefaults] = {}
        self.timeouts: dict[str, int | None] = {}
        for task in self.tasks.values():
            timeout = task.timeout_seconds
            if task.task_ref is not None:
                found = task_definitions.get(task.task_ref.name)
                if found is None:
                    raise CaseError(
                        f"task {task.name} uses TaskDefinition {task.task_ref.name!r}, which is "
                        "not in the files given (its retries, input defaults and timeout "
                        "change the run): add its file with -f"
                    )
                self.defaults[task.name] = TaskDefaults.of(task.task_ref.name, found)
                timeout = timeout or found.timeout_seconds
            self.timeouts[task.name] = timeout
        self.arguments = case_arguments(case, triggers)
        self.params = parameters_with_defaults(spec, self.arguments)
        self.records: dict[tuple[str, int], Record] = {}
        self.now = 0.0
        self.started: float | None = None
        self.events = sorted(enumerate(case.events), key=lambda e: (e[1].after_seconds, e[0]))

    # -- carrying out a plan ----------------------------------------------------------------
    def skip(self, skip: Skip) -> None:
        self.records[(skip.task, skip.attempt)] = Record(
            skip.task,
            skip.attempt,
            TaskState.FAILED if skip.failed else TaskState.SKIPPED,
            finished=self.now,
            message=skip.reason,
            cause=FailureCause.INVALID if skip.failed else None,
        )

    def launch(self, launch: Launch) -> None:
        if self.started is None:
            self.started = self.now  # the run is Running from its first launch
        task = self.tasks[split_item_name(launch.task)[0]]
        mock = self.case.mocks.get(task.name)
        record = Record(
            launch.task, launch.attempt, TaskState.RUNNING, started=self.now, inputs=launch.inputs
        )
        self.records[(launch.task, launch.attempt)] = record
        if mock is not None:
            self._mocked(record, task, mock)
        elif task.wait_for_event is not None:
            self._wait(record, task, launch)
        else:
            what = "a sub-workflow" if task.workflow_ref is not None else "a container"
            raise CaseError(
                f"task {task.name} has no mock, and a local run cannot start {what}: "
                f"mock it (mocks: {{{task.name}: {{}}}} succeeds with no outputs)"
            )

    def _mocked(self, record: Record, task: Task, mock: Mock) -> None:
        try:
            outcome = mock_outcome(
                record.task, mock, record.attempt, record.inputs, self.timeouts[task.name]
            )
        except MockError as exc:
            raise CaseError(str(exc)) from None
        record.ends = self.now + outcome.after
        record.outcome = {"state": outcome.state, "message": outcome.message}
        if outcome.state is not TaskState.TIMED_OUT:
            record.outcome["exit_code"] = outcome.exit_code
        if outcome.outputs is not None:
            record.outcome["outputs"] = outcome.outputs
        if outcome.cause is not None:
            record.outcome["cause"] = outcome.cause

    def _wait(self, record: Record, task: Task, launch: Launch) -> None:
        wait = task.wait_for_event
        assert wait is not None
        assert launch.wait_bindings is not None
        timeout = wait.timeout_seconds or task.timeout_seconds
        document = filter_document(
            wait.correlation,
            launch.wait_bindings.get("params") or {},
            launch.wait_bindings.get("tasks") or {},
            {"name": self.name, "namespace": "default"},
        )
        record.state = TaskState.WAITING
        record.message = f"waiting for event {wait.event_type}"
        record.wait = {
            "type": wait.event_type,
            "document": document,
            "timeout": timeout,
            "expires": None if timeout is None else self.now + timeout,
        }

    # -- the clock --------------------------------------------------------------------------
    def next_moment(self, retry_at: dt.datetime | None, deadline: float | None) -> float | None:
        moments = [r.ends for r in self.records.values() if r.ends is not None]
        moments += [
            r.wait["expires"]
            for r in self.records.values()
            if r.wait is not None and r.state is TaskState.WAITING and r.wait["expires"] is not None
        ]
        if self.events:
            moments.append(self.events[0][1].after_seconds)
        if retry_at is not None:
            moments.append(_seconds(retry_at))
        if deadline is not None:
            moments.append(deadline)
        future = [m for m in moments if m >= self.now]
        return min(future) if future else None

    def happen(self) -> None:
        """Everything due at ``now``: attempts end, events arrive, waits expire."""
        for r in self.records.values():
            if r.ends is not None and r.ends <= self.now and r.outcome is not None:
                for key, value in r.outcome.items():
                    setattr(r, key, value)
                r.finished, r.ends, r.outcome = r.ends, None, None
        while self.events and self.events[0][1].after_seconds <= self.now:
            index, event = self.events.pop(0)
            self._deliver(index, event)
        for r in self.records.values():
            if r.state is TaskState.WAITING and r.wait is not None:
                expires = r.wait["expires"]
                if expires is not None and expires <= self.now:
                    r.state, r.finished = TaskState.TIMED_OUT, self.now
                    r.message = timeout_message(r.wait["type"], r.wait["timeout"])
                    r.cause = FailureCause.FAILURE

    def _deliver(self, index: int, event: CaseEvent) -> None:
        view = {
            "id": f"{self.case.name}-{index}",
            "source": event.source,
            "type": event.type,
            "subject": event.subject,
            "time": _at(event.after_seconds).isoformat(),
            "data": event.data,
            "extensions": {},
        }
        received = _event(event.type, event.source, event.subject, event.data)
        for r in self.records.values():
            if (
                r.state is TaskState.WAITING
                and r.wait is not None
                and r.wait["type"] == event.type
                and correlates(r.wait["document"], view)
            ):
                r.state, r.finished = TaskState.SUCCEEDED, self.now
                r.outputs = outputs_of(received)
                r.message = f"matched event {view['id']}"

    def end(self, why: str, fan_outs: Mapping[str, int]) -> None:
        """Leave every task final, as the runtime ends a run: running attempts Cancelled,
        tasks never started Skipped."""
        recorded = {task for task, _ in self.records}
        fanned_out = {split_item_name(r)[0] for r in recorded}
        for r in self.records.values():
            if r.state not in FINAL_STATES:
                r.state, r.finished, r.message = TaskState.CANCELLED, self.now, why
                r.ends = r.outcome = None
        for name in attempt_names(self.spec, fan_outs):
            if name not in recorded and name not in fanned_out:
                self.records[(name, 1)] = Record(
                    name, 1, TaskState.SKIPPED, finished=self.now, message=f"not started: {why}"
                )

    def attempts(self) -> list[Attempt]:
        return [r.as_attempt() for r in self.records.values()]


def simulate(
    spec: WorkflowDefinitionSpec,
    case: TestCase,
    task_definitions: Mapping[str, TaskDefinitionSpec] | None = None,
    *,
    name: str = "test",
    triggers: Mapping[str, EventTriggerSpec] | None = None,
) -> RunResult:
    """Run one case to its end (or until nothing more can happen); raises
    :class:`CaseError` when it cannot run here. ``triggers``: the EventTriggers a case's
    ``trigger`` may name."""
    run = _Run(spec, case, task_definitions or {}, name, triggers or {})
    for _ in range(MAX_STEPS):
        deadline = (
            None
            if run.started is None or not spec.timeout_seconds
            else run.started + spec.timeout_seconds
        )
        decision = plan(
            spec,
            run.arguments,
            run.attempts(),
            now=_at(run.now),
            deadline=None if deadline is None else _at(deadline),
            task_defaults=run.defaults,
        )
        if decision.phase is not None:
            why = decision.failure.message if decision.failure else "succeeded"
            sizes = plan(spec, run.arguments, run.attempts(), now=_at(run.now), suspended=True)
            run.end(why, sizes.fan_outs)
            return _result(run, decision.phase.value, decision.outputs, decision.failure)
        for skip in decision.skips:
            run.skip(skip)
        for launch in decision.launches:
            run.launch(launch)
        if decision.skips or decision.launches:
            continue  # plan again at the same moment
        moment = run.next_moment(decision.retry_at, deadline)
        if moment is None:
            return _result(run, "Running", None, None, stuck=_stuck(run.records.values()))
        run.now = moment
        run.happen()
    raise CaseError(f"the run took more than {MAX_STEPS} steps")


def _event(type: str, source: str, subject: str | None, data: Any) -> EventInstance:
    """A CloudEvent as the event API stores it, for the functions that read one."""
    return EventInstance(
        id=uuid.uuid4(),
        namespace="default",
        source=source,
        event_id=str(uuid.uuid4()),
        type=type,
        spec_version="1.0",
        subject=subject,
        time=None,
        data_content_type="application/json",
        data_schema=None,
        data=data,
        data_base64=None,
        extensions={},
        partition_key=None,
        sequence_id=None,
        sequence_position=None,
        received_at=EPOCH,
    )


def case_arguments(case: TestCase, triggers: Mapping[str, EventTriggerSpec]) -> Mapping[str, Any]:
    """The run's arguments: the case's, or those its trigger gives for its event (as the
    trigger's filter and arguments decide when the event API receives the event)."""
    if case.trigger is None:
        return case.arguments
    name = case.trigger.event_trigger
    trigger = triggers.get(name)
    if trigger is None or trigger.event_type is None:
        raise CaseError(f"EventTrigger {name!r} (on events) is not in the files given")
    given = case.trigger.event
    variables = {
        "event": event_variable(_event(trigger.event_type, given.source, given.subject, given.data))
    }
    try:
        if trigger.filter is not None and not filter_holds(name, trigger.filter, variables):
            raise CaseError(
                f"the event does not pass the filter of EventTrigger {name} "
                f"({trigger.filter!r}): it would start no run"
            )
        return trigger_arguments(name, trigger.arguments, variables)
    except PermanentDispatchError as exc:
        raise CaseError(str(exc)) from None


def _stuck(records: Iterable[Record]) -> str:
    waits = [r for r in records if r.state is TaskState.WAITING and r.wait is not None]
    if waits:
        shown = ", ".join(
            f"{r.task} waits for an event of type {r.wait['type']}" for r in waits if r.wait
        )
        return f"the run never ends: {shown}, and no event of the case matches"
    return "the run never ends: nothing more can happen"


def _result(
    run: _Run,
    phase: str,
    outputs: Mapping[str, Any] | None,
    failure: Failure | None,
    *,
    stuck: str | None = None,
) -> RunResult:
    return RunResult(
        phase=phase,
        outputs=outputs,
        failure=failure,
        records=list(run.records.values()),
        duration=run.now,
        params=run.params,
        stuck=stuck,
    )


def task_views(
    spec: WorkflowDefinitionSpec, records: Sequence[Record]
) -> dict[str, dict[str, Any]]:
    """Each task of the run as expectations and assertions see it: ``phase`` (the state
    of its last attempt), ``attempts``, ``outputs``, ``message``, ``exitCode``. A fan-out
    counts its items' attempts; it is Succeeded when every item's last attempt succeeded
    or was skipped, else it takes the state and message of its first other item; its
    outputs are its items' outputs in item order."""
    latest: dict[str, Record] = {}
    counts: dict[str, int] = {}
    for r in records:
        counts[r.task] = counts.get(r.task, 0) + 1
        if r.task not in latest or r.attempt > latest[r.task].attempt:
            latest[r.task] = r
    views: dict[str, dict[str, Any]] = {}
    for task in spec.all_tasks():
        own = latest.get(task.name)
        items = sorted(
            (i, r) for name, r in latest.items()
            if (parts := split_item_name(name))[0] == task.name and (i := parts[1]) is not None
        )  # fmt: skip
        if own is not None or not items:
            views[task.name] = _view(own, counts.get(task.name, 0))
            continue
        unsuccessful = [
            r for _, r in items if r.state not in (TaskState.SUCCEEDED, TaskState.SKIPPED)
        ]
        lead = unsuccessful[0] if unsuccessful else None
        views[task.name] = {
            "phase": lead.state.value if lead else TaskState.SUCCEEDED.value,
            "attempts": sum(counts.get(r.task, 0) for _, r in items),
            "outputs": [dict(r.outputs) if r.outputs is not None else None for _, r in items],
            "message": lead.message if lead else None,
            "exitCode": lead.exit_code if lead else None,
        }
    return views


def _view(record: Record | None, attempts: int) -> dict[str, Any]:
    if record is None:
        return {"phase": None, "attempts": 0, "outputs": {}, "message": None, "exitCode": None}
    return {
        "phase": record.state.value,
        "attempts": attempts,
        "outputs": dict(record.outputs or {}),
        "message": record.message,
        "exitCode": record.exit_code,
    }


def failure_view(failure: Failure | None) -> dict[str, Any] | None:
    """The failure as assertions see it (the WorkflowInstance status's ``failure``)."""
    return None if failure is None else failure.as_status()
