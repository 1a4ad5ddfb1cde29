"""SQL of the workflow orchestrator: definitions, instances, triggers and subscriptions.

Functions take an open connection so callers decide the transaction; every value is a
query parameter. Rows come back as frozen dataclasses named after the table.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.kernel import versions
from plait.kernel.database import Page, fetch_page
from plait.workflow_orchestrator.states import (
    FINAL_PHASES,
    PHASES,
    RETRYABLE_PHASES,
    SUBSCRIPTIONS,
    SubscriptionStatus,
    WorkflowPhase,
)

__all__ = [
    "DueRun",
    "EventSubscription",
    "EventTrigger",
    "WorkflowDefinition",
    "WorkflowInstance",
    "cancel_subscriptions",
    "claim_due_runs",
    "create_workflow_instance",
    "delete_event_trigger",
    "delete_workflow_definition",
    "event_trigger_by_name",
    "expire_due",
    "get_workflow_definition",
    "get_workflow_instance",
    "latest_workflow_definition",
    "list_workflow_instances",
    "mark_matched",
    "matched_by",
    "matching_triggers",
    "next_deadline",
    "reopen_for_retry",
    "set_instance_labels",
    "set_wake_at",
    "set_workflow_phase",
    "subscribe",
    "subscriptions_of_instance",
    "upsert_event_trigger",
    "upsert_workflow_definition",
    "waiting_subscriptions",
]

SCHEMA = "workflow_orchestrator_service"
_INSTANCES = sql.SQL("workflow_orchestrator_service.workflow_instances")
_STARTED = (WorkflowPhase.RUNNING, WorkflowPhase.SUSPENDED, WorkflowPhase.SUCCEEDED)
_UNFINISHED = frozenset(WorkflowPhase) - FINAL_PHASES


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
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
class WorkflowInstance:
    id: uuid.UUID
    namespace: str
    name: str
    workflow_name: str
    workflow_version: int
    phase: WorkflowPhase
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    message: str | None
    failure: dict[str, Any] | None
    retries: int
    trigger_id: uuid.UUID | None
    event_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    wake_at: datetime | None = None
    parent_id: uuid.UUID | None = None
    mocks: dict[str, Any] | None = None
    """Task name -> mock (as JSON) of a run a WorkflowTest started; None for others."""
    labels: dict[str, str] = field(default_factory=dict)
    """The WorkflowInstance's metadata.labels, kept in step by the operator."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase", WorkflowPhase(self.phase))


@dataclass(frozen=True, slots=True)
class EventTrigger:
    id: uuid.UUID
    namespace: str
    name: str
    k8s_uid: uuid.UUID | None
    event_type: str | None
    schedule: str | None
    filter: str | None
    workflow_name: str
    workflow_version: int | None
    arguments: dict[str, Any]
    concurrency_policy: str
    spec: dict[str, Any]
    spec_hash: str
    enabled: bool
    rate_tokens: float | None
    rate_refilled_at: datetime | None
    last_scheduled_time: datetime | None
    last_fired_at: datetime | None
    last_instance: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventSubscription:
    id: uuid.UUID
    workflow_instance_id: uuid.UUID
    task_name: str
    attempt: int
    event_type: str
    event_source: str | None
    subject: str | None
    filter: dict[str, Any]
    status: SubscriptionStatus
    matched_event_id: uuid.UUID | None
    outputs: dict[str, Any] | None
    created_at: datetime
    expires_at: datetime | None
    resolved_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", SubscriptionStatus(self.status))


# -- definitions ---------------------------------------------------------------------------
async def upsert_workflow_definition(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    *,
    k8s_uid: uuid.UUID | None = None,
) -> tuple[WorkflowDefinition, bool]:
    """Store ``spec`` as a new version unless it equals the latest; (version, created)."""
    return await versions.upsert_version(
        conn,
        WorkflowDefinition,
        SCHEMA,
        "workflow_definitions",
        {"namespace": namespace, "name": name},
        spec,
        {"k8s_uid": k8s_uid},
    )


