"""Shipping log records: in batches, bounded while PostgreSQL is down, resumed after."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from plait.kernel.components import component_by_name
from plait.kernel.migrations import migrate_database
from plait.observability import metrics
from plait.observability import repository as repo
from plait.observability.batching import BatchWriter, BoundedBuffer, DsnConnections
from plait.observability.logging import log_context
from plait.observability.settings import ObservabilitySettings
from plait.observability.shipper import LogShipper
from plait.observability.states import LogLevel
from plait.testing import PostgresServer
from tests.observability._util import eventually


async def count_rows(dsn: str, where: str = "true", *params: object) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM observability_service.observability_logs WHERE " + where,
            params,
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def has_rows(dsn: str, n: int, where: str, *params: object) -> bool:
    return await count_rows(dsn, where, *params) == n


def dropped_total(reason: str) -> float:
    return metrics.LOG_RECORDS_DROPPED.labels(reason)._value.get()


async def test_records_are_shipped_in_batches_with_their_context(
    obs_dsn: str, connections: DsnConnections
) -> None:
    settings = ObservabilitySettings(log_batch_size=50, log_flush_interval_ms=100)
    shipper = LogShipper(connections, settings)
    logger = logging.getLogger("plait.task_execution.shiptest")
    logger.setLevel(logging.INFO)
    shipper.start(logger)
    uid = uuid.uuid4()
    try:
        with log_context(namespace="ci", object="run-1", workflow_instance_id=uid):
            for i in range(120):
                logger.info("record %d", i, extra={"i": i, "password": "hunter2"})
        await eventually(
            lambda: has_rows(obs_dsn, 120, "workflow_instance_id = %s", uid),
            what="120 shipped records",
        )
    finally:
        await shipper.stop(logger=logger)
    assert shipper.writer.batches <= 4  # 50 + 50 + 20, maybe one more split by timing
    async with await psycopg.AsyncConnection.connect(obs_dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT component, namespace, level, message, attributes "
            "FROM observability_service.observability_logs WHERE workflow_instance_id = %s "
            "ORDER BY (attributes->>'i')::int",
            (uid,),
        )
        rows = await cur.fetchall()
    assert [r[3] for r in rows] == [f"record {i}" for i in range(120)]
    component, namespace, level, _, attributes = rows[0]
    assert (component, namespace, level) == ("task_execution", "ci", "INFO")
    assert attributes["object"] == "run-1"
    assert attributes["password"] == "[REDACTED]"


async def test_stop_flushes_what_is_buffered(obs_dsn: str, connections: DsnConnections) -> None:
    settings = ObservabilitySettings(log_batch_size=1000, log_flush_interval_ms=60_000)
    shipper = LogShipper(connections, settings)
    logger = logging.getLogger("plait.observability.stoptest")
    logger.setLevel(logging.INFO)
    shipper.start(logger)
    for i in range(10):
        logger.info("before stop %d", i)
    await shipper.stop(logger=logger)
    assert await count_rows(obs_dsn, "logger = %s", logger.name) == 10


# --- with PostgreSQL stopped ----------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[tuple[PostgresServer, str]]:
    """A private server this test may stop and start, migrated for observability only.

    Its folder is given (not owned) so that stopping keeps the data; /tmp, not tmp_path,
    because the postgres user must reach it.
    """
    base = Path(tempfile.mkdtemp(prefix="plait-pg-outage-"))
    server = PostgresServer(base_dir=base)
    try:
        server.start()
        dsn = server.create_database("obs")
        migrate_database(dsn, [component_by_name("observability")], owner_role=None)
        yield server, dsn
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
async def test_database_down_bounds_the_buffer_counts_drops_and_resumes(
    own_server: tuple[PostgresServer, str],
) -> None:
    server, dsn = own_server
    settings = ObservabilitySettings(
        log_buffer_size=100, log_batch_size=40, log_flush_interval_ms=50
    )
    connections = DsnConnections(dsn, connect_timeout=2)
    shipper = LogShipper(connections, settings)
    shipper.writer.max_backoff = 0.5
    logger = logging.getLogger("plait.observability.outagetest")
    logger.setLevel(logging.INFO)
    shipper.start()  # root logger: the shipper's own warnings are shipped too
    try:
        logger.info("before the outage")
        await eventually(lambda: has_rows(dsn, 1, "logger = %s", logger.name), what="first")
        server.pause()
        before = dropped_total("buffer_full")
        started = time.monotonic()
        for i in range(300):
            logger.info("during the outage %d", i)
        assert time.monotonic() - started < 1.0, "logging must never wait for the database"
        assert len(shipper.buffer) == 100
        assert shipper.dropped >= 200
        assert dropped_total("buffer_full") - before >= 200
        await eventually(lambda: shipper.writer.failures >= 2, what="failed attempts")
        assert not shipper.writer.healthy
        server.resume()
        await eventually(
            lambda: shipper.writer.healthy and len(shipper.buffer) == 0,
            what="resumed shipping",
        )
        logger.info("after the outage")
        await eventually(lambda: has_rows(dsn, 1, "message = %s", "after the outage"), what="after")
    finally:
        await shipper.stop()
        await connections.close()
    shipped = await count_rows(dsn, "logger = %s AND message LIKE 'during%%'", logger.name)
    assert shipped == 100  # the oldest 100: newest are dropped when the buffer is full
    assert await count_rows(dsn, "message = %s", "during the outage 0") == 1
    assert await count_rows(dsn, "message = %s", "during the outage 299") == 0
    assert (
        await count_rows(
            dsn,
            "message LIKE %s AND (attributes->>'dropped')::int >= 200",
            "log shipping: writing again after %",
        )
        == 1
    )


async def test_concurrent_flushes_write_each_record_once(
    obs_dsn: str, connections: DsnConnections
) -> None:
    """The background task and an explicit flush at once must not write a batch twice."""
    buffer: BoundedBuffer[repo.LogRecord] = BoundedBuffer(1000)
    writer = BatchWriter("logs", buffer, repo.copy_logs, connections, batch_size=10, interval=60.0)
    marker = uuid.uuid4().hex
    now = datetime.now(UTC)
    for i in range(95):
        buffer.put(repo.LogRecord(now, LogLevel.INFO, "test", f"{marker} {i}"))
    await asyncio.gather(*(writer.flush() for _ in range(4)))
    assert await count_rows(obs_dsn, "message LIKE %s", f"{marker} %") == 95
