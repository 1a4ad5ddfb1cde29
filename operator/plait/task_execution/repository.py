"""SQL of task execution: versioned task definitions and idempotent task attempts.

A task attempt is inserted before its Job is created; the unique keys (instance, task,
attempt) and job_name make a replayed insert a no-op, which is what lets several operator
replicas race on the same work without running an attempt twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.kernel import versions
from plait.kernel.database import Page, fetch_page
from plait.task_execution.states import FINAL_STATES, STATES, FailureCause, TaskState

__all__ = [
    "TaskDefinition",
    "TaskInstance",
    "attempt_by_job",
    "cached_attempt",
    "current_attempts_of_tasks",
    "current_task_states",
    "delete_task_definition",
    "get_task_attempt",
    "insert_task_attempt",
    "latest_task_definition",
    "latest_task_definitions",
    "list_task_attempts",
    "purge_task_attempts",
    "record_cache_hit",
    "set_task_state",
    "supersede_unsuccessful",
    "tasks_of_instance",
    "upsert_task_definition",
]

SCHEMA = "task_execution_service"
_STARTED = (TaskState.RUNNING, TaskState.WAITING, TaskState.SUCCEEDED)


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    id: uuid.UUID
    namespace: str
    name: str
    version: int
    spec: dict[str, Any]
    spec_hash: str
    k8s_uid: uuid.UUID | None
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskInstance:
    id: uuid.UUID
    namespace: str
    workflow_instance_id: uuid.UUID
    task_name: str
    attempt: int
    job_name: str
    definition_name: str | None
    definition_version: int | None
    state: TaskState
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    exit_code: int | None
    message: str | None
    trace_id: str | None
    span_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    superseded_at: datetime | None
    failure_cause: FailureCause | None = None
    cache_key: str | None = None
    cached_from: uuid.UUID | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TaskState(self.state))
        if self.failure_cause is not None:
            object.__setattr__(self, "failure_cause", FailureCause(self.failure_cause))


async def upsert_task_definition(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    k8s_uid: uuid.UUID | None = None,
) -> tuple[TaskDefinition, bool]:
    return await versions.upsert_version(
        conn,
        TaskDefinition,
        SCHEMA,
        "task_definitions",
        {"namespace": namespace, "name": name},
        spec,
        {"k8s_uid": k8s_uid},
    )


async def latest_task_definition(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> TaskDefinition | None:
    return await versions.latest_version(
        conn, TaskDefinition, SCHEMA, "task_definitions", {"namespace": namespace, "name": name}
    )


async def latest_task_definitions(
    conn: AsyncConnection[Any], namespace: str, names: Sequence[str]
) -> dict[str, TaskDefinition]:
    """The newest live version of each named TaskDefinition that has one, in one query."""
    async with conn.cursor(row_factory=class_row(TaskDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (name) * FROM task_execution_service.task_definitions "
            "WHERE namespace = %s AND name = ANY(%s) AND deleted_at IS NULL "
            "ORDER BY name, version DESC",
            (namespace, list(names)),
        )
        return {row.name: row for row in await cur.fetchall()}


async def cached_attempt(
    conn: AsyncConnection[Any], namespace: str, cache_key: str, since: datetime
) -> TaskInstance | None:
    """The newest attempt with this key that ran and succeeded after ``since``: the
    result a cache hit reuses (a hit's own row does not renew the time to live)."""
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_instances "
            "WHERE namespace = %s AND cache_key = %s AND state = 'Succeeded' "
            "AND cached_from IS NULL AND finished_at > %s ORDER BY finished_at DESC LIMIT 1",
            (namespace, cache_key, since),
        )
        return await cur.fetchone()