async def latest_workflow_definition(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> WorkflowDefinition | None:
    return await versions.latest_version(
        conn,
        WorkflowDefinition,
        SCHEMA,
        "workflow_definitions",
        {"namespace": namespace, "name": name},
    )


async def get_workflow_definition(
    conn: AsyncConnection[Any], namespace: str, name: str, version: int
) -> WorkflowDefinition | None:
    return await versions.get_version(
        conn,
        WorkflowDefinition,
        SCHEMA,
        "workflow_definitions",
        {"namespace": namespace, "name": name},
        version,
    )


async def delete_workflow_definition(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    """Soft-delete all versions (history stays for the instances that ran them)."""
    return await versions.mark_deleted(
        conn, SCHEMA, "workflow_definitions", {"namespace": namespace, "name": name}
    )


# -- instances -----------------------------------------------------------------------------
async def create_workflow_instance(
    conn: AsyncConnection[Any],
    *,
    id: uuid.UUID,
    namespace: str,
    name: str,
    workflow_name: str,
    workflow_version: int,
    inputs: Mapping[str, Any] | None = None,
    trigger_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    parent_id: uuid.UUID | None = None,
    mocks: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
) -> tuple[WorkflowInstance, bool]:
    """Insert the instance ``id`` unless it exists; (instance, created). Idempotent by id.
    ``mocks``: task name -> mock (JSON) of a WorkflowTest's run; ``labels``: the
    WorkflowInstance's metadata.labels (the run list filters by them)."""
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_instances (id, namespace, name, "
            "workflow_name, workflow_version, inputs, trigger_id, event_id, parent_id, mocks, "
            "labels) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING RETURNING *",
            (
                id,
                namespace,
                name,
                workflow_name,
                workflow_version,
                Jsonb(dict(inputs or {})),
                trigger_id,
                event_id,
                parent_id,
                Jsonb(dict(mocks)) if mocks else None,
                Jsonb(dict(labels or {})),
            ),
        )
        created = await cur.fetchone()
    if created is not None:
        return created, True
    existing = await get_workflow_instance(conn, id)
    assert existing is not None  # the conflict was on this id; instances are never deleted here
    return existing, False


async def set_instance_labels(
    conn: AsyncConnection[Any], id: uuid.UUID, labels: Mapping[str, str]
) -> bool:
    """Record the run's current metadata.labels; True if they differed from the row's
    (equal labels write nothing)."""
    cur = await conn.execute(
        "UPDATE workflow_orchestrator_service.workflow_instances SET labels = %s "
        "WHERE id = %s AND labels IS DISTINCT FROM %s",
        (Jsonb(dict(labels)), id, Jsonb(dict(labels))),
    )
    return cur.rowcount > 0


async def instance_by_name(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> WorkflowInstance | None:
    """The newest run of that name in the namespace (a name is reused only after the
    object it was is gone)."""
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_instances "
            "WHERE namespace = %s AND name = %s ORDER BY created_at DESC LIMIT 1",
            (namespace, name),
        )
        return await cur.fetchone()


async def depth(conn: AsyncConnection[Any], id: uuid.UUID) -> int:
    """How many parents a run has (0 for a run no task started)."""
    cur = await conn.execute(
        "WITH RECURSIVE up(id, parent_id, n) AS ("
        " SELECT id, parent_id, 0 FROM workflow_orchestrator_service.workflow_instances"
        " WHERE id = %s"
        " UNION ALL SELECT w.id, w.parent_id, up.n + 1"
        " FROM workflow_orchestrator_service.workflow_instances w JOIN up ON w.id = up.parent_id"
        " WHERE up.n < 100)"
        " SELECT max(n) FROM up",
        (id,),
    )
    row = await cur.fetchone()
    return int(row[0] or 0) if row else 0


async def get_workflow_instance(
    conn: AsyncConnection[Any], id: uuid.UUID
) -> WorkflowInstance | None:
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_instances WHERE id = %s", (id,)
        )
        return await cur.fetchone()


async def list_workflow_instances(
    conn: AsyncConnection[Any],
    namespace: str,
    *,
    workflow_name: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[WorkflowInstance]:
    """Newest first, keyset-paginated (index workflow_instances_keyset / _by_workflow)."""
    filters: dict[str, Any] = {"namespace": namespace}
    if workflow_name is not None:
        filters["workflow_name"] = workflow_name
    return await fetch_page(conn, WorkflowInstance, _INSTANCES, filters, limit=limit, cursor=cursor)


async def set_workflow_phase(
    conn: AsyncConnection[Any],
    id: uuid.UUID,
    phase: WorkflowPhase,
    *,
    message: str | None = None,
    outputs: Mapping[str, Any] | None = None,
    failure: Mapping[str, Any] | None = None,
) -> WorkflowInstance | None:
    """Move a not-yet-final instance to ``phase``; None if it is missing, already final, or
    in a phase that may not move to ``phase`` (:data:`PHASES`): a lost race, not an error.

    started_at is set the first time the instance runs, finished_at when it ends (and its
    wake_at is cleared then: a finished run has no deadline).
    """
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(
            "UPDATE workflow_orchestrator_service.workflow_instances SET "
            "phase = %(phase)s, updated_at = now(), "
            "message = coalesce(%(message)s, message), outputs = coalesce(%(outputs)s, outputs), "
            "failure = coalesce(%(failure)s, failure), "
            "started_at = CASE WHEN %(started)s THEN coalesce(started_at, now()) "
            "ELSE started_at END, "
            "finished_at = CASE WHEN %(final)s THEN now() END, "
            "wake_at = CASE WHEN %(final)s THEN NULL ELSE wake_at END "
            "WHERE id = %(id)s AND phase = ANY(%(sources)s) RETURNING *",
            {
                "id": id,
                "phase": phase.value,
                "message": message,
                "outputs": Jsonb(dict(outputs)) if outputs is not None else None,
                "failure": Jsonb(dict(failure)) if failure is not None else None,
                "started": phase in _STARTED,
                "final": phase in FINAL_PHASES,
                "sources": PHASES.sources_sql(phase, among=_UNFINISHED),
            },
        )
        return await cur.fetchone()


# -- triggers ------------------------------------------------------------------------------
async def upsert_event_trigger(
    conn: AsyncConnection[Any],
    *,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    k8s_uid: uuid.UUID | None = None,
) -> tuple[EventTrigger, bool]:
    """Make the live trigger (namespace, name) match ``spec`` (an EventTrigger spec as
    canonical JSON); (row, changed). An unchanged spec writes nothing."""
    digest = versions.spec_hash(spec)
    workflow = spec.get("workflowRef") or {}
    schedule = spec.get("schedule") or {}
    params = {
        "namespace": namespace,
        "name": name,
        "k8s_uid": k8s_uid,
        "event_type": spec.get("eventType"),
        "schedule": schedule.get("cron"),
        "filter": spec.get("filter"),
        "workflow_name": workflow.get("name"),
        "workflow_version": workflow.get("version"),
        "arguments": Jsonb(dict(spec.get("arguments") or {})),
        "concurrency_policy": spec.get("concurrencyPolicy", "Allow"),
        "spec": Jsonb(dict(spec)),
        "spec_hash": digest,
        "enabled": not spec.get("suspend", False),
    }
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "INSERT INTO workflow_orchestrator_service.workflow_event_triggers "
            "(namespace, name, k8s_uid, event_type, schedule, filter, workflow_name, "
            " workflow_version, arguments, concurrency_policy, spec, spec_hash, enabled) "
            "VALUES (%(namespace)s, %(name)s, %(k8s_uid)s, %(event_type)s, %(schedule)s, "
            " %(filter)s, %(workflow_name)s, %(workflow_version)s, %(arguments)s, "
            " %(concurrency_policy)s, %(spec)s, %(spec_hash)s, %(enabled)s) "
            "ON CONFLICT (namespace, name) WHERE deleted_at IS NULL DO UPDATE SET "
            "k8s_uid = excluded.k8s_uid, event_type = excluded.event_type, "
            "schedule = excluded.schedule, filter = excluded.filter, "
            "workflow_name = excluded.workflow_name, "
            "workflow_version = excluded.workflow_version, arguments = excluded.arguments, "
            "concurrency_policy = excluded.concurrency_policy, spec = excluded.spec, "
            "spec_hash = excluded.spec_hash, enabled = excluded.enabled, updated_at = now() "
            "WHERE workflow_event_triggers.spec_hash IS DISTINCT FROM excluded.spec_hash "
            "OR workflow_event_triggers.k8s_uid IS DISTINCT FROM excluded.k8s_uid "
            "RETURNING *",
            params,
        )
        row = await cur.fetchone()
    if row is not None:
        return row, True
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE namespace = %s AND name = %s AND deleted_at IS NULL",
            (namespace, name),
        )
        existing = await cur.fetchone()
    assert existing is not None  # the conflict was on this live row
    return existing, False


