"""Retention of the observability tables: whole daily partitions dropped, never row deletes.

:func:`enforce_retention` is what the operator's timer calls. Per table it drops the
partitions of UTC days older than the table's limit, one partition per short transaction
with ``lock_timeout`` set (a partition busy past it is skipped and retried on the next
run, instead of making every writer queue behind the DROP), deletes the few old rows that
landed in the DEFAULT partition in small batches, and makes sure the partitions of the next
days exist. A session advisory lock lets one replica do it while the others skip.

Events and task attempts are other components' tables: their retention (batched deletes,
``event_processing.repository.purge_events``, ``task_execution.repository.purge_task_attempts``)
belongs to those components.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg

from plait.observability import repository as repo
from plait.observability.batching import ConnectionFactory
from plait.observability.settings import ObservabilitySettings

__all__ = [
    "RETENTION_LOCK_KEY",
    "RetentionResult",
    "RetentionSettings",
    "RetentionTimer",
    "enforce_retention",
]

log = logging.getLogger(__name__)

#: Advisory lock key of retention ("plaitret" as a bigint), shared by every replica.
RETENTION_LOCK_KEY = int.from_bytes(b"plaitret", "big")


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """Days kept per table (whole UTC days: today counts as day 1)."""

    logs_days: int = 7
    metrics_days: int = 30
    traces_days: int = 7
    days_ahead: int = 3
    lock_timeout_ms: int = 2000

    def __post_init__(self) -> None:
        for name in ("logs_days", "metrics_days", "traces_days", "days_ahead"):
            if getattr(self, name) < 1:
                raise ValueError(f"retention {name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, settings: ObservabilitySettings) -> RetentionSettings:
        return cls(
            logs_days=settings.retention_logs_days,
            metrics_days=settings.retention_metrics_days,
            traces_days=settings.retention_traces_days,
            days_ahead=settings.partitions_days_ahead,
        )

    def days(self) -> Mapping[str, int]:
        return {
            "observability_logs": self.logs_days,
            "observability_metrics": self.metrics_days,
            "observability_traces": self.traces_days,
        }


@dataclass(slots=True)
class RetentionResult:
    ran: bool = True
    """False when another replica held the lock (nothing done)."""
    created: int = 0
    dropped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Partitions left for the next run because they stayed locked."""
    default_rows_deleted: int = 0


async def enforce_retention(
    connections: ConnectionFactory,
    settings: RetentionSettings | None = None,
    *,
    today: dt.date | None = None,
) -> RetentionResult:
    """Apply ``settings`` once. Safe to call from every replica at once."""
    settings = settings or RetentionSettings()
    today = today or dt.datetime.now(dt.UTC).date()
    result = RetentionResult()
    async with connections() as conn:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (RETENTION_LOCK_KEY,))
        row = await cur.fetchone()
        if not (row and row[0]):
            return RetentionResult(ran=False)
        try:
            await _enforce(conn, settings, today, result)
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("SELECT pg_advisory_unlock(%s)", (RETENTION_LOCK_KEY,))
    if result.dropped or result.skipped or result.default_rows_deleted:
        log.info(
            "retention: dropped %d partitions, skipped %d busy ones, deleted %d rows of "
            "default partitions, created %d partitions",
            len(result.dropped),
            len(result.skipped),
            result.default_rows_deleted,
            result.created,
        )
    return result


async def _enforce(
    conn: psycopg.AsyncConnection[object],
    settings: RetentionSettings,
    today: dt.date,
    result: RetentionResult,
) -> None:
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(settings.lock_timeout_ms)}ms'")
            result.created = await repo.ensure_partitions(conn, settings.days_ahead)
    except psycopg.errors.LockNotAvailable:
        log.warning("retention: tables busy, tomorrow's partitions not created this time")
    for table, days in settings.days().items():
        cutoff = today - dt.timedelta(days=days - 1)
        for part in await repo.list_partitions(conn, table):
            if part.day is None or part.day >= cutoff:
                continue
            try:
                if await repo.drop_partition(
                    conn, part.partition_name, lock_timeout_ms=settings.lock_timeout_ms
                ):
                    result.dropped.append(part.partition_name)
            except psycopg.errors.LockNotAvailable:
                result.skipped.append(part.partition_name)
        result.default_rows_deleted += await repo.purge_default_partition(
            conn, table, dt.datetime.combine(cutoff, dt.time(), dt.UTC)
        )


class RetentionTimer:
    """Runs :func:`enforce_retention` now and every ``interval`` s (the operator's timer)."""

    def __init__(
        self, connections: ConnectionFactory, settings: RetentionSettings, interval: float
    ) -> None:
        self._connections = connections
        self.settings = settings
        self.interval = interval
        self.last: RetentionResult | None = None
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                self.last = await enforce_retention(self._connections, self.settings)
            except Exception as exc:
                log.warning("retention run failed (%s); retrying later", type(exc).__name__)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="plait-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
