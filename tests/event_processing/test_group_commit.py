"""Group commit against the real schema: concurrent requests share transactions, each is
answered once its own events are committed, and one request's fault fails no other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from plait.event_processing import repository as repo
from plait.event_processing.group_commit import Definitions, GroupCommit
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database


class Counted:
    """Pooled connections of the event_processing role, counting the transactions."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.transactions = 0

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        self.transactions += 1
        async with self.database.connection("event_processing") as conn:
            yield conn


@pytest.fixture
async def counted(component_dsns: dict[str, str]) -> AsyncIterator[Counted]:
    settings = Settings(database_url=component_dsns["event_processing"], database_pool_min=1)
    database = await Database.open(settings, [component_by_name("event_processing")])
    try:
        yield Counted(database)
    finally:
        await database.close()


def event(id: str, **kw: Any) -> repo.NewEvent:
    fields: dict[str, Any] = {"namespace": "ci", "source": "/s", "id": id, "type": "push"}
    fields.update(kw)
    return repo.NewEvent(**fields)


async def committed(dsn: str, id: str) -> bool:
    """Whether another connection sees event ``id`` (it is, only once committed)."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await repo.get_event(conn, "ci", "/s", id) is not None


async def test_concurrent_requests_share_a_transaction_and_are_answered_once_committed(
    counted: Counted, migrated_database: str
) -> None:
    group = GroupCommit(counted.connection, flushers=2)

    async def send(n: int) -> tuple[int | None, bool, bool]:
        [(stored, created)] = await group.store([event(f"e{n}", partition_key="k")])
        return stored.sequence_position, created, await committed(migrated_database, f"e{n}")

    answers = await asyncio.gather(*(send(n) for n in range(16)))
    assert all(created and visible for _, created, visible in answers)
    assert sorted(position for position, _, _ in answers) == list(range(1, 17))
    # 16 requests arrived together: the first flusher took them all.
    assert counted.transactions == 1
    # Later ones gather while a transaction is under way.
    answers = await asyncio.gather(*(send(n) for n in range(16, 48)))
    assert sorted(position for position, _, _ in answers) == list(range(17, 49))
    assert counted.transactions < 1 + 32


async def test_duplicates_among_grouped_requests_are_stored_once(counted: Counted) -> None:
    group = GroupCommit(counted.connection)
    answers = await asyncio.gather(
        group.store([event("same", partition_key="k")]),
        group.store([event("same", partition_key="k"), event("other", partition_key="k")]),
        group.store([event("same", partition_key="k")]),
    )
    assert counted.transactions == 1
    flags = [[(e.event_id, e.sequence_position, created) for e, created in a] for a in answers]
    assert flags == [
        [("same", 1, True)],
        [("same", 1, False), ("other", 2, True)],
        [("same", 1, False)],
    ]


async def test_a_refused_or_failing_request_fails_alone(
    counted: Counted, migrated_database: str
) -> None:
    group = GroupCommit(counted.connection)

    def refuse(definitions: Definitions) -> None:
        assert ("ci", "push") in definitions
        raise ValueError("refused by its check")

    answers = await asyncio.gather(
        group.store([event("good-1")]),
        group.store([event("checked-out", partition_key="k")], refuse),
        # Passes the check, but PostgreSQL refuses the empty source (a CHECK constraint):
        # the group is rolled back and committed again request by request.
        group.store([event("good-2", partition_key="k"), event("bad", source="")]),
        group.store([event("good-3", partition_key="k")], lambda _: None),
        return_exceptions=True,
    )
    assert isinstance(answers[1], ValueError)
    assert isinstance(answers[2], psycopg.errors.CheckViolation)
    good = [a for i, a in enumerate(answers) if i in (0, 3)]
    assert [[(e.event_id, e.sequence_position, c) for e, c in a] for a in good] == [  # type: ignore[union-attr]
        [("good-1", None, True)],
        [("good-3", 1, True)],  # the positions rolled back with the failed group
    ]
    assert await committed(migrated_database, "good-1")
    assert not await committed(migrated_database, "good-2")  # its request was all-or-nothing
    assert not await committed(migrated_database, "checked-out")


async def test_an_unreachable_database_fails_every_request_of_the_group(
    counted: Counted,
) -> None:
    @contextlib.asynccontextmanager
    async def broken() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        raise psycopg.OperationalError("connection refused")
        yield  # pragma: no cover

    group = GroupCommit(broken)
    answers = await asyncio.gather(
        group.store([event("a")]), group.store([event("b")]), return_exceptions=True
    )
    assert [type(a) for a in answers] == [psycopg.OperationalError] * 2


async def test_dispatchers_are_woken_when_a_group_enqueued_something(
    counted: Counted, migrated_database: str
) -> None:
    async with await psycopg.AsyncConnection.connect(migrated_database, autocommit=True) as conn:
        await conn.execute(f"LISTEN {repo.QUEUE_CHANNEL}")
        group = GroupCommit(counted.connection)
        await group.store([event("new")])
        notifies = conn.notifies(timeout=5, stop_after=1)
        assert [n.channel async for n in notifies] == [repo.QUEUE_CHANNEL]
        await group.store([event("new")])  # a duplicate only: nothing enqueued, no wake-up
        assert [n async for n in conn.notifies(timeout=0.5)] == []
