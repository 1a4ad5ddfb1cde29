"""SQL of observability: batched writes, instance-scoped reads, and partition upkeep.

Partition upkeep calls SECURITY DEFINER functions from the migration, so the component's
own role (which can only read and write rows) can create tomorrow's partitions and drop
expired ones; run :func:`maintain_partitions` daily (e.g. on a timer in the operator).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus

__all__ = [
    "TABLES",
    "LogQuery",
    "LogRecord",
    "MetricSample",
    "Partition",
    "Span",
    "TaskLogPosition",
    "TraceSummary",
    "copy_logs",
    "copy_spans",
    "drop_partition",
    "drop_partitions_before",
    "ensure_partitions",
    "find_traces",
    "insert_metrics",
    "list_partitions",
    "list_traces",
    "logs_of_instance",
    "maintain_partitions",
    "purge_default_partition",
    "search_logs",
    "spans_of_trace",
    "task_log_position",
]

#: The three tables and their time (partition key) column.
TABLES: Mapping[str, str] = {
    "observability_logs": "time",
    "observability_metrics": "time",
    "observability_traces": "start_time",
}


@dataclass(frozen=True, slots=True)
class LogRecord:
    time: datetime
    level: LogLevel
    component: str
    message: str
    logger: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    namespace: str | None = None
    workflow_instance_id: uuid.UUID | None = None
    task_instance_id: uuid.UUID | None = None
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(frozen=True, slots=True)
class MetricSample:
    time: datetime
    name: str
    kind: MetricKind
    value: float
    component: str
    labels: Mapping[str, str] = field(default_factory=dict)
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class Span:
    start_time: datetime
    end_time: datetime
    trace_id: str
    span_id: str
    name: str
    component: str
    parent_span_id: str | None = None
    kind: SpanKind = SpanKind.INTERNAL
    status_code: SpanStatus = SpanStatus.UNSET
    status_message: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[Mapping[str, Any]] = ()
    workflow_instance_id: uuid.UUID | None = None


async def insert_metrics(conn: AsyncConnection[Any], samples: Sequence[MetricSample]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO observability_service.observability_metrics (time, name, kind, value, "
            "labels, unit, component) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (s.time, s.name, s.kind.value, s.value, Jsonb(dict(s.labels)), s.unit, s.component)
                for s in samples
            ],
        )


def _log(row: Mapping[str, Any]) -> LogRecord:
    return LogRecord(**{**row, "level": LogLevel(row["level"])})


async def logs_of_instance(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID, *, limit: int = 1000
) -> list[LogRecord]:
    """A run's log records in time order (index observability_logs_instance)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT time, level, component, logger, message, attributes, namespace, "
            "workflow_instance_id, task_instance_id, trace_id, span_id "
            "FROM observability_service.observability_logs WHERE workflow_instance_id = %s "
            "ORDER BY time LIMIT %s",
            (workflow_instance_id, limit),
        )
        rows = await cur.fetchall()
    return [_log(row) for row in rows]


async def spans_of_trace(conn: AsyncConnection[Any], trace_id: str) -> list[Span]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT start_time, end_time, trace_id, span_id, parent_span_id, name, component, "
            "kind, status_code, status_message, attributes, events, workflow_instance_id "
            "FROM observability_service.observability_traces WHERE trace_id = %s "
            "ORDER BY start_time",
            (trace_id,),
        )
        rows = await cur.fetchall()
    return [
        Span(
            **{**row, "kind": SpanKind(row["kind"]), "status_code": SpanStatus(row["status_code"])}
        )
        for row in rows
    ]