async def record_cache_hit(
    conn: AsyncConnection[Any], job_name: str, source: TaskInstance
) -> TaskInstance | None:
    """Move a Pending attempt to Succeeded with ``source``'s outputs, naming it; None when
    the attempt is no longer Pending (a lost race)."""
    message = f"cached: the outputs of attempt {source.attempt} of {source.task_name} ({source.id})"
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "UPDATE task_execution_service.task_instances SET state = 'Succeeded', "
            "outputs = %s, message = %s, cached_from = %s, exit_code = NULL, "
            "started_at = now(), finished_at = now(), updated_at = now() "
            "WHERE job_name = %s AND state = 'Pending' RETURNING *",
            (Jsonb(dict(source.outputs or {})), message, source.id, job_name),
        )
        return await cur.fetchone()


async def insert_task_attempt(
    conn: AsyncConnection[Any],
    *,
    namespace: str,
    workflow_instance_id: uuid.UUID,
    task_name: str,
    attempt: int,
    job_name: str,
    inputs: Mapping[str, Any] | None = None,
    definition: tuple[str, int] | None = None,
    trace_id: str | None = None,
    span_id: str | None = None,
    state: TaskState = TaskState.PENDING,
    message: str | None = None,
    cache_key: str | None = None,
) -> tuple[TaskInstance, bool]:
    """Record attempt ``attempt`` of a task unless it exists; (attempt, created).

    An attempt starts Pending, or Skipped (with a ``message``) when its run ended before
    it could start: a row that exists already is left as it is, whatever its state.
    """
    if state not in STATES.initial:
        raise ValueError(f"a task attempt cannot start {state.value}")
    definition_name, definition_version = definition or (None, None)
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "INSERT INTO task_execution_service.task_instances (namespace, workflow_instance_id, "
            "task_name, attempt, job_name, definition_name, definition_version, inputs, "
            "trace_id, span_id, state, message, cache_key, finished_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
            " CASE WHEN %s THEN now() END) "
            "ON CONFLICT (workflow_instance_id, task_name, attempt) DO NOTHING RETURNING *",
            (
                namespace,
                workflow_instance_id,
                task_name,
                attempt,
                job_name,
                definition_name,
                definition_version,
                Jsonb(dict(inputs or {})),
                trace_id,
                span_id,
                state.value,
                message,
                cache_key,
                state.final,
            ),
        )
        created = await cur.fetchone()
    if created is not None:
        return created, True
    existing = await get_task_attempt(conn, workflow_instance_id, task_name, attempt)
    assert existing is not None
    return existing, False


async def get_task_attempt(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID, task_name: str, attempt: int
) -> TaskInstance | None:
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_instances "
            "WHERE workflow_instance_id = %s AND task_name = %s AND attempt = %s",
            (workflow_instance_id, task_name, attempt),
        )
        return await cur.fetchone()


async def tasks_of_instance(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID
) -> list[TaskInstance]:
    """Every attempt of every task of one workflow instance, by task then attempt."""
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_instances WHERE workflow_instance_id = %s "
            "ORDER BY task_name, attempt",
            (workflow_instance_id,),
        )
        return await cur.fetchall()


async def current_task_states(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID
) -> list[tuple[str, int, TaskState]]:
    """(task name, attempt, state) of every current (not superseded) attempt of a run:
    what a run's graph needs, without decoding every attempt's inputs and outputs."""
    cur = await conn.execute(
        "SELECT task_name, attempt, state FROM task_execution_service.task_instances "
        "WHERE workflow_instance_id = %s AND superseded_at IS NULL",
        (workflow_instance_id,),
    )
    return [(name, attempt, TaskState(state)) for name, attempt, state in await cur.fetchall()]


async def current_attempts_of_tasks(
    conn: AsyncConnection[Any],
    workflow_instance_id: uuid.UUID,
    tasks: Sequence[str],
    fan_outs: Sequence[str] = (),
) -> list[TaskInstance]:
    """The current attempts, in full, of the named tasks and of the items
    (``name[index]``) of the named fan-outs, by task then attempt."""
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_instances "
            "WHERE workflow_instance_id = %(run)s AND superseded_at IS NULL "
            "AND (task_name = ANY(%(tasks)s) OR (right(task_name, 1) = ']' "
            "AND split_part(task_name, '[', 1) = ANY(%(fan_outs)s))) "
            "ORDER BY task_name, attempt",
            {"run": workflow_instance_id, "tasks": list(tasks), "fan_outs": list(fan_outs)},
        )
        return await cur.fetchall()


