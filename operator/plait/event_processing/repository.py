"""SQL of event processing: definitions, idempotent event storage, the queue, dead letters.

Storing an event, giving it its sequence position and enqueueing it for dispatch happen in
one transaction, so an acknowledged event is always dispatched and a redelivered one (same
source and id) changes nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.event_processing.states import DeadLetterStatus, QueueState
from plait.kernel import versions
from plait.kernel.database import Page, fetch_page

__all__ = [
    "ConcurrentDuplicateError",
    "DeadLetter",
    "EventDefinition",
    "EventInstance",
    "EventReceipt",
    "NewEvent",
    "QueueItem",
    "complete",
    "delete_event_definition",
    "fail",
    "get_dead_letter",
    "get_event",
    "get_event_by_id",
    "insert_event",
    "insert_events",
    "latest_event_definition",
    "latest_event_definition_for_type",
    "latest_event_definitions_for_types",
    "lease",
    "list_dead_letters",
    "list_events",
    "notify_new_events",
    "purge_dead_letters",
    "purge_events",
    "queue_stats",
    "reap_expired_leases",
    "replay_dead_letter",
    "upsert_event_definition",
]

#: LISTEN/NOTIFY channel that wakes dispatchers when events are enqueued.
QUEUE_CHANNEL = "plait_event_queue"

SCHEMA = "event_processing_service"


@dataclass(frozen=True, slots=True)
class EventDefinition:
    id: uuid.UUID
    namespace: str
    name: str
    version: int
    event_type: str
    spec: dict[str, Any]
    spec_hash: str
    k8s_uid: uuid.UUID | None
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A CloudEvent as received, before it is stored."""

    namespace: str
    source: str
    id: str
    type: str
    subject: str | None = None
    time: datetime | None = None
    data_content_type: str | None = None
    data_schema: str | None = None
    data: Any = None
    data_base64: str | None = None
    extensions: Mapping[str, Any] | None = None
    partition_key: str | None = None


@dataclass(frozen=True, slots=True)
class EventInstance:
    id: uuid.UUID
    namespace: str
    source: str
    event_id: str
    type: str
    spec_version: str
    subject: str | None
    time: datetime | None
    data_content_type: str | None
    data_schema: str | None
    data: Any
    data_base64: str | None
    extensions: dict[str, Any]
    partition_key: str | None
    sequence_id: uuid.UUID | None
    sequence_position: int | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class EventReceipt:
    """What storing an event answers with: the stored row's identity and place in its
    sequence, not its payload (the sender has that; reading it back would cost a batch
    as much again)."""

    id: uuid.UUID
    namespace: str
    source: str
    event_id: str
    partition_key: str | None
    sequence_id: uuid.UUID | None
    sequence_position: int | None


@dataclass(frozen=True, slots=True)
class QueueItem:
    event_instance_id: uuid.UUID
    state: QueueState
    attempts: int
    max_attempts: int
    available_at: datetime
    leased_by: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    sequence_id: uuid.UUID | None
    sequence_position: int | None
    enqueued_at: datetime
    updated_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", QueueState(self.state))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: uuid.UUID
    namespace: str
    event_instance_id: uuid.UUID | None
    source: str
    event_id: str
    type: str
    payload: dict[str, Any]
    reason: str
    attempts: int
    status: DeadLetterStatus
    created_at: datetime
    resolved_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", DeadLetterStatus(self.status))


# -- definitions ---------------------------------------------------------------------------
async def upsert_event_definition(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    event_type: str,
    spec: Mapping[str, Any],
    *,
    k8s_uid: uuid.UUID | None = None,
) -> tuple[EventDefinition, bool]:
    return await versions.upsert_version(
        conn,
        EventDefinition,
        SCHEMA,
        "event_definitions",
        {"namespace": namespace, "name": name},
        spec,
        {"event_type": event_type, "k8s_uid": k8s_uid},
    )


