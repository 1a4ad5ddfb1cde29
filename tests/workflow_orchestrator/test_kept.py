"""The records a replica keeps between advances: kept current, and bounded in memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from plait.task_execution.repository import TaskInstance
from plait.task_execution.states import TaskState
from plait.workflow_orchestrator.kept import KeptRecords, Records
from plait.workflow_orchestrator.repository import WorkflowInstance
from plait.workflow_orchestrator.states import WorkflowPhase

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def run() -> WorkflowInstance:
    return WorkflowInstance(
        id=uuid.uuid4(), namespace="ci", name="r", workflow_name="w", workflow_version=1,
        phase=WorkflowPhase.RUNNING, inputs={}, outputs=None, message=None, failure=None,
        retries=0, trigger_id=None, event_id=None, created_at=NOW, updated_at=NOW,
        started_at=NOW, finished_at=None,
    )  # fmt: skip


def attempt(
    of: WorkflowInstance, name: str, state: TaskState, id: uuid.UUID | None = None
) -> TaskInstance:
    return TaskInstance(
        id=id or uuid.uuid4(), namespace="ci", workflow_instance_id=of.id, task_name=name,
        attempt=1, job_name=f"job-{name}", definition_name=None, definition_version=None,
        state=state, inputs={}, outputs=None, exit_code=None, message=None, trace_id=None,
        span_id=None, created_at=NOW, updated_at=NOW, started_at=None, finished_at=None,
        superseded_at=None,
    )  # fmt: skip


def records(tasks: int) -> Records:
    instance = run()
    return Records.of(
        instance, [attempt(instance, f"t{i}", TaskState.PENDING) for i in range(tasks)], {}, 0
    )


def test_records_past_the_budget_drop_the_runs_kept_longest_ago() -> None:
    kept = KeptRecords(budget=10)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    kept.keep(first, records(3))  # 4 with the run's row
    kept.keep(second, records(3))
    assert kept.held == 8
    kept.keep(first, records(3))  # kept again: now the newest
    kept.keep(third, records(2))  # 11 > 10: the oldest, second, goes
    assert (first in kept, second in kept, third in kept) == (True, False, True)
    assert kept.held == 7
    kept.keep(uuid.uuid4(), records(10))  # larger than the whole budget: not kept
    assert (kept.held, len(kept)) == (7, 2)
    assert kept.pop(first) is not None
    assert kept.held == 3


def test_a_recorded_attempt_is_taken_in_and_one_not_kept_drops_the_run() -> None:
    kept = KeptRecords()
    uid = uuid.uuid4()
    run_records = records(2)
    known = next(iter(run_records.attempts.values()))
    kept.keep(uid, run_records)
    kept.take(uid, attempt(run_records.instance, known.task_name, TaskState.SUCCEEDED, known.id))
    kept.take(uid, attempt(run_records.instance, known.task_name, TaskState.RUNNING, known.id))
    held = kept.get(uid)
    assert held is not None
    assert held.attempts[known.id].state is TaskState.SUCCEEDED, (
        "an event recorded later never takes an attempt back"
    )
    kept.take(uid, attempt(run_records.instance, "new", TaskState.RUNNING))
    assert uid not in kept
    assert kept.held == 0