async def event_trigger_by_name(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> EventTrigger | None:
    """The stored EventTrigger of that name (None when missing or deleted)."""
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE namespace = %s AND name = %s AND deleted_at IS NULL",
            (namespace, name),
        )
        return await cur.fetchone()


async def delete_event_trigger(conn: AsyncConnection[Any], namespace: str, name: str) -> bool:
    cur = await conn.execute(
        "UPDATE workflow_orchestrator_service.workflow_event_triggers SET deleted_at = now(), "
        "updated_at = now() WHERE namespace = %s AND name = %s AND deleted_at IS NULL",
        (namespace, name),
    )
    return cur.rowcount > 0


async def matching_triggers(
    conn: AsyncConnection[Any], *, namespace: str, event_type: str
) -> list[EventTrigger]:
    """Live, enabled triggers of the namespace for this event type (their CEL filters are
    evaluated by the dispatcher, which holds the event)."""
    async with conn.cursor(row_factory=class_row(EventTrigger)) as cur:
        await cur.execute(
            "SELECT * FROM workflow_orchestrator_service.workflow_event_triggers "
            "WHERE event_type = %s AND namespace = %s AND deleted_at IS NULL AND enabled "
            "ORDER BY name",
            (event_type, namespace),
        )
        return await cur.fetchall()