async def ensure_partitions(conn: AsyncConnection[Any], days_ahead: int = 7) -> int:
    """Create the daily partitions up to ``days_ahead`` days ahead; how many were created."""
    cur = await conn.execute("SELECT observability_service.ensure_partitions(%s)", (days_ahead,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def drop_partitions_before(conn: AsyncConnection[Any], cutoff: date) -> int:
    """Drop the partitions of UTC days before ``cutoff``; how many were dropped."""
    cur = await conn.execute("SELECT observability_service.drop_partitions_before(%s)", (cutoff,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def maintain_partitions(
    conn: AsyncConnection[Any], *, retention_days: int = 14, days_ahead: int = 7
) -> tuple[int, int]:
    """The daily upkeep: (partitions created, partitions dropped)."""
    created = await ensure_partitions(conn, days_ahead)
    cutoff = datetime.now(UTC).date() - timedelta(days=retention_days)
    return created, await drop_partitions_before(conn, cutoff)


#: Made once: ``json.dumps`` with any argument of its own builds an encoder per call.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _jsonb(value: Any) -> Jsonb:
    """JSONB that never fails on a value json cannot encode (it becomes its str())."""
    return Jsonb(value, dumps=functools.partial(_dumps))


async def copy_logs(conn: AsyncConnection[Any], records: Sequence[LogRecord]) -> None:
    """Append a batch of log records with COPY (the shipper's write: one statement per batch)."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY observability_service.observability_logs (time, level, component, logger, "
            "message, attributes, namespace, workflow_instance_id, task_instance_id, trace_id, "
            "span_id) FROM STDIN"
        ) as copy,
    ):
        for r in records:
            await copy.write_row(
                (
                    r.time,
                    r.level.value,
                    r.component,
                    r.logger,
                    r.message,
                    _jsonb(dict(r.attributes)),
                    r.namespace,
                    r.workflow_instance_id,
                    r.task_instance_id,
                    r.trace_id,
                    r.span_id,
                )
            )


async def copy_spans(conn: AsyncConnection[Any], spans: Sequence[Span]) -> None:
    """Append a batch of finished spans with COPY."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY observability_service.observability_traces (start_time, end_time, trace_id, "
            "span_id, parent_span_id, name, kind, status_code, status_message, component, "
            "attributes, events, workflow_instance_id) FROM STDIN"
        ) as copy,
    ):
        for s in spans:
            await copy.write_row(
                (
                    s.start_time,
                    s.end_time,
                    s.trace_id,
                    s.span_id,
                    s.parent_span_id,
                    s.name,
                    s.kind.value,
                    s.status_code.value,
                    s.status_message,
                    s.component,
                    # COPY's text format takes a jsonb column's text as is: dumped here.
                    _dumps(dict(s.attributes)),
                    _dumps([dict(e) for e in s.events]) if s.events else "[]",
                    s.workflow_instance_id,
                )
            )


# -- retention ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    parent: str
    partition_name: str
    day: date | None
    total_bytes: int


async def list_partitions(conn: AsyncConnection[Any], parent: str | None = None) -> list[Partition]:
    """Partitions of the observability tables (view ``partitions``), oldest day first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT parent, partition_name, day, total_bytes FROM observability_service.partitions "
            "WHERE %(parent)s::text IS NULL OR parent = %(parent)s "
            "ORDER BY parent, day NULLS FIRST",
            {"parent": parent},
        )
        rows = await cur.fetchall()
    return [Partition(**row) for row in rows]


async def drop_partition(
    conn: AsyncConnection[Any], partition_name: str, *, lock_timeout_ms: int = 2000
) -> bool:
    """Drop one daily partition in its own short transaction; False if it was already gone.

    Raises ``psycopg.errors.LockNotAvailable`` when the table stayed busy past
    ``lock_timeout_ms``: the caller skips it and tries again on its next run.
    """
    async with conn.transaction():
        await conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms"))
        )
        cur = await conn.execute(
            "SELECT observability_service.drop_partition(%s)", (partition_name,)
        )
        row = await cur.fetchone()
    return bool(row and row[0])


async def purge_default_partition(
    conn: AsyncConnection[Any], parent: str, cutoff: datetime, *, batch: int = 5000
) -> int:
    """Delete rows older than ``cutoff`` from ``parent``'s DEFAULT partition, in batches."""
    if parent not in TABLES:
        raise ValueError(f"unknown observability table {parent!r}")
    table = sql.Identifier("observability_service", f"{parent}_default")
    query = sql.SQL(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM {table} WHERE {col} < %s LIMIT %s))"
    ).format(table=table, col=sql.Identifier(TABLES[parent]))
    total = 0
    while True:
        cur = await conn.execute(query, (cutoff, batch))
        total += cur.rowcount
        if cur.rowcount < batch:
            return total


