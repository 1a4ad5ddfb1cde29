"""Event processing repository against the real schema, connected as its own role."""

from __future__ import annotations

import asyncio
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
    assert (results[1][0].id, results[1][0].sequence_id) == (old.id, old.sequence_id)
    queued = await (
        await conn.execute("SELECT count(*) FROM event_processing_service.event_queue_state")
    ).fetchone()
    assert queued == (3,)


async def _rows(conn: psycopg.AsyncConnection, query: str) -> list[tuple]:
    return await (await conn.execute(query)).fetchall()


async def test_a_batch_with_duplicates_inside_and_across_batches_numbers_only_new_events(
    conn: psycopg.AsyncConnection,
) -> None:
    async with conn.transaction():
        first = await repo.insert_events(
            conn,
            [
                event("a1", partition_key="k"),
                event("b1", partition_key="j"),
                event("a1", partition_key="k"),  # repeated: takes no position
                event("u1"),  # unkeyed
                event("a2", partition_key="k"),
                event("p1", partition_key="k", type="pull"),  # same key, other type
                event("a1", partition_key="k", namespace="other"),  # other namespace
                event("u1"),  # repeated unkeyed
                event("a3", partition_key="k"),
            ],
        )
    assert [(r.namespace, r.event_id, r.sequence_position, c) for r, c in first] == [
        ("ci", "a1", 1, True),
        ("ci", "b1", 1, True),
        ("ci", "a1", 1, False),
        ("ci", "u1", None, True),
        ("ci", "a2", 2, True),
        ("ci", "p1", 1, True),
        ("other", "a1", 1, True),
        ("ci", "u1", None, False),
        ("ci", "a3", 3, True),
    ]
    assert first[2][0] == first[0][0]  # the repeat answers the row its first copy stored
    assert first[7][0] == first[3][0]
    assert first[0][0].sequence_id == first[4][0].sequence_id != first[5][0].sequence_id
    assert first[6][0].sequence_id not in (first[0][0].sequence_id, None)
    async with conn.transaction():
        second = await repo.insert_events(
            conn,
            [
                event("a4", partition_key="k"),
                event("a2", partition_key="k"),  # stored by the batch before
                event("b2", partition_key="j"),
                event("a4", partition_key="k"),
                event("a5", partition_key="k"),
            ],
        )
    assert [(r.event_id, r.sequence_position, c) for r, c in second] == [
        ("a4", 4, True),
        ("a2", 2, False),
        ("b2", 2, True),
        ("a4", 4, False),
        ("a5", 5, True),
    ]
    assert second[1][0] == first[4][0]  # the receipt of the stored row, read back
    # One queue row per stored event, carrying the event's own position; every sequence's
    # counter equals the number of its events (no gaps, no position taken twice).
    assert await _rows(
        conn,
        "SELECT e.event_id, e.namespace FROM event_processing_service.event_instances e "
        "JOIN event_processing_service.event_queue_state q ON q.event_instance_id = e.id "
        "AND q.sequence_id IS NOT DISTINCT FROM e.sequence_id "
        "AND q.sequence_position IS NOT DISTINCT FROM e.sequence_position "
        "AND q.state = 'Pending' ORDER BY 2, 1",
    ) == [(i, "ci") for i in ["a1", "a2", "a3", "a4", "a5", "b1", "b2", "p1", "u1"]] + [
        ("a1", "other")
    ]
    assert await _rows(
        conn,
        "SELECT s.namespace, s.event_type, s.partition_key, s.last_position, count(e.id), "
        "max(e.sequence_position) FROM event_processing_service.event_sequences s "
        "JOIN event_processing_service.event_instances e ON e.sequence_id = s.id "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3",
    ) == [
        ("ci", "pull", "k", 1, 1, 1),
        ("ci", "push", "j", 2, 2, 2),
        ("ci", "push", "k", 5, 5, 5),
        ("other", "push", "k", 1, 1, 1),
    ]


