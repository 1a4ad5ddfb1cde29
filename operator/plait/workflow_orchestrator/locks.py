"""Locks across runs (``spec.synchronization``), held in PostgreSQL.

A run (or a task of it) asks for a lock by name; requests are granted in queue order,
higher priority first, then first come, while fewer than the lock's limit hold it. Each
grant happens under a transaction-level advisory lock on the lock's name, so operator
replicas never grant past the limit. A holder lets go by deleting its request, which
grants the next waiters; their runs are returned, to be woken.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

__all__ = ["RUN", "LockState", "Waiter", "release", "request"]

RUN = ""  # the task name of a request the whole run makes


@dataclass(frozen=True)
class LockState:
    """Where one request stands: granted, or how many are ahead of it in the queue."""

    key: str
    granted: bool
    ahead: int

    def waiting_text(self) -> str:
        return f"lock {self.key} ({self.ahead} ahead)"


@dataclass(frozen=True)
class Waiter:
    """A run that was just granted a lock it waited for: to be advanced."""

    workflow_instance_id: uuid.UUID
    namespace: str
    instance_name: str


async def _serialise(conn: AsyncConnection[Any], namespace: str, key: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"plait-lock/{namespace}/{key}",)
    )


async def _grant(conn: AsyncConnection[Any], namespace: str, key: str) -> list[Waiter]:
    """Grant waiting requests in queue order while the lock has room (the head of the
    queue blocks those behind it); the runs granted now."""
    rows = await (
        await conn.execute(
            "SELECT id, lock_limit, granted_at IS NOT NULL, workflow_instance_id, instance_name "
            "FROM workflow_orchestrator_service.lock_requests "
            "WHERE namespace = %s AND lock_key = %s "
            "ORDER BY priority DESC, requested_at, id",
            (namespace, key),
        )
    ).fetchall()
    held = sum(1 for r in rows if r[2])
    granted: list[Waiter] = []
    for request_id, limit, is_held, run, name in rows:
        if is_held:
            continue
        if held >= limit:
            break
        await conn.execute(
            "UPDATE workflow_orchestrator_service.lock_requests "
            "SET granted_at = clock_timestamp() WHERE id = %s",
            (request_id,),
        )
        held += 1
        granted.append(Waiter(run, namespace, name))
    return granted


async def request(
    conn: AsyncConnection[Any],
    *,
    namespace: str,
    key: str,
    limit: int,
    workflow_instance_id: uuid.UUID,
    instance_name: str,
    task: str = RUN,
    priority: int = 0,
) -> tuple[LockState, list[Waiter]]:
    """Ask for (or look again at) a lock; idempotent. Returns where this request stands,
    and the other runs granted meanwhile (to wake)."""
    async with conn.transaction():
        await _serialise(conn, namespace, key)
        await conn.execute(
            "INSERT INTO workflow_orchestrator_service.lock_requests (namespace, lock_key, "
            "lock_limit, workflow_instance_id, instance_name, task_name, priority) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (namespace, key, limit, workflow_instance_id, instance_name, task, priority),
        )
        granted = await _grant(conn, namespace, key)
        row = await (
            await conn.execute(
                "SELECT r.granted_at IS NOT NULL, (SELECT count(*) FROM "
                "workflow_orchestrator_service.lock_requests o WHERE o.namespace = r.namespace "
                "AND o.lock_key = r.lock_key AND o.granted_at IS NULL AND "
                "(o.priority, -extract(epoch FROM o.requested_at)) > "
                "(r.priority, -extract(epoch FROM r.requested_at))) "
                "FROM workflow_orchestrator_service.lock_requests r "
                "WHERE r.workflow_instance_id = %s AND r.task_name = %s "
                "AND r.namespace = %s AND r.lock_key = %s",
                (workflow_instance_id, task, namespace, key),
            )
        ).fetchone()
    assert row is not None  # inserted above, or there already
    others = [w for w in granted if w.workflow_instance_id != workflow_instance_id]
    return LockState(key, bool(row[0]), int(row[1])), others


async def release(
    conn: AsyncConnection[Any],
    workflow_instance_id: uuid.UUID,
    tasks: Sequence[str] | None = None,
) -> list[Waiter]:
    """Let go of the locks a run holds or waits for (only those of ``tasks``, when given:
    ``""`` is the run's own); returns the runs granted a lock in their place."""
    where = "workflow_instance_id = %s"
    params: list[Any] = [workflow_instance_id]
    if tasks is not None:
        where += " AND task_name = ANY(%s)"
        params.append(list(tasks))
    async with conn.transaction():
        keys = await (
            await conn.execute(
                "SELECT DISTINCT namespace, lock_key FROM "
                f"workflow_orchestrator_service.lock_requests WHERE {where} "
                "ORDER BY namespace, lock_key",
                params,
            )
        ).fetchall()
        for namespace, key in keys:  # in one order everywhere: no deadlock between two
            await _serialise(conn, namespace, key)
        await conn.execute(
            f"DELETE FROM workflow_orchestrator_service.lock_requests WHERE {where}", params
        )
        woken: list[Waiter] = []
        for namespace, key in keys:
            woken += await _grant(conn, namespace, key)
    return woken