# -- subscriptions -------------------------------------------------------------------------
_SUBSCRIPTIONS = "workflow_orchestrator_service.workflow_event_subscriptions"
_ACTIVE_PHASES = [
    p.value for p in (WorkflowPhase.PENDING, WorkflowPhase.RUNNING, WorkflowPhase.SUSPENDED)
]


async def subscribe(
    conn: AsyncConnection[Any],
    *,
    workflow_instance_id: uuid.UUID,
    task_name: str,
    attempt: int,
    event_type: str,
    subject: str | None = None,
    event_source: str | None = None,
    filter: Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
) -> tuple[EventSubscription, bool]:
    """Register a task attempt's wait for an event, expiring ``timeout_seconds`` from now
    (the database's clock, the one matching and expiry compare with); idempotent per
    (instance, task, attempt): a repeated call returns the existing row as it is."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"INSERT INTO {_SUBSCRIPTIONS} "
            "(workflow_instance_id, task_name, attempt, event_type, subject, event_source, "
            " filter, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, "
            " now() + make_interval(secs => %s)) "
            "ON CONFLICT (workflow_instance_id, task_name, attempt) DO NOTHING RETURNING *",
            (
                workflow_instance_id,
                task_name,
                attempt,
                event_type,
                subject,
                event_source,
                Jsonb(dict(filter or {})),
                timeout_seconds,
            ),
        )
        created = await cur.fetchone()
        if created is not None:
            return created, True
        await cur.execute(
            f"SELECT * FROM {_SUBSCRIPTIONS} "
            "WHERE workflow_instance_id = %s AND task_name = %s AND attempt = %s",
            (workflow_instance_id, task_name, attempt),
        )
        existing = await cur.fetchone()
    assert existing is not None
    return existing, False


async def subscriptions_of_instance(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID
) -> list[EventSubscription]:
    """Every subscription of one run, by task then attempt."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"SELECT * FROM {_SUBSCRIPTIONS} WHERE workflow_instance_id = %s "
            "ORDER BY task_name, attempt",
            (workflow_instance_id,),
        )
        return await cur.fetchall()


async def waiting_subscriptions(
    conn: AsyncConnection[Any], *, namespace: str, event_type: str, subject: str | None
) -> list[EventSubscription]:
    """The subscriptions an event of this namespace, type and subject may complete: still
    waiting, not past their expiry, of an unfinished run; oldest first. Their correlations
    are evaluated by the caller, which holds the event."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"SELECT s.* FROM {_SUBSCRIPTIONS} s "
            "JOIN workflow_orchestrator_service.workflow_instances i "
            "ON i.id = s.workflow_instance_id "
            "WHERE s.status = 'Waiting' AND s.event_type = %s "
            "AND (s.subject IS NULL OR s.subject = %s) "
            "AND (s.expires_at IS NULL OR s.expires_at > now()) "
            "AND i.namespace = %s AND i.phase = ANY(%s) "
            "ORDER BY s.created_at, s.id",
            (event_type, subject, namespace, _ACTIVE_PHASES),
        )
        return await cur.fetchall()


async def matched_by(conn: AsyncConnection[Any], event_id: uuid.UUID) -> list[EventSubscription]:
    """The subscriptions this event already matched (a redelivered event finishes them)."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"SELECT * FROM {_SUBSCRIPTIONS} WHERE matched_event_id = %s ORDER BY created_at, id",
            (event_id,),
        )
        return await cur.fetchall()


