"""Locks across runs against the real schema, connected as the orchestrator's own role:
grant order, limits, release, and two connections racing for one mutex."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from plait.workflow_orchestrator import locks
from plait.workflow_orchestrator import repository as repo
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    conn = await connect_as("workflow_orchestrator")
    await repo.upsert_workflow_definition(conn, "ci", "deploy", {"tasks": []})
    return conn


async def run(conn: psycopg.AsyncConnection, name: str) -> uuid.UUID:
    instance, _ = await repo.create_workflow_instance(
        conn, id=uuid.uuid4(), namespace="ci", name=name, workflow_name="deploy", workflow_version=1
    )
    return instance.id


async def ask(
    conn: psycopg.AsyncConnection, uid: uuid.UUID, name: str, *, limit: int = 1, priority: int = 0
) -> tuple[locks.LockState, list[locks.Waiter]]:
    return await locks.request(
        conn,
        namespace="ci",
        key="deploy-prod",
        limit=limit,
        workflow_instance_id=uid,
        instance_name=name,
        priority=priority,
    )


async def test_a_mutex_is_granted_in_priority_then_arrival_order(
    conn: psycopg.AsyncConnection,
) -> None:
    first, second, urgent = [await run(conn, n) for n in ("first", "second", "urgent")]
    held, woken = await ask(conn, first, "first")
    assert (held.granted, held.ahead, woken) == (True, 0, [])
    waits, _ = await ask(conn, second, "second")
    assert (waits.granted, waits.ahead, waits.waiting_text()) == (
        False,
        0,
        "lock deploy-prod (0 ahead)",
    )
    jumps, _ = await ask(conn, urgent, "urgent", priority=10)
    assert (jumps.granted, jumps.ahead) == (False, 0)
    behind, _ = await ask(conn, second, "second")  # asking again changes nothing
    assert (behind.granted, behind.ahead) == (False, 1)
    woken = await locks.release(conn, first)
    assert woken == [locks.Waiter(urgent, "ci", "urgent")]
    assert await locks.release(conn, urgent) == [locks.Waiter(second, "ci", "second")]
    assert (await ask(conn, second, "second"))[0].granted


async def test_a_semaphore_has_room_for_its_limit(conn: psycopg.AsyncConnection) -> None:
    runs = [await run(conn, f"r{i}") for i in range(3)]
    states = [(await ask(conn, uid, f"r{i}", limit=2))[0] for i, uid in enumerate(runs)]
    assert [s.granted for s in states] == [True, True, False]
    assert await locks.release(conn, runs[1]) == [locks.Waiter(runs[2], "ci", "r2")]


async def test_a_task_lets_go_of_its_own_lock_only(conn: psycopg.AsyncConnection) -> None:
    holder, other = await run(conn, "holder"), await run(conn, "other")
    for task in ("build", "push"):
        await locks.request(
            conn,
            namespace="ci",
            key=f"lock-{task}",
            limit=1,
            workflow_instance_id=holder,
            instance_name="holder",
            task=task,
        )
    state, _ = await locks.request(
        conn, namespace="ci", key="lock-push", limit=1, workflow_instance_id=other,
        instance_name="other", task="push",
    )  # fmt: skip
    assert not state.granted
    assert await locks.release(conn, holder, ["build"]) == []
    assert await locks.release(conn, holder, ["push"]) == [locks.Waiter(other, "ci", "other")]


async def test_two_replicas_racing_never_grant_a_mutex_twice(
    connect_as: ConnectAs, conn: psycopg.AsyncConnection
) -> None:
    runs = [await run(conn, f"race-{i}") for i in range(8)]
    conns = [await connect_as("workflow_orchestrator") for _ in range(2)]

    async def ask_all(c: psycopg.AsyncConnection, mine: list[uuid.UUID]) -> int:
        granted = 0
        for uid in mine:
            state, _ = await ask(c, uid, "race")
            granted += state.granted
        return granted

    counts = await asyncio.gather(ask_all(conns[0], runs[::2]), ask_all(conns[1], runs[1::2]))
    assert sum(counts) == 1
    held = await (
        await conn.execute(
            "SELECT count(*) FROM workflow_orchestrator_service.lock_requests "
            "WHERE granted_at IS NOT NULL"
        )
    ).fetchone()
    assert held == (1,)