# -- reads for the CLI -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Filters of ``plait logs``; all optional, combined with AND."""

    since: datetime | None = None
    after: datetime | None = None
    component: str | None = None
    min_level: LogLevel | None = None
    namespace: str | None = None
    trace_ids: Sequence[str] = ()
    workflow_instance_ids: Sequence[uuid.UUID] = ()
    object_name: str | None = None
    task: str | None = None
    limit: int = 1000


_LEVEL_ORDER = list(LogLevel)


async def search_logs(conn: AsyncConnection[Any], q: LogQuery) -> list[LogRecord]:
    """Log records matching ``q``, oldest first (the newest ``limit`` of them)."""
    where: list[sql.Composable] = []
    params: dict[str, Any] = {"limit": q.limit}
    if q.since is not None:
        where.append(sql.SQL("time >= %(since)s"))
        params["since"] = q.since
    if q.after is not None:
        where.append(sql.SQL("time > %(after)s"))
        params["after"] = q.after
    if q.component:
        where.append(sql.SQL("component = %(component)s"))
        params["component"] = q.component
    if q.min_level is not None:
        where.append(sql.SQL("level = ANY(%(levels)s)"))
        params["levels"] = [lv.value for lv in _LEVEL_ORDER[_LEVEL_ORDER.index(q.min_level) :]]
    if q.namespace and not (q.trace_ids or q.workflow_instance_ids or q.object_name):
        where.append(sql.SQL("namespace = %(namespace)s"))
        params["namespace"] = q.namespace
    # An instance is found by any of: its uid, its trace, or its name in its namespace.
    about: list[sql.Composable] = []
    if q.trace_ids:
        about.append(sql.SQL("trace_id = ANY(%(trace_ids)s)"))
        params["trace_ids"] = list(q.trace_ids)
    if q.workflow_instance_ids:
        about.append(sql.SQL("workflow_instance_id = ANY(%(uids)s)"))
        params["uids"] = list(q.workflow_instance_ids)
    if q.object_name:
        about.append(
            sql.SQL(
                "(namespace IS NOT DISTINCT FROM %(namespace)s "
                "AND attributes->>'object' = %(object)s)"
            )
        )
        params["namespace"], params["object"] = q.namespace, q.object_name
    if about:
        where.append(sql.SQL("({})").format(sql.SQL(" OR ").join(about)))
    if q.task:
        where.append(sql.SQL("attributes->>'task' = %(task)s"))
        params["task"] = q.task
    # A task's lines can share a microsecond: their "seq" keeps them in the order printed.
    query = sql.SQL(
        "SELECT time, level, component, logger, message, attributes, namespace, "
        "workflow_instance_id, task_instance_id, trace_id, span_id FROM ("
        "SELECT *, (attributes->>'seq')::bigint AS seq "
        "FROM observability_service.observability_logs WHERE {where} "
        "ORDER BY time DESC, seq DESC NULLS LAST LIMIT %(limit)s) newest "
        "ORDER BY time, seq NULLS FIRST"
    ).format(where=sql.SQL(" AND ").join(where) if where else sql.SQL("true"))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return [_log(row) for row in rows]


async def find_traces(
    conn: AsyncConnection[Any], namespace: str | None, instance: str
) -> list[tuple[str, uuid.UUID | None]]:
    """(trace id, instance uid) of a run named ``instance`` (or with that uid or trace id).

    Newest first; a name reused by several runs over time yields several traces.
    """
    params: dict[str, Any] = {"instance": instance, "namespace": namespace}
    clauses = [
        "(attributes ? 'plait.instance' AND attributes->>'plait.instance' = %(instance)s "
        "AND (%(namespace)s::text IS NULL OR attributes->>'plait.namespace' = %(namespace)s))"
    ]
    try:
        params["uid"] = uuid.UUID(instance)
        clauses.append("workflow_instance_id = %(uid)s")
    except ValueError:
        pass
    if len(instance) == 32 and all(c in "0123456789abcdef" for c in instance):
        clauses.append("trace_id = %(instance)s")
    query = (
        "SELECT trace_id, (array_agg(workflow_instance_id) FILTER (WHERE workflow_instance_id "
        "IS NOT NULL))[1] AS uid, min(start_time) AS first "
        "FROM observability_service.observability_traces WHERE " + " OR ".join(clauses) + " "
        "GROUP BY trace_id ORDER BY first DESC"
    )
    async with conn.cursor() as cur:
        await cur.execute(query, params)
        rows = await cur.fetchall()
    return [(r[0], r[1]) for r in rows]


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    start_time: datetime
    end_time: datetime
    spans: int
    errors: int
    namespace: str | None
    instance: str | None
    workflow: str | None
    finished: bool