async def mark_matched(
    conn: AsyncConnection[Any],
    id: uuid.UUID,
    *,
    event_id: uuid.UUID,
    outputs: Mapping[str, Any],
) -> EventSubscription | None:
    """Complete a waiting subscription with this event; None when it is no longer waiting
    (another event came first, it expired or was cancelled): the first event wins."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"UPDATE {_SUBSCRIPTIONS} SET status = 'Matched', matched_event_id = %s, "
            "outputs = %s, resolved_at = now() WHERE id = %s AND status = ANY(%s) "
            "AND (expires_at IS NULL OR expires_at > now()) RETURNING *",
            (
                event_id,
                Jsonb(dict(outputs)),
                id,
                SUBSCRIPTIONS.sources_sql(SubscriptionStatus.MATCHED),
            ),
        )
        return await cur.fetchone()


async def expire_due(
    conn: AsyncConnection[Any], *, namespaces: Sequence[str] | None = None, limit: int = 500
) -> list[EventSubscription]:
    """Mark waiting subscriptions past their ``expires_at`` Expired (at most ``limit``, the
    earliest first, of runs in ``namespaces`` if given); several operators may run this at
    once without doing one twice."""
    async with conn.cursor(row_factory=class_row(EventSubscription)) as cur:
        await cur.execute(
            f"UPDATE {_SUBSCRIPTIONS} SET status = 'Expired', resolved_at = now() "
            f"WHERE id IN (SELECT s.id FROM {_SUBSCRIPTIONS} s "
            " JOIN workflow_orchestrator_service.workflow_instances i "
            " ON i.id = s.workflow_instance_id "
            " WHERE s.status = 'Waiting' AND s.expires_at <= now() "
            " AND (%(namespaces)s::text[] IS NULL OR i.namespace = ANY(%(namespaces)s)) "
            " ORDER BY s.expires_at LIMIT %(limit)s FOR UPDATE OF s SKIP LOCKED) "
            "AND status = ANY(%(sources)s) RETURNING *",
            {
                "namespaces": list(namespaces) if namespaces is not None else None,
                "limit": limit,
                "sources": SUBSCRIPTIONS.sources_sql(SubscriptionStatus.EXPIRED),
            },
        )
        return await cur.fetchall()


async def cancel_subscriptions(conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID) -> int:
    """Cancel every waiting subscription of a run (it was cancelled or has ended)."""
    cur = await conn.execute(
        f"UPDATE {_SUBSCRIPTIONS} SET status = 'Cancelled', resolved_at = now() "
        "WHERE workflow_instance_id = %s AND status = ANY(%s)",
        (workflow_instance_id, SUBSCRIPTIONS.sources_sql(SubscriptionStatus.CANCELLED)),
    )
    return cur.rowcount


async def reopen_for_retry(
    conn: AsyncConnection[Any], id: uuid.UUID, retries: int
) -> WorkflowInstance | None:
    """Move a Failed (or Error) run back to Running as retry number ``retries``; None when
    it is not failed or that retry was already done (idempotent). The run starts afresh:
    started_at (and with it the workflow's timeout) counts from now."""
    async with conn.cursor(row_factory=class_row(WorkflowInstance)) as cur:
        await cur.execute(
            "UPDATE workflow_orchestrator_service.workflow_instances SET phase = 'Running', "
            "finished_at = NULL, failure = NULL, message = %s, retries = %s, updated_at = now(), "
            "started_at = now() "
            "WHERE id = %s AND phase = ANY(%s) AND retries < %s RETURNING *",
            (
                f"retry {retries}",
                retries,
                id,
                PHASES.sources_sql(WorkflowPhase.RUNNING, among=RETRYABLE_PHASES),
                retries,
            ),
        )
        return await cur.fetchone()


# -- deadlines -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DueRun:
    id: uuid.UUID
    namespace: str
    name: str


async def unfinished_runs(
    conn: AsyncConnection[Any], namespaces: Sequence[str] | None = None
) -> list[DueRun]:
    """The runs not yet ended (index workflow_instances_unfinished), of ``namespaces``."""
    async with conn.cursor(row_factory=class_row(DueRun)) as cur:
        await cur.execute(
            "SELECT id, namespace, name FROM workflow_orchestrator_service.workflow_instances "
            "WHERE phase IN ('Pending', 'Running', 'Suspended') "
            "AND (%(namespaces)s::text[] IS NULL OR namespace = ANY(%(namespaces)s))",
            {"namespaces": list(namespaces) if namespaces is not None else None},
        )
        return await cur.fetchall()


async def set_wake_at(
    conn: AsyncConnection[Any],
    id: uuid.UUID,
    wake_at: datetime | None,
    *,
    seen: datetime | None,
) -> datetime | None:
    """Record when an unfinished run must next be advanced by itself; returns what is
    stored now.

    ``seen`` is the wake_at the caller read before it looked at the run's tasks. If it
    changed since (another advance or a claim wrote meanwhile), that writer may have seen
    a deadline the caller did not: the earlier of the two is kept, so no deadline is ever
    dropped (an early wake costs one idle advance, a lost one strands the run).
    """
    cur = await conn.execute(
        "UPDATE workflow_orchestrator_service.workflow_instances SET wake_at = "
        "CASE WHEN wake_at IS NOT DISTINCT FROM %(seen)s THEN %(wake)s "
        "ELSE least(wake_at, %(wake)s) END "
        "WHERE id = %(id)s AND phase <> ALL(%(finals)s) RETURNING wake_at",
        {
            "id": id,
            "wake": wake_at,
            "seen": seen,
            "finals": [p.value for p in FINAL_PHASES],
        },
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def claim_due_runs(
    conn: AsyncConnection[Any],
    *,
    lease_seconds: float,
    namespaces: Sequence[str] | None = None,
    limit: int = 100,
) -> list[DueRun]:
    """Claim the runs whose wake_at has passed (at most ``limit``, the earliest first),
    moving it ``lease_seconds`` ahead: any number of replicas may do this at once, each
    due run is claimed by one, and a claimant that dies before advancing the run lets
    another claim it when the lease runs out. ``namespaces`` limits it to those."""
    async with conn.cursor(row_factory=class_row(DueRun)) as cur:
        await cur.execute(
            "UPDATE workflow_orchestrator_service.workflow_instances "
            "SET wake_at = now() + make_interval(secs => %(lease)s) "
            "WHERE id IN (SELECT id FROM workflow_orchestrator_service.workflow_instances "
            " WHERE wake_at <= now() "
            " AND (%(namespaces)s::text[] IS NULL OR namespace = ANY(%(namespaces)s)) "
            " ORDER BY wake_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "RETURNING id, namespace, name",
            {
                "lease": lease_seconds,
                "namespaces": list(namespaces) if namespaces is not None else None,
                "limit": limit,
            },
        )
        return await cur.fetchall()


async def next_deadline(
    conn: AsyncConnection[Any], namespaces: Sequence[str] | None = None
) -> float | None:
    """Seconds (by the database's clock) until the next deadline of any run: a run's
    wake_at or a waiting subscription's expiry; 0 when one is overdue, None when none."""
    cur = await conn.execute(
        "SELECT extract(epoch FROM least("
        " (SELECT min(wake_at) FROM workflow_orchestrator_service.workflow_instances"
        "  WHERE wake_at IS NOT NULL"
        "  AND (%(namespaces)s::text[] IS NULL OR namespace = ANY(%(namespaces)s))),"
        f" (SELECT min(s.expires_at) FROM {_SUBSCRIPTIONS} s"
        "  JOIN workflow_orchestrator_service.workflow_instances i"
        "  ON i.id = s.workflow_instance_id"
        "  WHERE s.status = 'Waiting' AND s.expires_at IS NOT NULL"
        "  AND (%(namespaces)s::text[] IS NULL OR i.namespace = ANY(%(namespaces)s))))"
        " - now())::float8",
        {"namespaces": list(namespaces) if namespaces is not None else None},
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else max(float(row[0]), 0.0)
