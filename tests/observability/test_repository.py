"""Observability repository and partition upkeep, connected as the component's own role."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from plait.observability import repository as repo
from plait.observability.states import LogLevel, MetricKind, SpanStatus
from tests.fixtures.database import ConnectAs

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("observability")


async def partitions(conn: psycopg.AsyncConnection, table: str) -> list[str]:
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY 1",
        (f"observability_service.{table}",),
    )
    return [r[0] for r in await cur.fetchall()]


async def test_writes_land_in_daily_partitions_and_read_back(conn: psycopg.AsyncConnection) -> None:
    now = datetime.now(UTC)
    wf = uuid.uuid4()
    await repo.copy_logs(
        conn,
        [
            repo.LogRecord(
                now, LogLevel.INFO, "task_execution", "started", workflow_instance_id=wf
            ),
            repo.LogRecord(
                now + timedelta(seconds=1),
                LogLevel.ERROR,
                "task_execution",
                "failed",
                workflow_instance_id=wf,
                trace_id=TRACE,
            ),
        ],
    )
    await repo.insert_metrics(
        conn,
        [
            repo.MetricSample(
                now,
                "plait_tasks_total",
                MetricKind.COUNTER,
                3.0,
                "task_execution",
                labels={"namespace": "ci"},
            ),
        ],
    )
    await repo.copy_spans(
        conn,
        [
            repo.Span(
                now,
                now + timedelta(seconds=2),
                TRACE,
                "b7ad6b7169203331",
                "run",
                "orchestrator",
                status_code=SpanStatus.OK,
                events=[{"name": "start"}],
            ),
        ],
    )
    logs = await repo.logs_of_instance(conn, wf)
    assert [(r.level, r.message) for r in logs] == [
        (LogLevel.INFO, "started"),
        (LogLevel.ERROR, "failed"),
    ]
    [span] = await repo.spans_of_trace(conn, TRACE)
    assert span.status_code is SpanStatus.OK
    assert span.events == [{"name": "start"}]
    today = f"observability_logs_p{now:%Y%m%d}"
    cur = await conn.execute(
        "SELECT tableoid::regclass::text FROM observability_service.observability_logs LIMIT 1"
    )
    assert await cur.fetchone() == (f"observability_service.{today}",)


async def test_ensure_is_idempotent_and_drop_removes_old_days(
    conn: psycopg.AsyncConnection,
) -> None:
    await repo.ensure_partitions(conn, days_ahead=7)  # the template may be from yesterday
    assert await repo.ensure_partitions(conn, days_ahead=7) == 0
    assert await repo.ensure_partitions(conn, days_ahead=9) == 6  # two more days x 3 tables
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    yesterday = today - timedelta(days=1)
    await repo.insert_metrics(
        conn,
        [
            repo.MetricSample(
                datetime.now(UTC) - timedelta(days=400), "old", MetricKind.GAUGE, 1.0, "api"
            ),
        ],
    )
    assert await repo.drop_partitions_before(conn, tomorrow) == 6  # yesterday, today x 3 tables
    after = await partitions(conn, "observability_metrics")
    assert f"observability_metrics_p{yesterday:%Y%m%d}" not in after
    assert f"observability_metrics_p{today:%Y%m%d}" not in after
    assert f"observability_metrics_p{tomorrow:%Y%m%d}" in after
    assert "observability_metrics_default" in after
    cur = await conn.execute("SELECT count(*) FROM observability_service.observability_metrics")
    assert await cur.fetchone() == (0,)  # the 400-day-old sample in the default partition went too
    # upkeep recreates yesterday and today, then drops yesterday again (retention 0 days)
    assert await repo.maintain_partitions(conn, retention_days=0, days_ahead=9) == (6, 3)


async def test_unknown_level_is_rejected(conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="level_known"):
        await conn.execute(
            "INSERT INTO observability_service.observability_logs (level, component, message) "
            "VALUES ('LOUD', 'api', 'x')"
        )