async def latest_event_definition(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> EventDefinition | None:
    return await versions.latest_version(
        conn, EventDefinition, SCHEMA, "event_definitions", {"namespace": namespace, "name": name}
    )


async def latest_event_definition_for_type(
    conn: AsyncConnection[Any], namespace: str, event_type: str
) -> EventDefinition | None:
    """The live definition of CloudEvents type ``event_type`` in ``namespace`` (newest version
    of the most recently changed definition, should two name the same type)."""
    async with conn.cursor(row_factory=class_row(EventDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (namespace, name) * "
            "FROM event_processing_service.event_definitions "
            "WHERE namespace = %s AND event_type = %s AND deleted_at IS NULL "
            "ORDER BY namespace, name, version DESC",
            (namespace, event_type),
        )
        rows = await cur.fetchall()
    return max(rows, key=lambda d: d.created_at, default=None)


async def latest_event_definitions_for_types(
    conn: AsyncConnection[Any], keys: Collection[tuple[str, str]]
) -> dict[tuple[str, str], EventDefinition | None]:
    """:func:`latest_event_definition_for_type` of each (namespace, type) in ``keys``, in
    one query."""
    found: dict[tuple[str, str], EventDefinition | None] = dict.fromkeys(keys)
    async with conn.cursor(row_factory=class_row(EventDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (d.namespace, d.name) d.* "
            "FROM event_processing_service.event_definitions d "
            "JOIN unnest(%s::text[], %s::text[]) AS k(namespace, event_type) "
            "ON d.namespace = k.namespace AND d.event_type = k.event_type "
            "WHERE d.deleted_at IS NULL ORDER BY d.namespace, d.name, d.version DESC",
            ([k[0] for k in found], [k[1] for k in found]),
        )
        for definition in await cur.fetchall():
            key = (definition.namespace, definition.event_type)
            current = found[key]
            if current is None or definition.created_at > current.created_at:
                found[key] = definition
    return found


# -- events --------------------------------------------------------------------------------
_SELECT_EVENT = (
    "SELECT * FROM event_processing_service.event_instances "
    "WHERE namespace = %s AND source = %s AND event_id = %s"
)


async def _store_new(
    conn: AsyncConnection[Any], event: NewEvent, max_attempts: int
) -> EventInstance | None:
    """Give ``event`` its position, store and enqueue it; None if (namespace, source, id)
    exists, in which case the caller must undo the position (roll back)."""
    sequence_id, position = None, None
    if event.partition_key is not None:
        row = await (
            await conn.execute(
                "INSERT INTO event_processing_service.event_sequences "
                "(namespace, event_type, partition_key, last_position) VALUES (%s, %s, %s, 1) "
                "ON CONFLICT (namespace, event_type, partition_key) DO UPDATE SET "
                "last_position = event_sequences.last_position + 1, updated_at = now() "
                "RETURNING id, last_position",
                (event.namespace, event.type, event.partition_key),
            )
        ).fetchone()
        assert row is not None
        sequence_id, position = row
    async with conn.cursor(row_factory=class_row(EventInstance)) as cur:
        await cur.execute(
            "INSERT INTO event_processing_service.event_instances (namespace, source, "
            "event_id, type, subject, time, data_content_type, data_schema, data, "
            "data_base64, extensions, partition_key, sequence_id, sequence_position) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (namespace, source, event_id) DO NOTHING RETURNING *",
            (
                event.namespace,
                event.source,
                event.id,
                event.type,
                event.subject,
                event.time,
                event.data_content_type,
                event.data_schema,
                Jsonb(event.data) if event.data is not None else None,
                event.data_base64,
                Jsonb(dict(event.extensions or {})),
                event.partition_key,
                sequence_id,
                position,
            ),
        )
        created = await cur.fetchone()
    if created is None:
        return None
    await conn.execute(
        "INSERT INTO event_processing_service.event_queue_state "
        "(event_instance_id, max_attempts, sequence_id, sequence_position) "
        "VALUES (%s, %s, %s, %s)",
        (created.id, max_attempts, sequence_id, position),
    )
    return created


async def _store(conn: AsyncConnection[Any], event: NewEvent, max_attempts: int) -> EventInstance:
    async with conn.transaction():  # a savepoint when the caller already opened one
        created = await _store_new(conn, event, max_attempts)
        if created is None:
            raise _Duplicate  # rolls back the sequence increment with the savepoint
    return created


class _Duplicate(Exception):
    """(namespace, source, id) was stored before: storing it again is rolled back."""


async def insert_event(
    conn: AsyncConnection[Any], event: NewEvent, *, max_attempts: int = 5
) -> tuple[EventInstance, bool]:
    """Store and enqueue ``event`` unless (namespace, source, id) is known; (stored event,
    created).

    A keyed event takes the next position of its sequence in the same transaction; a
    duplicate rolls that back, so positions have no gaps.
    """
    try:
        return await _store(conn, event, max_attempts), True
    except _Duplicate:
        pass
    existing = await get_event(conn, event.namespace, event.source, event.id)
    assert existing is not None
    return existing, False


class ConcurrentDuplicateError(Exception):
    """Another transaction stored one of these events after this statement's snapshot was
    taken; this transaction was aborted and must be rolled back and tried again (it will
    then see the event stored)."""


# One statement stores a whole batch, sent as one JSON array (one parameter: cheaper to
# send than an array per column). What is already stored is read from the statement's
# snapshot (``known``: one probe of the unique key per distinct event; a semi-join left
# to the planner read the whole table at every batch whenever it thought the table small),
# the first occurrence of each other (namespace, source, id) is new,
# each sequence is advanced once by its number of new events (rows locked in key order, so
# two batches never wait on each other in a cycle), new events take consecutive positions
# in batch order, and their queue rows are inserted from what the insert returned. An
# event committed by another transaction after the snapshot was taken violates the unique
# key: the statement fails and nothing of it can be committed, so no position is lost.
_INSERT_BATCH = """
WITH input AS (
    SELECT * FROM jsonb_to_recordset(%(events)s::jsonb) AS i(ord int, namespace text,
        source text, event_id text, type text, subject text, time timestamptz,
        data_content_type text, data_schema text, data jsonb, data_base64 text,
        extensions jsonb, partition_key text)
), known AS (
    SELECT e.* FROM (SELECT DISTINCT namespace, source, event_id FROM input) i
    CROSS JOIN LATERAL (
        SELECT e.id, e.namespace, e.source, e.event_id, e.partition_key, e.sequence_id,
            e.sequence_position
        FROM event_processing_service.event_instances e
        WHERE e.namespace = i.namespace AND e.source = i.source AND e.event_id = i.event_id
        LIMIT 1
    ) e
), new AS (
    SELECT DISTINCT ON (namespace, source, event_id) * FROM input i
    WHERE NOT EXISTS (SELECT FROM known k WHERE k.namespace = i.namespace
                      AND k.source = i.source AND k.event_id = i.event_id)
    ORDER BY namespace, source, event_id, ord
), sequences AS (
    INSERT INTO event_processing_service.event_sequences AS s
        (namespace, event_type, partition_key, last_position)
    SELECT namespace, type, partition_key, count(*) FROM new
    WHERE partition_key IS NOT NULL
    GROUP BY namespace, type, partition_key ORDER BY namespace, type, partition_key
    ON CONFLICT (namespace, event_type, partition_key) DO UPDATE SET
        last_position = s.last_position + excluded.last_position, updated_at = now()
    RETURNING id, namespace, event_type, partition_key, last_position
), numbered AS (
    SELECT n.*, s.id AS sequence_id,
        s.last_position
        - count(*) OVER (PARTITION BY n.namespace, n.type, n.partition_key)
        + row_number() OVER (PARTITION BY n.namespace, n.type, n.partition_key ORDER BY n.ord)
        AS sequence_position
    FROM new n LEFT JOIN sequences s ON s.namespace = n.namespace
        AND s.event_type = n.type AND s.partition_key = n.partition_key
), created AS (
    INSERT INTO event_processing_service.event_instances (namespace, source, event_id,
        type, subject, time, data_content_type, data_schema, data, data_base64, extensions,
        partition_key, sequence_id, sequence_position)
    SELECT namespace, source, event_id, type, subject, time, data_content_type,
        data_schema, data, data_base64, coalesce(extensions, '{}'), partition_key,
        sequence_id, sequence_position
    FROM numbered ORDER BY ord
    RETURNING id, namespace, source, event_id, partition_key, sequence_id, sequence_position
), queued AS (
    INSERT INTO event_processing_service.event_queue_state
        (event_instance_id, max_attempts, sequence_id, sequence_position)
    SELECT id, %(max_attempts)s, sequence_id, sequence_position FROM created
){woken}
SELECT c.id, c.namespace, c.source, c.event_id, c.partition_key, c.sequence_id,
    c.sequence_position, true FROM created c{join_woken}
UNION ALL
SELECT *, false FROM known
"""
_INSERT_BATCH_ONLY = _INSERT_BATCH.replace("{woken}", "").replace("{join_woken}", "")
# ... and wake the dispatchers on commit when something was enqueued, in the same statement.
_INSERT_BATCH_NOTIFY = _INSERT_BATCH.replace(
    "{woken}", f", woken AS (SELECT pg_notify('{QUEUE_CHANNEL}', '') FROM created LIMIT 1)"
).replace("{join_woken}", " LEFT JOIN woken ON true")


def _timestamp_text(moment: datetime | None) -> str | None:
    """``moment`` as text PostgreSQL's timestamptz reads: in UTC, since it refuses offsets
    beyond 15:59 that RFC 3339 allows (a time within a day of year 1 keeps its own)."""
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:
        return moment.isoformat()


def _batch_json(events: Sequence[NewEvent]) -> str:
    return json.dumps(
        [
            {
                "ord": ord,
                "namespace": e.namespace,
                "source": e.source,
                "event_id": e.id,
                "type": e.type,
                "subject": e.subject,
                "time": _timestamp_text(e.time),
                "data_content_type": e.data_content_type,
                "data_schema": e.data_schema,
                "data": e.data,
                "data_base64": e.data_base64,
                "extensions": dict(e.extensions or {}),
                "partition_key": e.partition_key,
            }
            for ord, e in enumerate(events)
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


async def insert_events(
    conn: AsyncConnection[Any],
    events: Sequence[NewEvent],
    *,
    max_attempts: int = 5,
    notify: bool = False,
    commit: bool = False,
) -> list[tuple[EventReceipt, bool]]:
    """Store and enqueue a batch in the caller's transaction, in one statement;
    (receipt of the stored event, created) per event, in order.

    An event already stored, or repeated within the batch after its first occurrence, is
    a duplicate: it is answered with the stored row and takes no position. Events may
    belong to different namespaces. ``notify`` wakes the dispatchers
    (:func:`notify_new_events`) if an event was enqueued; ``commit`` commits the
    transaction in the same round trip (pipeline mode). A duplicate stored by a
    concurrent transaction after this statement began raises
    :class:`ConcurrentDuplicateError`: roll back and call again.
    """
    if not events:
        if commit:
            await conn.commit()
        return []
    query = _INSERT_BATCH_NOTIFY if notify else _INSERT_BATCH_ONLY
    params = {"events": _batch_json(events), "max_attempts": max_attempts}
    try:
        async with conn.pipeline(), conn.cursor() as cur:
            # Planned at each call, never prepared: a plan cached while the table was
            # nearly empty (a fresh install, the first batches of a connection) probed it
            # through an index on namespace alone, reading every event of the namespace
            # per batch until autovacuum's next ANALYZE. Planning costs about half a
            # millisecond per statement; that scan cost milliseconds and grew with the table.
            await cur.execute(query, params, prepare=False)
            if commit:
                await conn.commit()
            rows = await cur.fetchall()
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name != "event_instances_one_per_source_id":
            raise
        raise ConcurrentDuplicateError(exc.diag.message_detail or str(exc)) from exc
    stored: dict[tuple[str, str, str], tuple[EventReceipt, bool]] = {}
    for *columns, created in rows:
        receipt = EventReceipt(*columns)
        stored[(receipt.namespace, receipt.source, receipt.event_id)] = (receipt, created)
    results: list[tuple[EventReceipt, bool]] = []
    for event in events:
        key = (event.namespace, event.source, event.id)
        found = stored[key]
        results.append(found)
        if found[1]:  # its first occurrence was new; the repeats are duplicates of it
            stored[key] = (found[0], False)
    return results


async def notify_new_events(conn: AsyncConnection[Any]) -> None:
    """Wake the dispatchers LISTENing on :data:`QUEUE_CHANNEL` when this transaction commits.

    Only a shortcut: dispatchers also poll, so a lost notification delays, never loses.
    """
    await conn.execute("SELECT pg_notify(%s, '')", (QUEUE_CHANNEL,))


async def get_event_by_id(conn: AsyncConnection[Any], id: uuid.UUID) -> EventInstance | None:
    async with conn.cursor(row_factory=class_row(EventInstance)) as cur:
        await cur.execute(
            "SELECT * FROM event_processing_service.event_instances WHERE id = %s", (id,)
        )
        return await cur.fetchone()


async def get_event(
    conn: AsyncConnection[Any], namespace: str, source: str, event_id: str
) -> EventInstance | None:
    """The event (source, id) received in ``namespace``: the same CloudEvent sent to two
    namespaces is two events."""
    async with conn.cursor(row_factory=class_row(EventInstance)) as cur:
        await cur.execute(_SELECT_EVENT, (namespace, source, event_id))
        return await cur.fetchone()


async def list_events(
    conn: AsyncConnection[Any], namespace: str, *, limit: int = 50, cursor: str | None = None
) -> Page[EventInstance]:
    """Newest first, keyset-paginated on (received_at, id)."""
    return await fetch_page(
        conn,
        EventInstance,
        sql.SQL("event_processing_service.event_instances"),
        {"namespace": namespace},
        limit=limit,
        cursor=cursor,
        time_column="received_at",
    )


async def purge_events(
    conn: AsyncConnection[Any], older_than: datetime, *, batch_size: int = 1000
) -> int:
    """Retention: delete dispatched events received before ``older_than``, ``batch_size``
    per transaction.

    Events still waiting or being dispatched are kept whatever their age (nothing accepted
    is lost); dead-lettered ones go, their dead letters keep the payload. Small batches keep
    locks and WAL bursts short; queue rows go with their event (cascade). Returns the
    number of events deleted.
    """
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "DELETE FROM event_processing_service.event_instances WHERE id IN ("
                " SELECT e.id FROM event_processing_service.event_instances e"
                " JOIN event_processing_service.event_queue_state q"
                "  ON q.event_instance_id = e.id"
                " WHERE e.received_at < %s AND q.state IN ('Done', 'DeadLettered')"
                # Locked rows are skipped: a replay requeueing this event right now wins.
                " LIMIT %s FOR UPDATE OF e, q SKIP LOCKED)",
                (older_than, batch_size),
            )
        total += cur.rowcount
        if cur.rowcount < batch_size:
            return total


# -- queue ---------------------------------------------------------------------------------
async def lease(
    conn: AsyncConnection[Any],
    worker: str,
    *,
    limit: int = 10,
    lease_for: timedelta = timedelta(seconds=60),
    namespaces: Sequence[str] | None = None,
) -> list[QueueItem]:
    """Lease up to ``limit`` due events: pending ones, or leased ones whose lease expired.

    Only the head of each sequence is due: an event waits while an earlier event of its
    sequence is Pending or Leased, so one key is dispatched in order (retries and backoff
    included) while different keys and unkeyed events go in parallel. FOR UPDATE SKIP LOCKED
    lets any number of workers lease at once without waiting on each other or leasing the
    same event; an expired lease is a visibility timeout, so a worker killed mid-event
    loses nothing. Expired leases on their last attempt are :func:`reap_expired_leases`'s.
    ``namespaces`` limits leasing to events of those namespaces (an operator that watches
    only some namespaces dispatches only their events).
    """
    async with conn.cursor(row_factory=class_row(QueueItem)) as cur:
        await cur.execute(
            "WITH due AS (SELECT q.event_instance_id "
            " FROM event_processing_service.event_queue_state q "
            " WHERE ((q.state = 'Pending' AND q.available_at <= now()) "
            "   OR (q.state = 'Leased' AND q.lease_expires_at <= now() "
            "       AND q.attempts < q.max_attempts)) "
            " AND (q.sequence_id IS NULL OR NOT EXISTS ("
            "   SELECT FROM event_processing_service.event_queue_state earlier "
            "   WHERE earlier.sequence_id = q.sequence_id "
            "   AND earlier.sequence_position < q.sequence_position "
            "   AND earlier.state IN ('Pending', 'Leased'))) "
            " AND (%(namespaces)s::text[] IS NULL OR EXISTS ("
            "   SELECT FROM event_processing_service.event_instances e "
            "   WHERE e.id = q.event_instance_id AND e.namespace = ANY(%(namespaces)s))) "
            " ORDER BY q.available_at LIMIT %(limit)s FOR UPDATE OF q SKIP LOCKED) "
            "UPDATE event_processing_service.event_queue_state q SET state = 'Leased', "
            "leased_by = %(worker)s, lease_expires_at = now() + %(lease)s, "
            "attempts = q.attempts + 1, updated_at = now() "
            "FROM due WHERE q.event_instance_id = due.event_instance_id RETURNING q.*",
            {
                "worker": worker,
                "lease": lease_for,
                "limit": limit,
                "namespaces": list(namespaces) if namespaces is not None else None,
            },
        )
        return await cur.fetchall()


async def complete(conn: AsyncConnection[Any], event_instance_id: uuid.UUID, worker: str) -> bool:
    """Mark a leased event dispatched; False if this worker no longer holds the lease."""
    cur = await conn.execute(
        "UPDATE event_processing_service.event_queue_state SET state = 'Done', leased_by = NULL, "
        "lease_expires_at = NULL, last_error = NULL, updated_at = now() "
        "WHERE event_instance_id = %s AND state = 'Leased' AND leased_by = %s",
        (event_instance_id, worker),
    )
    return cur.rowcount == 1


_DEAD_LETTER_FROM_EVENTS = (
    "INSERT INTO event_processing_service.dead_letter_queue (namespace, "
    "event_instance_id, source, event_id, type, payload, reason, attempts) "
    "SELECT e.namespace, e.id, e.source, e.event_id, e.type, "
    "jsonb_strip_nulls(jsonb_build_object("
    " 'specversion', e.spec_version, 'id', e.event_id, 'source', e.source, 'type', e.type,"
    " 'subject', e.subject, 'time', e.time, 'datacontenttype', e.data_content_type,"
    " 'dataschema', e.data_schema, 'data', e.data, 'data_base64', e.data_base64,"
    # the partitionkey extension is kept in its column (unless it is just the subject)
    " 'partitionkey', NULLIF(e.partition_key, e.subject))) "
    "|| e.extensions, "
    "q.last_error, q.attempts "
    "FROM event_processing_service.event_instances e "
    "JOIN event_processing_service.event_queue_state q ON q.event_instance_id = e.id "
    "WHERE e.id = ANY(%s) "
    "ON CONFLICT (namespace, source, event_id) WHERE status = 'Open' DO NOTHING"
)


async def fail(
    conn: AsyncConnection[Any],
    event_instance_id: uuid.UUID,
    worker: str,
    error: str,
    *,
    retry_in: timedelta = timedelta(seconds=10),
) -> QueueItem | None:
    """Record a failed dispatch: retry later, or dead-letter once attempts are used up.

    Returns the queue row (None if this worker no longer holds the lease).
    """
    async with conn.transaction(), conn.cursor(row_factory=class_row(QueueItem)) as cur:
        await cur.execute(
            "UPDATE event_processing_service.event_queue_state SET "
            "state = CASE WHEN attempts >= max_attempts THEN 'DeadLettered' ELSE 'Pending' END, "
            "available_at = now() + %s, leased_by = NULL, lease_expires_at = NULL, "
            "last_error = %s, updated_at = now() "
            "WHERE event_instance_id = %s AND state = 'Leased' AND leased_by = %s RETURNING *",
            (retry_in, error, event_instance_id, worker),
        )
        item = await cur.fetchone()
        if item is not None and item.state is QueueState.DEAD_LETTERED:
            await conn.execute(_DEAD_LETTER_FROM_EVENTS, ([event_instance_id],))
        return item


async def reap_expired_leases(conn: AsyncConnection[Any]) -> int:
    """Dead-letter events whose last allowed attempt's lease expired.

    Such an event took every attempt down with its worker (a poison event, or a worker
    killed again and again); leaving it Leased would strand it and block its sequence.
    """
    async with conn.transaction():
        rows = await (
            await conn.execute(
                "UPDATE event_processing_service.event_queue_state SET state = 'DeadLettered', "
                "leased_by = NULL, lease_expires_at = NULL, updated_at = now(), "
                "last_error = coalesce(last_error || '; ', '') || format("
                " 'the lease of attempt %%s expired: its dispatcher stopped mid-event', attempts) "
                "WHERE event_instance_id IN ("
                " SELECT event_instance_id FROM event_processing_service.event_queue_state "
                " WHERE state = 'Leased' AND lease_expires_at <= now() "
                " AND attempts >= max_attempts FOR UPDATE SKIP LOCKED) "
                "RETURNING event_instance_id"
            )
        ).fetchall()
        if rows:
            await conn.execute(_DEAD_LETTER_FROM_EVENTS, ([r[0] for r in rows],))
    return len(rows)


async def queue_stats(conn: AsyncConnection[Any]) -> dict[str, Any]:
    """Events waiting (Pending) and in hand (Leased), and the age of the oldest due one.

    Read through the partial indexes of those two states, so the cost does not grow with
    the dispatched history; dead letters are counted from their own table.
    """
    row = await (
        await conn.execute(
            "SELECT (SELECT count(*) FROM event_processing_service.event_queue_state "
            "        WHERE state = 'Pending'), "
            "       (SELECT count(*) FROM event_processing_service.event_queue_state "
            "        WHERE state = 'Leased'), "
            "       (SELECT extract(epoch FROM now() - min(available_at)) "
            "        FROM event_processing_service.event_queue_state "
            "        WHERE state = 'Pending' AND available_at <= now())"
        )
    ).fetchone()
    assert row is not None
    pending, leased, age = row
    return {
        "depth": {QueueState.PENDING.value: pending, QueueState.LEASED.value: leased},
        "lag_seconds": max(0.0, float(age)) if age is not None else 0.0,
    }


# -- dead letters --------------------------------------------------------------------------
async def list_dead_letters(
    conn: AsyncConnection[Any],
    namespace: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
    status: DeadLetterStatus | None = None,
) -> Page[DeadLetter]:
    """Newest first, keyset-paginated; optionally only one status."""
    filters: dict[str, Any] = {"namespace": namespace}
    if status is not None:
        filters["status"] = str(status)
    return await fetch_page(
        conn,
        DeadLetter,
        sql.SQL("event_processing_service.dead_letter_queue"),
        filters,
        limit=limit,
        cursor=cursor,
    )


async def get_dead_letter(
    conn: AsyncConnection[Any], namespace: str, id: uuid.UUID
) -> DeadLetter | None:
    async with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        await cur.execute(
            "SELECT * FROM event_processing_service.dead_letter_queue "
            "WHERE namespace = %s AND id = %s",
            (namespace, id),
        )
        return await cur.fetchone()


async def replay_dead_letter(
    conn: AsyncConnection[Any], namespace: str, id: uuid.UUID, *, max_attempts: int = 5
) -> DeadLetter | None:
    """Send an open dead letter through dispatch again; None if not found or not Open.

    The event keeps its place: its queue row goes back to Pending with fresh attempts, so
    later events of its sequence that are still waiting are dispatched after it. An event
    already removed by retention is stored again from the payload (at the end of its
    sequence, since its old position is gone).
    """
    async with conn.transaction():
        async with conn.cursor(row_factory=class_row(DeadLetter)) as cur:
            await cur.execute(
                "UPDATE event_processing_service.dead_letter_queue SET status = 'Replayed', "
                "resolved_at = now() WHERE namespace = %s AND id = %s AND status = 'Open' "
                "RETURNING *",
                (namespace, id),
            )
            letter = await cur.fetchone()
        if letter is None:
            return None
        requeued = 0
        if letter.event_instance_id is not None:
            # Hold the event against retention's delete until this transaction ends.
            await conn.execute(
                "SELECT FROM event_processing_service.event_instances WHERE id = %s FOR KEY SHARE",
                (letter.event_instance_id,),
            )
            cur2 = await conn.execute(
                "UPDATE event_processing_service.event_queue_state SET state = 'Pending', "
                "attempts = 0, max_attempts = %s, available_at = now(), leased_by = NULL, "
                "lease_expires_at = NULL, updated_at = now() "
                "WHERE event_instance_id = %s AND state = 'DeadLettered'",
                (max_attempts, letter.event_instance_id),
            )
            requeued = cur2.rowcount
        if requeued == 0:  # retention removed the event: store it again from the payload
            event = _event_from_payload(namespace, letter.payload)
            try:
                await _store(conn, event, max_attempts)
            except _Duplicate:  # ... but it was sent again meanwhile, and that copy failed
                await conn.execute(
                    "UPDATE event_processing_service.event_queue_state q SET state = 'Pending', "
                    "attempts = 0, max_attempts = %s, available_at = now(), updated_at = now() "
                    "FROM event_processing_service.event_instances e "
                    "WHERE q.event_instance_id = e.id AND e.namespace = %s AND e.source = %s "
                    "AND e.event_id = %s AND q.state = 'DeadLettered'",
                    (max_attempts, namespace, event.source, event.id),
                )
        await notify_new_events(conn)
        return letter


def _event_from_payload(namespace: str, payload: Mapping[str, Any]) -> NewEvent:
    known = {
        "specversion", "id", "source", "type", "subject", "time", "datacontenttype",
        "dataschema", "data", "data_base64", "partitionkey",
    }  # fmt: skip
    time = payload.get("time")
    return NewEvent(
        namespace=namespace,
        source=payload["source"],
        id=payload["id"],
        type=payload["type"],
        subject=payload.get("subject"),
        time=datetime.fromisoformat(time) if isinstance(time, str) else None,
        data_content_type=payload.get("datacontenttype"),
        data_schema=payload.get("dataschema"),
        data=payload.get("data"),
        data_base64=payload.get("data_base64"),
        extensions={k: v for k, v in payload.items() if k not in known},
        partition_key=payload.get("partitionkey") or payload.get("subject"),
    )


async def purge_dead_letters(
    conn: AsyncConnection[Any],
    namespace: str,
    *,
    ids: Sequence[uuid.UUID] | None = None,
    older_than: datetime | None = None,
) -> int:
    """Delete dead letters of ``namespace``: the given ids, or those created before
    ``older_than`` (both: either). Returns how many were deleted."""
    if ids is None and older_than is None:
        raise ValueError("purge needs ids or older_than")
    cur = await conn.execute(
        "DELETE FROM event_processing_service.dead_letter_queue WHERE namespace = %s "
        "AND (id = ANY(%s) OR created_at < %s)",
        (namespace, list(ids or []), older_than),
    )
    return cur.rowcount


async def delete_event_definition(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    """Soft-delete every version (events already received keep their type's history)."""
    return await versions.mark_deleted(
        conn, SCHEMA, "event_definitions", {"namespace": namespace, "name": name}
    )
