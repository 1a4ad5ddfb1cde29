"""One object a process starts and stops to get all of its observability.

    telemetry = Telemetry()                       # reads PLAIT_* settings
    await telemetry.start(database, "operator", retention=True)
    ...
    await telemetry.stop()                        # flushes logs and spans

It ships log records, records spans, snapshots metrics, refreshes the gauges computed from
PostgreSQL, exposes the database pools' usage, and (``retention=True``, the operator only)
enforces retention on a timer. With ``PLAIT_OBSERVABILITY_ENABLED=false`` it does nothing
at all, which is the baseline of ``bench/observability.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from plait.kernel.components import COMPONENTS
from plait.observability import metrics, tracing
from plait.observability.batching import ConnectionFactory, pool_connections
from plait.observability.retention import RetentionSettings, RetentionTimer
from plait.observability.settings import ObservabilitySettings
from plait.observability.shipper import LogShipper
from plait.observability.snapshots import MetricsSnapshotter

if TYPE_CHECKING:
    from plait.kernel.database import Database

__all__ = ["Telemetry"]

log = logging.getLogger(__name__)


class Telemetry:
    """Starts and stops the observability pieces of one process, per its settings."""

    def __init__(self, settings: ObservabilitySettings | None = None) -> None:
        self.settings = settings or ObservabilitySettings()
        self.shipper: LogShipper | None = None
        self.tracing: tracing.Tracing | None = None
        self.snapshotter: MetricsSnapshotter | None = None
        self.retention: RetentionTimer | None = None
        self._pools: metrics.PoolCollector | None = None
        self._gauges: asyncio.Task[None] | None = None
        self.started = False

    @property
    def enabled(self) -> bool:
        return self.settings.observability_enabled

    async def start(
        self,
        database: Database,
        component: str,
        *,
        retention: bool = False,
        connections: ConnectionFactory | None = None,
    ) -> None:
        """Start everything enabled. ``component`` names the process (operator, api).

        Never fails because PostgreSQL is down: every piece retries in the background.
        """
        if not self.enabled or self.started:
            return
        s = self.settings
        connections = connections or pool_connections(database, "observability")
        if s.log_shipping:
            self.shipper = LogShipper(connections, s)
            self.shipper.start()
        if s.tracing:
            self.tracing = tracing.Tracing(s, connections, component)
            self.tracing.start()
            tracing.activate(self.tracing)
        self.snapshotter = MetricsSnapshotter(
            connections, component, interval=s.metrics_snapshot_seconds, replica=s.hostname
        )
        self.snapshotter.start()
        self._pools = metrics.PoolCollector(database, [c.name for c in COMPONENTS]).register(
            REGISTRY
        )
        self._gauges = asyncio.get_running_loop().create_task(
            metrics.DATABASE_GAUGES.run(
                database,
                interval=s.database_gauges_seconds,
                limit=s.database_gauges_timeout_seconds,
            ),
            name="plait-database-gauges",
        )
        if retention:
            self.retention = RetentionTimer(
                connections, RetentionSettings.from_settings(s), s.retention_interval_seconds
            )
            self.retention.start()
        self.started = True
        log.info(
            "observability on: log shipping %s, tracing %s%s, snapshots every %.0fs",
            "on" if s.log_shipping else "off",
            "on" if s.tracing else "off",
            f" (+OTLP {s.otlp_endpoint})" if s.tracing and s.otlp_endpoint else "",
            s.metrics_snapshot_seconds,
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the timers, then flush spans and log records (each within ``grace`` s)."""
        if not self.started:
            return
        self.started = False
        if self.retention is not None:
            await self.retention.stop()
        if self._gauges is not None:
            self._gauges.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gauges
        if self.snapshotter is not None:
            await self.snapshotter.stop()
        if self._pools is not None:
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(self._pools)
        if self.tracing is not None:
            tracing.activate(None)
            await self.tracing.stop(grace)
        if self.shipper is not None:
            await self.shipper.stop(grace)