async def list_task_attempts(
    conn: AsyncConnection[Any], namespace: str, *, limit: int = 50, cursor: str | None = None
) -> Page[TaskInstance]:
    return await fetch_page(
        conn,
        TaskInstance,
        sql.SQL("task_execution_service.task_instances"),
        {"namespace": namespace},
        limit=limit,
        cursor=cursor,
    )


async def set_task_state(
    conn: AsyncConnection[Any],
    job_name: str,
    state: TaskState,
    *,
    exit_code: int | None = None,
    outputs: Mapping[str, Any] | None = None,
    message: str | None = None,
    cause: FailureCause | None = None,
) -> TaskInstance | None:
    """Move an attempt (found by its Job) to ``state``; None when it is missing or its
    state may not move to ``state`` (:data:`STATES`: a final state never moves, and
    moving to the state it is in is no change): a lost race, not an error. ``cause``
    says why a Failed or TimedOut attempt did not succeed."""
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "UPDATE task_execution_service.task_instances SET state = %(state)s, "
            "updated_at = now(), exit_code = coalesce(%(exit_code)s, exit_code), "
            "outputs = coalesce(%(outputs)s, outputs), message = coalesce(%(message)s, message), "
            "failure_cause = %(cause)s, "
            "started_at = CASE WHEN %(started)s THEN coalesce(started_at, now()) "
            "ELSE started_at END, "
            "finished_at = CASE WHEN %(final)s THEN now() END "
            "WHERE job_name = %(job_name)s AND state = ANY(%(sources)s) RETURNING *",
            {
                "state": state.value,
                "exit_code": exit_code,
                "outputs": Jsonb(dict(outputs)) if outputs is not None else None,
                "message": message,
                "cause": cause.value if cause is not None else None,
                "started": state in _STARTED,
                "final": state in FINAL_STATES,
                "job_name": job_name,
                "sources": STATES.sources_sql(state),
            },
        )
        return await cur.fetchone()


async def purge_task_attempts(
    conn: AsyncConnection[Any], older_than: datetime, *, batch_size: int = 1000
) -> int:
    """Retention: delete finished attempts created before ``older_than``, in small batches."""
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "DELETE FROM task_execution_service.task_instances WHERE id IN ("
                " SELECT id FROM task_execution_service.task_instances"
                " WHERE created_at < %s AND finished_at IS NOT NULL LIMIT %s)",
                (older_than, batch_size),
            )
        total += cur.rowcount
        if cur.rowcount < batch_size:
            return total


async def delete_task_definition(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    """Soft-delete every version (instances that ran one keep pointing at it)."""
    return await versions.mark_deleted(
        conn, SCHEMA, "task_definitions", {"namespace": namespace, "name": name}
    )


async def attempt_by_job(conn: AsyncConnection[Any], job_name: str) -> TaskInstance | None:
    """The attempt a Job runs (``job_name`` is unique)."""
    async with conn.cursor(row_factory=class_row(TaskInstance)) as cur:
        await cur.execute(
            "SELECT * FROM task_execution_service.task_instances WHERE job_name = %s",
            (job_name,),
        )
        return await cur.fetchone()


async def supersede_unsuccessful(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID
) -> int:
    """Mark every finished, unsuccessful attempt of a run superseded (for a retry of the
    run); idempotent. Returns how many rows were marked."""
    cur = await conn.execute(
        "UPDATE task_execution_service.task_instances SET superseded_at = now() "
        "WHERE workflow_instance_id = %s AND superseded_at IS NULL "
        "AND state IN ('Failed', 'TimedOut', 'Cancelled', 'Skipped')",
        (workflow_instance_id,),
    )
    return cur.rowcount
