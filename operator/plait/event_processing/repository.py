"""SQL of event processing: definitions, idempotent event storage, the queue, dead letters.

Storing an event, giving it its sequence position and enqueueing it for dispatch happen in
one transaction, so an acknowledged event is always dispatched and a redelivered one (same
source and id) changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.event_processing.states import DeadLetterStatus, QueueState
from plait.kernel import versions
from plait.kernel.database import Page, fetch_page

__all__ = [
    "DeadLetter",
    "EventDefinition",
    "EventInstance",
    "NewEvent",
    "QueueItem",
    "complete",
    "delete_event_definition",
    "fail",
    "get_event",
    "insert_event",
    "latest_event_definition",
    "lease",
    "list_dead_letters",
    "list_events",
    "purge_events",
    "upsert_event_definition",
]

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
class QueueItem:
    event_instance_id: uuid.UUID
    state: QueueState
    attempts: int
    max_attempts: int
    available_at: datetime
    leased_by: str | None
    lease_expires_at: datetime | None
    last_error: str | None
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


# -- events --------------------------------------------------------------------------------
_SELECT_EVENT = (
    "SELECT * FROM event_processing_service.event_instances WHERE source = %s AND event_id = %s"
)


async def _store(conn: AsyncConnection[Any], event: NewEvent, max_attempts: int) -> EventInstance:
    async with conn.transaction():  # a savepoint when the caller already opened one
        sequence_id, position = None, None
        if event.partition_key is not None:
            row = await (
                await conn.execute(
                    "INSERT INTO event_processing_service.event_sequences "
                    "(namespace, partition_key, last_position) VALUES (%s, %s, 1) "
                    "ON CONFLICT (namespace, partition_key) DO UPDATE SET "
                    "last_position = event_sequences.last_position + 1, updated_at = now() "
                    "RETURNING id, last_position",
                    (event.namespace, event.partition_key),
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
                "ON CONFLICT (source, event_id) DO NOTHING RETURNING *",
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
            raise _Duplicate  # rolls back the sequence increment with the savepoint
        await conn.execute(
            "INSERT INTO event_processing_service.event_queue_state "
            "(event_instance_id, max_attempts) VALUES (%s, %s)",
            (created.id, max_attempts),
        )
    return created


class _Duplicate(Exception):
    """(source, id) was stored before: the attempt to store it again is rolled back."""


async def insert_event(
    conn: AsyncConnection[Any], event: NewEvent, *, max_attempts: int = 5
) -> tuple[EventInstance, bool]:
    """Store and enqueue ``event`` unless (source, id) is known; (stored event, created).

    A keyed event takes the next position of its sequence in the same transaction; a
    duplicate rolls that back, so positions have no gaps.
    """
    try:
        return await _store(conn, event, max_attempts), True
    except _Duplicate:
        pass
    existing = await get_event(conn, event.source, event.id)
    assert existing is not None
    return existing, False


async def get_event(conn: AsyncConnection[Any], source: str, event_id: str) -> EventInstance | None:
    async with conn.cursor(row_factory=class_row(EventInstance)) as cur:
        await cur.execute(_SELECT_EVENT, (source, event_id))
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
    """Retention: delete events received before ``older_than``, ``batch_size`` per transaction.

    Small batches keep locks and WAL bursts short; queue rows go with their event (cascade)
    and dead letters keep their payload. Returns the number of events deleted.
    """
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "DELETE FROM event_processing_service.event_instances WHERE id IN ("
                " SELECT id FROM event_processing_service.event_instances"
                " WHERE received_at < %s LIMIT %s)",
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
) -> list[QueueItem]:
    """Lease up to ``limit`` due events (pending, or leased by a worker whose lease expired).

    FOR UPDATE SKIP LOCKED lets any number of workers lease concurrently without waiting on
    each other or leasing the same event. A lease that expires on its last attempt is not
    taken again (attempts never exceed max_attempts); it stays visible as Leased.
    """
    async with conn.cursor(row_factory=class_row(QueueItem)) as cur:
        await cur.execute(
            "WITH due AS (SELECT event_instance_id FROM event_processing_service.event_queue_state "
            " WHERE (state = 'Pending' AND available_at <= now()) "
            " OR (state = 'Leased' AND lease_expires_at <= now() AND attempts < max_attempts) "
            " ORDER BY available_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "UPDATE event_processing_service.event_queue_state q SET state = 'Leased', "
            "leased_by = %(worker)s, lease_expires_at = now() + %(lease)s, "
            "attempts = q.attempts + 1, updated_at = now() "
            "FROM due WHERE q.event_instance_id = due.event_instance_id RETURNING q.*",
            {"worker": worker, "lease": lease_for, "limit": limit},
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
            await conn.execute(
                "INSERT INTO event_processing_service.dead_letter_queue (namespace, "
                "event_instance_id, source, event_id, type, payload, reason, attempts) "
                "SELECT namespace, id, source, event_id, type, "
                "jsonb_strip_nulls(jsonb_build_object("
                " 'specversion', spec_version, 'id', event_id, 'source', source, 'type', type,"
                " 'subject', subject, 'time', time, 'datacontenttype', data_content_type,"
                " 'dataschema', data_schema, 'data', data, 'data_base64', data_base64,"
                " 'partitionkey', partition_key) || extensions), %s, %s "
                "FROM event_processing_service.event_instances WHERE id = %s "
                "ON CONFLICT (source, event_id) WHERE status = 'Open' DO NOTHING",
                (error, item.attempts, event_instance_id),
            )
        return item


async def list_dead_letters(
    conn: AsyncConnection[Any], namespace: str, *, limit: int = 50, cursor: str | None = None
) -> Page[DeadLetter]:
    return await fetch_page(
        conn,
        DeadLetter,
        sql.SQL("event_processing_service.dead_letter_queue"),
        {"namespace": namespace},
        limit=limit,
        cursor=cursor,
    )


async def delete_event_definition(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    """Soft-delete every version (events already received keep their type's history)."""
    return await versions.mark_deleted(
        conn, SCHEMA, "event_definitions", {"namespace": namespace, "name": name}
    )
