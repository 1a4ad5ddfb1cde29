"""SQL of observability: batched writes, instance-scoped reads, and partition upkeep.

Partition upkeep calls SECURITY DEFINER functions from the migration, so the component's
own role (which can only read and write rows) can create tomorrow's partitions and drop
expired ones; run :func:`maintain_partitions` daily (e.g. on a timer in the operator).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus

__all__ = [
    "LogRecord",
    "MetricSample",
    "Span",
    "drop_partitions_before",
    "ensure_partitions",
    "insert_logs",
    "insert_metrics",
    "insert_spans",
    "logs_of_instance",
    "maintain_partitions",
    "spans_of_trace",
]


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


async def insert_logs(conn: AsyncConnection[Any], records: Sequence[LogRecord]) -> None:
    """Append a batch of log records (one round trip per batch, pipelined)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO observability_service.observability_logs (time, level, component, "
            "logger, message, attributes, namespace, workflow_instance_id, task_instance_id, "
            "trace_id, span_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    r.time,
                    r.level.value,
                    r.component,
                    r.logger,
                    r.message,
                    Jsonb(dict(r.attributes)),
                    r.namespace,
                    r.workflow_instance_id,
                    r.task_instance_id,
                    r.trace_id,
                    r.span_id,
                )
                for r in records
            ],
        )


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


async def insert_spans(conn: AsyncConnection[Any], spans: Sequence[Span]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO observability_service.observability_traces (start_time, end_time, "
            "trace_id, span_id, parent_span_id, name, kind, status_code, status_message, "
            "component, attributes, events, workflow_instance_id) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
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
                    Jsonb(dict(s.attributes)),
                    Jsonb([dict(e) for e in s.events]),
                    s.workflow_instance_id,
                )
                for s in spans
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