async def _event_rows_read(conn: psycopg.AsyncConnection, inserted: int) -> int:
    """Rows of ``event_instances`` read so far by sequential scans and by its indexes, once
    the statistics show ``inserted`` events (a backend reports its own a little later)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        row = await (
            await conn.execute(
                "SELECT t.n_tup_ins, t.seq_tup_read + coalesce(sum(i.idx_tup_read), 0) "
                "FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i USING (relid) "
                "WHERE t.relname = 'event_instances' AND t.schemaname = 'event_processing_service' "
                "GROUP BY t.n_tup_ins, t.seq_tup_read"
            )
        ).fetchone()
        assert row is not None
        if row[0] >= inserted:
            return int(row[1])
        assert asyncio.get_running_loop().time() < deadline, f"statistics show {row[0]} inserts"
        await asyncio.sleep(0.2)


async def test_a_batch_finds_stored_events_by_their_key_whatever_the_table_held_before(
    conn: psycopg.AsyncConnection,
) -> None:
    """Each batch looks its events up by their unique key, so its cost does not grow with
    the table: a plan chosen while the table was empty, and kept for the connection, read
    every stored event of the namespace at each batch."""
    for i in range(12):  # more than the executions after which statements are prepared
        async with conn.transaction():
            await repo.insert_events(conn, [event(f"early-{i}-{j}") for j in range(4)])
    async with conn.transaction():
        for start in range(0, 3000, 500):
            await repo.insert_events(conn, [event(f"bulk-{start + j}") for j in range(500)])
    before = await _event_rows_read(conn, 48 + 3000)
    for i in range(20):
        async with conn.transaction():
            await repo.insert_events(conn, [event(f"late-{i}-{j}") for j in range(4)])
    read = await _event_rows_read(conn, 48 + 3000 + 80) - before
    # 80 new events: each one's queue row checks its foreign key (one index row read);
    # probes for events not stored read nothing. Reading the table costs 3,000 a batch.
    assert read <= 80, f"20 batches of 4 new events read {read} stored rows"


async def test_a_duplicate_committed_concurrently_is_retried_without_a_gap(
    connect_as: ConnectAs,
) -> None:
    first, second = await connect_as("event_processing"), await connect_as("event_processing")
    await first.execute("BEGIN")
    await repo.insert_events(first, [event("x", partition_key="k")])
    await second.execute("BEGIN")
    # ``second`` reads a snapshot without x, then waits on x's uncommitted key ...
    pending = asyncio.ensure_future(
        repo.insert_events(second, [event("y", partition_key="k"), event("x", partition_key="k")])
    )
    await asyncio.sleep(0.3)
    assert not pending.done()
    await first.execute("COMMIT")  # ... which now exists: second must roll back, not go on
    with pytest.raises(repo.ConcurrentDuplicateError, match=r"\(ci, /github/acme, x\) already"):
        await pending
    await second.execute("ROLLBACK")
    async with second.transaction():
        again = await repo.insert_events(
            second, [event("y", partition_key="k"), event("x", partition_key="k")]
        )
    assert [(r.event_id, r.sequence_position, c) for r, c in again] == [
        ("y", 2, True),
        ("x", 1, False),
    ]


async def test_a_batch_keeps_event_times_whatever_their_offset(
    conn: psycopg.AsyncConnection,
) -> None:
    # RFC 3339 allows offsets PostgreSQL's timestamptz text input refuses (beyond 15:59).
    far = datetime.fromisoformat("6800-03-27T00:24:53-18:53")
    early = datetime.fromisoformat("0001-01-01T10:00:00+05:00")
    async with conn.transaction():
        results = await repo.insert_events(
            conn, [event("far", time=far), event("early", time=early)]
        )
    stored = [await repo.get_event_by_id(conn, receipt.id) for receipt, _ in results]
    assert [event.time for event in stored if event is not None] == [far, early]
