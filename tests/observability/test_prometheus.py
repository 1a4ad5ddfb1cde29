"""A real Prometheus scrapes Plait's metrics: the target is up and a run's series move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from plait.observability import metrics
from plait.testing._process import free_port
from plait.testing.prometheus import PrometheusServer

pytestmark = pytest.mark.usefixtures("prometheus_available")


@pytest.fixture
async def metrics_target() -> AsyncIterator[str]:
    """``/metrics`` served exactly as the operator and API serve it (generate_latest)."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def prometheus(metrics_target: str) -> AsyncIterator[PrometheusServer]:
    server = PrometheusServer([metrics_target])
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


async def test_prometheus_scrapes_plait_and_sees_a_run_move_the_series(
    prometheus: PrometheusServer,
) -> None:
    up = await asyncio.to_thread(prometheus.wait_for, "up", lambda v: v == 1.0)
    assert up == 1.0
    expr = 'sum(plait_task_attempts_total{outcome="succeeded"})'
    before = await asyncio.to_thread(prometheus.wait_for, expr, lambda v: v is not None)
    assert before is not None
    # What the runtime reports for a one-task run (its overhead stages are measured from a
    # real run in test_operator.py).
    metrics.workflow_instance_started("prom")
    metrics.task_attempt_finished("succeeded", queue_wait_seconds=0.4, run_seconds=2.0)
    metrics.workflow_instance_finished("Succeeded", 2.5)
    after = await asyncio.to_thread(prometheus.wait_for, expr, lambda v: (v or 0) > before)
    assert after == before + 1
    started = await asyncio.to_thread(
        prometheus.wait_for,
        'plait_workflow_instances_started_total{namespace="prom"}',
        lambda v: v is not None,
    )
    assert started == 1.0
