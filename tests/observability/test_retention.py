"""Retention drops whole old partitions per table, keeps recent ones, and never waits long."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from plait.observability import repository as repo
from plait.observability.batching import DsnConnections
from plait.observability.retention import (
    RETENTION_LOCK_KEY,
    RetentionSettings,
    enforce_retention,
)

TODAY = dt.datetime.now(dt.UTC).date()


async def make_partition(superuser_dsn: str, table: str, day: dt.date) -> str:
    """An old daily partition, created as the schema's owner (as ensure_partitions would)."""
    name = f"{table}_p{day:%Y%m%d}"
    async with await psycopg.AsyncConnection.connect(superuser_dsn, autocommit=True) as conn:
        await conn.execute("SET ROLE plait_owner")
        await conn.execute(
            f"CREATE TABLE observability_service.{name} PARTITION OF "
            f"observability_service.{table} "
            f"FOR VALUES FROM ('{day}') TO ('{day + dt.timedelta(days=1)}')"
        )
    return name


async def names(conn: psycopg.AsyncConnection, table: str) -> set[str]:
    return {p.partition_name for p in await repo.list_partitions(conn, table)}


async def test_old_partitions_are_dropped_per_table_and_recent_ones_kept(
    migrated_database: str, obs_conn: psycopg.AsyncConnection, connections: DsnConnections
) -> None:
    old_log = await make_partition(
        migrated_database, "observability_logs", TODAY - dt.timedelta(days=10)
    )
    old_metric = await make_partition(
        migrated_database, "observability_metrics", TODAY - dt.timedelta(days=10)
    )
    kept_metric = await make_partition(
        migrated_database, "observability_metrics", TODAY - dt.timedelta(days=20)
    )
    ancient_metric = await make_partition(
        migrated_database, "observability_metrics", TODAY - dt.timedelta(days=40)
    )
    # A row older than every partition lands in the DEFAULT partition.
    await obs_conn.execute(
        "INSERT INTO observability_service.observability_traces (start_time, end_time, trace_id, "
        "span_id, name, component) VALUES (now() - interval '30 days', now() - interval '30 days', "
        "repeat('a', 32), repeat('b', 16), 'old', 'operator')"
    )
    settings = RetentionSettings(logs_days=7, metrics_days=30, traces_days=7, days_ahead=5)
    result = await enforce_retention(connections, settings)
    assert result.ran
    assert sorted(result.dropped) == sorted([old_log, ancient_metric])
    assert result.skipped == []
    assert result.default_rows_deleted == 1
    logs = await names(obs_conn, "observability_logs")
    metrics = await names(obs_conn, "observability_metrics")
    assert old_log not in logs
    assert {old_metric, kept_metric} <= metrics
    assert ancient_metric not in metrics
    for table in repo.TABLES:
        kept = await names(obs_conn, table)
        for ahead in range(6):
            assert f"{table}_p{TODAY + dt.timedelta(days=ahead):%Y%m%d}" in kept
    again = await enforce_retention(connections, settings)
    assert (again.dropped, again.created) == ([], 0)


async def test_a_busy_partition_is_skipped_not_waited_for(
    migrated_database: str, obs_dsn: str, connections: DsnConnections
) -> None:
    old = await make_partition(
        migrated_database, "observability_logs", TODAY - dt.timedelta(days=9)
    )
    async with await psycopg.AsyncConnection.connect(obs_dsn) as reader:
        # An open transaction reading the table holds a lock DROP must wait for.
        await reader.execute("SELECT count(*) FROM observability_service.observability_logs")
        result = await enforce_retention(connections, RetentionSettings(lock_timeout_ms=100))
        assert result.skipped == [old]
        assert result.dropped == []
        await reader.rollback()
    result = await enforce_retention(connections, RetentionSettings(lock_timeout_ms=100))
    assert result.dropped == [old]


async def test_one_replica_at_a_time(obs_dsn: str, connections: DsnConnections) -> None:
    async with await psycopg.AsyncConnection.connect(obs_dsn, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        assert not (await enforce_retention(connections)).ran
        await other.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
    assert (await enforce_retention(connections)).ran


async def test_drop_partition_refuses_other_tables(obs_conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a daily observability"):
        await repo.drop_partition(obs_conn, "observability_logs_default")
    assert not await repo.drop_partition(obs_conn, "observability_logs_p19990101")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="logs_days must be at least 1"):
        RetentionSettings(logs_days=0)
