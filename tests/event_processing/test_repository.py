"""Event processing repository against the real schema, connected as its own role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from plait.event_processing import repository as repo
from plait.event_processing.states import DeadLetterStatus, QueueState
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("event_processing")


def event(id: str, **kw: object) -> repo.NewEvent:
    fields: dict = {
        "namespace": "ci",
        "source": "/github/acme",
        "id": id,
        "type": "push",
        "data": {"ref": "main"},
    }
    fields.update(kw)
    return repo.NewEvent(**fields)


async def test_a_redelivered_event_is_stored_and_enqueued_once(
    conn: psycopg.AsyncConnection,
) -> None:
    first, created = await repo.insert_event(conn, event("e1"))
    assert created
    assert first.data == {"ref": "main"}
    again, created = await repo.insert_event(conn, event("e1", data={"ref": "other"}))
    assert (again, created) == (first, False)
    queued = await (
        await conn.execute("SELECT count(*) FROM event_processing_service.event_queue_state")
    ).fetchone()
    assert queued == (1,)


async def test_duplicate_event_is_rejected_by_the_database(conn: psycopg.AsyncConnection) -> None:
    sql = (
        "INSERT INTO event_processing_service.event_instances (namespace, source, event_id, type)"
        " VALUES ('ci', '/s', 'same', 't')"
    )
    await conn.execute(sql)
    with pytest.raises(psycopg.errors.UniqueViolation, match="event_instances_one_per_source_id"):
        await conn.execute(sql)


async def test_keyed_events_get_gapless_positions_and_duplicates_take_none(
    conn: psycopg.AsyncConnection,
) -> None:
    a, _ = await repo.insert_event(conn, event("a", partition_key="order-1"))
    await repo.insert_event(conn, event("a", partition_key="order-1"))
    b, _ = await repo.insert_event(conn, event("b", partition_key="order-1"))
    other, _ = await repo.insert_event(conn, event("c", partition_key="order-2"))
    plain, _ = await repo.insert_event(conn, event("d"))
    assert (a.sequence_position, b.sequence_position) == (1, 2)
    assert a.sequence_id == b.sequence_id != other.sequence_id
    assert other.sequence_position == 1
    assert (plain.sequence_id, plain.sequence_position) == (None, None)


async def test_lease_complete_and_no_double_lease(conn: psycopg.AsyncConnection) -> None:
    stored, _ = await repo.insert_event(conn, event("e1"))
    leased = await repo.lease(conn, "worker-a")
    assert [(i.event_instance_id, i.state, i.attempts) for i in leased] == [
        (stored.id, QueueState.LEASED, 1)
    ]
    assert await repo.lease(conn, "worker-b") == []
    assert not await repo.complete(conn, stored.id, "worker-b")
    assert await repo.complete(conn, stored.id, "worker-a")
    assert await repo.lease(conn, "worker-a") == []


async def test_expired_lease_is_taken_over(conn: psycopg.AsyncConnection) -> None:
    stored, _ = await repo.insert_event(conn, event("e1"))
    await repo.lease(conn, "crashed", lease_for=timedelta(0))
    taken = await repo.lease(conn, "worker-b")
    assert [(i.event_instance_id, i.leased_by, i.attempts) for i in taken] == [
        (stored.id, "worker-b", 2)
    ]


async def test_failures_retry_then_dead_letter_once(conn: psycopg.AsyncConnection) -> None:
    stored, _ = await repo.insert_event(conn, event("e1", subject="s"), max_attempts=2)
    await repo.lease(conn, "w")
    retry = await repo.fail(conn, stored.id, "w", "boom", retry_in=timedelta(0))
    assert retry is not None
    assert retry.state is QueueState.PENDING
    await repo.lease(conn, "w")
    dead = await repo.fail(conn, stored.id, "w", "boom again")
    assert dead is not None
    assert dead.state is QueueState.DEAD_LETTERED
    assert await repo.lease(conn, "w") == []
    letters = await repo.list_dead_letters(conn, "ci")
    [letter] = letters.items
    assert letter.status is DeadLetterStatus.OPEN
    assert letter.reason == "boom again"
    assert letter.payload["id"] == "e1"
    assert letter.payload["data"] == {"ref": "main"}
    assert letter.attempts == 2


async def test_unknown_queue_state_is_rejected(conn: psycopg.AsyncConnection) -> None:
    stored, _ = await repo.insert_event(conn, event("e1"))
    with pytest.raises(psycopg.errors.CheckViolation, match="state_known"):
        await conn.execute(
            "UPDATE event_processing_service.event_queue_state SET state = 'Lost' "
            "WHERE event_instance_id = %s",
            (stored.id,),
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="lease_iff_leased"):
        await conn.execute(
            "UPDATE event_processing_service.event_queue_state SET state = 'Leased' "
            "WHERE event_instance_id = %s",
            (stored.id,),
        )


async def test_list_events_pages_newest_first(conn: psycopg.AsyncConnection) -> None:
    for i in range(5):
        await repo.insert_event(conn, event(f"e{i}"))
    first = await repo.list_events(conn, "ci", limit=2)
    assert len(first.items) == 2
    assert first.next_cursor
    rest = await repo.list_events(conn, "ci", limit=10, cursor=first.next_cursor)
    ids = [e.event_id for e in first.items + rest.items]
    assert sorted(ids) == [f"e{i}" for i in range(5)]
    assert len(set(ids)) == 5
    times = [(e.received_at, e.id) for e in first.items + rest.items]
    assert times == sorted(times, reverse=True)


async def test_purge_deletes_old_dispatched_events_in_batches_and_keeps_dead_letters(
    conn: psycopg.AsyncConnection,
) -> None:
    for i in range(5):
        await repo.insert_event(conn, event(f"e{i}"))
    stored, _ = await repo.insert_event(conn, event("dead"), max_attempts=1)
    for item in await repo.lease(conn, "w"):
        if item.event_instance_id == stored.id:
            await repo.fail(conn, stored.id, "w", "boom")
        else:
            await repo.complete(conn, item.event_instance_id, "w")
    waiting, _ = await repo.insert_event(conn, event("not-yet-dispatched"))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert await repo.purge_events(conn, cutoff, batch_size=2) == 6
    assert await repo.get_event(conn, "ci", "/github/acme", "e0") is None
    assert await repo.get_event(conn, "ci", "/github/acme", "not-yet-dispatched") == waiting
    [letter] = (await repo.list_dead_letters(conn, "ci")).items
    assert letter.event_instance_id is None
    assert letter.payload["id"] == "dead"
    queued = await (
        await conn.execute("SELECT count(*) FROM event_processing_service.event_queue_state")
    ).fetchone()
    assert queued == (1,)


async def test_event_definition_versions(conn: psycopg.AsyncConnection) -> None:
    spec = {"type": "push", "schema": {"type": "object"}}
    v1, created = await repo.upsert_event_definition(conn, "ci", "push", "push", spec)
    assert (v1.version, v1.event_type, created) == (1, "push", True)
    _, created = await repo.upsert_event_definition(conn, "ci", "push", "push", spec)
    assert not created
    latest = await repo.latest_event_definition(conn, "ci", "push")
    assert latest == v1


async def test_event_definition_soft_delete(conn: psycopg.AsyncConnection) -> None:
    await repo.upsert_event_definition(conn, "ci", "push", "push", {"type": "push"})
    assert await repo.delete_event_definition(conn, "ci", "push") == 1
    assert await repo.latest_event_definition(conn, "ci", "push") is None
    assert await repo.delete_event_definition(conn, "ci", "push") == 0


async def test_the_same_event_sent_to_two_namespaces_is_two_events(
    conn: psycopg.AsyncConnection,
) -> None:
    first, created_first = await repo.insert_event(conn, event("e1"))
    other, created_other = await repo.insert_event(conn, event("e1", namespace="other"))
    assert created_first
    assert created_other
    assert first.id != other.id
    assert await repo.get_event(conn, "other", "/github/acme", "e1") == other


async def test_a_batch_stores_new_events_once_and_reports_duplicates(
    conn: psycopg.AsyncConnection,
) -> None:
    old, _ = await repo.insert_event(conn, event("old", partition_key="k"))
    async with conn.transaction():
        results = await repo.insert_events(
            conn,
            [
                event("a", partition_key="k"),
                event("old", partition_key="k"),
                event("a", partition_key="k"),  # repeated within the batch
                event("b", partition_key="k"),
            ],
        )
    assert [(r.event_id, r.sequence_position, created) for r, created in results] == [
        ("a", 2, True),
        ("old", 1, False),
        ("a", 2, False),
        ("b", 3, True),
    ]
    assert results[1][0] == old
    queued = await (
        await conn.execute("SELECT count(*) FROM event_processing_service.event_queue_state")
    ).fetchone()
    assert queued == (3,)
    with pytest.raises(ValueError, match="one namespace"):
        await repo.insert_events(conn, [event("x"), event("y", namespace="other")])
