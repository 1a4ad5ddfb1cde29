"""Periodic snapshots of this process's metrics into ``observability_metrics``.

Prometheus is the place for alerting and recent history; the snapshots keep the same
numbers for SQL (joins with runs, history beyond Prometheus' retention). Each snapshot is
one multi-row write of every ``plait_*`` sample in the registry, labelled with the replica
(``replica``: the pod name), because counters are per process: sum the latest sample of
each replica for a fleet total.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
from collections.abc import Sequence

from prometheus_client import REGISTRY, CollectorRegistry

from plait.observability import metrics
from plait.observability import repository as repo
from plait.observability.batching import ConnectionFactory
from plait.observability.states import MetricKind

__all__ = ["MetricsSnapshotter", "take_samples"]

log = logging.getLogger(__name__)

_KINDS = {
    "counter": MetricKind.COUNTER,
    "gauge": MetricKind.GAUGE,
    "histogram": MetricKind.HISTOGRAM,
    "summary": MetricKind.SUMMARY,
}
_UNITS = ("seconds", "bytes", "ratio")


def _unit(name: str, declared: str) -> str | None:
    if declared:
        return declared
    stem = name.removesuffix("_total")
    return next((u for u in _UNITS if stem.endswith(f"_{u}")), None)


def take_samples(
    component: str,
    *,
    registry: CollectorRegistry = REGISTRY,
    prefixes: Sequence[str] = ("plait_",),
    extra_labels: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> list[repo.MetricSample]:
    """Every finite sample of the metrics whose name starts with one of ``prefixes``.

    ``_created`` samples (creation timestamps of counters) are left out.
    """
    now = now or dt.datetime.now(dt.UTC)
    samples: list[repo.MetricSample] = []
    for family in registry.collect():
        if not family.name.startswith(tuple(prefixes)):
            continue
        kind = _KINDS.get(family.type, MetricKind.GAUGE)
        unit = _unit(family.name, family.unit)
        for s in family.samples:
            if s.name.endswith("_created") or not math.isfinite(s.value):
                continue
            samples.append(
                repo.MetricSample(
                    time=now,
                    name=s.name,
                    kind=kind,
                    value=float(s.value),
                    component=component,
                    labels={**s.labels, **(extra_labels or {})},
                    unit=unit,
                )
            )
    return samples


class MetricsSnapshotter:
    """Writes :func:`take_samples` every ``interval`` s until stopped; a failed write is skipped."""

    def __init__(
        self,
        connections: ConnectionFactory,
        component: str,
        *,
        interval: float = 60.0,
        replica: str | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._connections = connections
        self.component = component
        self.interval = interval
        self._labels = {"replica": replica} if replica else {}
        self._registry = registry
        self._task: asyncio.Task[None] | None = None

    async def snapshot(self) -> int:
        """Write one snapshot now; how many samples it held."""
        samples = take_samples(self.component, registry=self._registry, extra_labels=self._labels)
        if samples:
            async with self._connections() as conn:
                await repo.insert_metrics(conn, samples)
        metrics.METRIC_SNAPSHOTS.labels("written").inc()
        return len(samples)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.snapshot()
            except Exception as exc:
                # A missed snapshot is a gap in history, not a loss worth buffering for.
                metrics.METRIC_SNAPSHOTS.labels("failed").inc()
                log.warning("metrics snapshot skipped: %s", type(exc).__name__)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="plait-metrics-snapshots"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
