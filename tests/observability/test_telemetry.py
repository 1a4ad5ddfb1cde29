"""Metrics helpers, database gauges, snapshots, the Telemetry facade and ``plait logs``."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable

import psycopg
import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY, generate_latest
from pydantic import SecretStr

from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.observability import metrics, tracing
from plait.observability.batching import DsnConnections
from plait.observability.cli import logs_command, parse_since
from plait.observability.logging import log_context
from plait.observability.settings import ObservabilitySettings
from plait.observability.snapshots import MetricsSnapshotter, take_samples
from plait.observability.telemetry import Telemetry


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def database(obs_dsn: str) -> AsyncIterator[Database]:
    settings = Settings(database_url=SecretStr(obs_dsn), database_pool_min=1)
    async with await Database.open(settings, [component_by_name("observability")]) as db:
        yield db


def test_helpers_move_the_series() -> None:
    before = value("plait_reconciliations_total", kind="Test", outcome="error")
    with pytest.raises(RuntimeError), metrics.time_reconciliation("Test"):
        raise RuntimeError("boom")
    assert value("plait_reconciliations_total", kind="Test", outcome="error") == before + 1
    assert value("plait_reconciliation_duration_seconds_count", kind="Test") >= 1
    runs = value("plait_task_run_seconds_count")
    metrics.task_attempt_finished("succeeded", queue_wait_seconds=0.5, run_seconds=3)
    assert value("plait_task_run_seconds_count") == runs + 1

    class Gone(Exception):
        status = 404

    with pytest.raises(Gone), metrics.time_kubernetes_api_call("get", "jobs"):
        raise Gone
    assert value("plait_kubernetes_api_requests_total", verb="get", resource="jobs", code="404")


async def test_database_gauges_are_cached_and_never_stale(database: Database) -> None:
    gauges = metrics.DatabaseGauges()

    async def depth(db: Database) -> Iterable[metrics.GaugeSample]:
        async with db.connection("observability") as conn:
            cur = await conn.execute("SELECT 7")
            row = await cur.fetchone()
        return [metrics.GaugeSample(metrics.EVENT_QUEUE_DEPTH, row[0], {"state": "pending"})]

    async def hangs(db: Database) -> Iterable[metrics.GaugeSample]:
        await asyncio.sleep(60)
        return []

    gauges.register_source("events", depth)
    gauges.register_source("slow", hangs)
    await gauges.refresh(database, limit=0.2)
    (family,) = list(gauges.collect())
    assert family.name == "plait_event_queue_depth"
    assert [(s.labels, s.value) for s in family.samples] == [({"state": "pending"}, 7.0)]
    assert value("plait_database_metric_refresh_errors_total", source="slow") >= 1
    gauges.max_age = 0.0
    assert list(gauges.collect()) == []


async def test_snapshots_land_in_the_table(
    connections: DsnConnections, obs_conn: psycopg.AsyncConnection
) -> None:
    for _ in range(3):
        metrics.kubernetes_api_call("get", "snapshot-test", 200, 0.01)
    samples = take_samples("operator")
    assert all(s.name.startswith("plait_") and not s.name.endswith("_created") for s in samples)
    written = await MetricsSnapshotter(connections, "operator", replica="pod-a").snapshot()
    assert written == len(samples)
    cur = await obs_conn.execute(
        "SELECT value, kind, labels FROM observability_service.observability_metrics "
        "WHERE name = 'plait_kubernetes_api_requests_total' "
        "AND labels->>'resource' = 'snapshot-test'"
    )
    assert await cur.fetchall() == [
        (
            3.0,
            "counter",
            {"verb": "get", "resource": "snapshot-test", "code": "200", "replica": "pod-a"},
        )
    ]


async def test_telemetry_ships_logs_and_spans_linked_by_trace_id(
    database: Database, obs_conn: psycopg.AsyncConnection
) -> None:
    telemetry = Telemetry(
        ObservabilitySettings(log_flush_interval_ms=50, span_flush_interval_ms=50)
    )
    await telemetry.start(database, "operator", retention=True)
    assert b"plait_database_pool_connections" in generate_latest()
    run = tracing.run_trace(uuid.uuid4())
    try:
        with tracing.reconcile_span("WorkflowInstance", "ci", "run-9", run=run):
            logging.getLogger("plait.workflow_orchestrator.test").warning("reconciling run-9")
    finally:
        await telemetry.stop()
    assert b"plait_database_pool_connections" not in generate_latest()
    cur = await obs_conn.execute(
        "SELECT l.component, l.namespace, t.name, t.parent_span_id "
        "FROM observability_service.observability_logs l "
        "JOIN observability_service.observability_traces t USING (trace_id, span_id) "
        "WHERE l.message = 'reconciling run-9'"
    )
    assert await cur.fetchall() == [
        ("workflow_orchestrator", "ci", "plait.reconcile", f"{run.root_span_id:016x}")
    ]
    cur = await obs_conn.execute("SELECT count(*) FROM observability_service.partitions")
    row = await cur.fetchone()
    assert row is not None
    assert row[0] >= 3 * 4  # retention ran and made the days ahead


async def test_disabled_telemetry_does_nothing(database: Database) -> None:
    telemetry = Telemetry(ObservabilitySettings.disabled())
    handlers = list(logging.getLogger().handlers)
    await telemetry.start(database, "api")
    assert logging.getLogger().handlers == handlers
    assert tracing.tracer() is tracing._noop
    await telemetry.stop()


async def test_plait_logs(
    connections: DsnConnections, obs_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plait.observability.shipper import LogShipper

    shipper = LogShipper(connections, ObservabilitySettings(log_flush_interval_ms=50))
    logger = logging.getLogger("plait.task_execution.clitest")
    logger.setLevel(logging.DEBUG)
    shipper.start(logger)
    run = tracing.run_trace(uuid.uuid4())
    with log_context(namespace="ci", object="run-3", workflow_instance_id=run.instance_uid):
        logger.debug("debug detail")
        logger.error("task failed: password=hunter2")
    with log_context(namespace="ci", object="other"):
        logger.info("unrelated")
    await shipper.stop(logger=logger)
    monkeypatch.setenv("PLAIT_DATABASE_URL_OBSERVABILITY", obs_dsn)

    async def run_cli(*args: str) -> str:
        result = await asyncio.to_thread(CliRunner().invoke, logs_command, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    text = await run_cli("--instance", "run-3", "-n", "ci")
    assert "debug detail" in text
    assert "[ci/run-3] task failed: password=[REDACTED]" in text
    assert "unrelated" not in text
    assert "hunter2" not in text
    errors = await run_cli("--level", "error", "-o", "json", "--component", "task_execution")
    (doc,) = [json.loads(line) for line in errors.splitlines()]
    assert doc["message"] == "task failed: password=[REDACTED]"
    assert doc["workflow_instance_id"] == run.instance_uid
    assert doc["namespace"] == "ci"
    assert await run_cli("--since", "1s", "--component", "nobody") == ""
    bad = await asyncio.to_thread(CliRunner().invoke, logs_command, ["--since", "yesterday"])
    assert bad.exit_code == 2
    assert "neither a duration" in bad.output


def test_parse_since() -> None:
    import datetime as dt

    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert parse_since("10m", now) == now - dt.timedelta(minutes=10)
    assert parse_since("2030-01-01T00:00:00", now) == now


def test_promtool_accepts_the_exposition() -> None:
    metrics.workflow_instance_finished("Succeeded", 12.0)
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(), capture_output=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