async def list_traces(
    conn: AsyncConnection[Any],
    *,
    since: datetime,
    namespace: str | None = None,
    limit: int = 20,
) -> list[TraceSummary]:
    """Traces of runs (spans naming an instance) started since ``since``, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT trace_id, min(start_time) AS start_time, max(end_time) AS end_time, "
            "count(*) AS spans, count(*) FILTER (WHERE status_code = 'ERROR') AS errors, "
            "max(attributes->>'plait.namespace') AS namespace, "
            "max(attributes->>'plait.instance') AS instance, "
            "max(attributes->>'plait.workflow.name') AS workflow, "
            "bool_or(name = 'plait.workflow') AS finished "
            "FROM observability_service.observability_traces "
            "WHERE start_time >= %(since)s AND attributes ? 'plait.instance' "
            "AND (%(namespace)s::text IS NULL OR attributes->>'plait.namespace' = %(namespace)s) "
            "GROUP BY trace_id ORDER BY min(start_time) DESC LIMIT %(limit)s",
            {"since": since, "namespace": namespace, "limit": limit},
        )
        rows = await cur.fetchall()
    return [TraceSummary(**row) for row in rows]


# -- task output -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskLogPosition:
    """How far a container's output was stored: where a follower resumes.

    ``last_time`` is the kubelet's timestamp of the last stored line, ``at_last_time`` how
    many stored lines carry exactly that time, ``seq`` the last line number; ``pod_bytes``
    and ``truncated`` are for the whole pod (the attempt), which shares one bound.
    """

    last_time: datetime | None = None
    at_last_time: int = 0
    seq: int = 0
    pod_bytes: int = 0
    truncated: bool = False


async def task_log_position(
    conn: AsyncConnection[Any], workflow_instance_id: uuid.UUID, pod: str, container: str
) -> TaskLogPosition:
    """Where the stored output of ``container`` in ``pod`` ends (found by the run's index)."""
    async with conn.cursor() as cur:
        await cur.execute(
            "SELECT coalesce(sum(octet_length(message)) "
            "FILTER (WHERE NOT attributes ? 'truncated'), 0), "
            "coalesce(bool_or(attributes ? 'truncated'), false), "
            "max(time) FILTER (WHERE attributes->>'container' = %(container)s "
            "AND NOT attributes ? 'truncated'), "
            "coalesce(max((attributes->>'seq')::bigint) "
            "FILTER (WHERE attributes->>'container' = %(container)s), 0) "
            "FROM observability_service.observability_logs "
            "WHERE workflow_instance_id = %(uid)s AND component = 'task' "
            "AND attributes->>'pod' = %(pod)s",
            {"uid": workflow_instance_id, "pod": pod, "container": container},
        )
        row = await cur.fetchone()
        assert row is not None
        pod_bytes, truncated, last_time, seq = row
        at_last = 0
        if last_time is not None:
            await cur.execute(
                "SELECT count(*) FROM observability_service.observability_logs "
                "WHERE workflow_instance_id = %(uid)s AND component = 'task' AND time = %(t)s "
                "AND attributes->>'pod' = %(pod)s AND attributes->>'container' = %(container)s "
                "AND NOT attributes ? 'truncated'",
                {"uid": workflow_instance_id, "pod": pod, "container": container, "t": last_time},
            )
            counted = await cur.fetchone()
            at_last = int(counted[0]) if counted else 0
    return TaskLogPosition(last_time, at_last, int(seq), int(pod_bytes), bool(truncated))
