"""Every Prometheus metric Plait exposes, declared here and nowhere else.

Names follow Prometheus conventions: the ``plait_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters, histograms for durations. Metrics live in
prometheus-client's default registry, so the ``/metrics`` route of both processes
(``generate_latest()``) serves them with no extra wiring.

Multi-replica correctness: counters and histograms count what *this* process did;
Prometheus scrapes every replica and ``sum()`` over them is the fleet's total. Gauges that
describe shared state (instances by phase, queue depth, dead letters) are computed from
PostgreSQL by :class:`DatabaseGauges`, so every replica reports the same value: aggregate
them with ``max()``, never ``sum()``. Their refresh runs in the background with a time
limit and ``/metrics`` serves the cached values, so a scrape never waits on the database;
values older than three refresh intervals are left out rather than served stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from plait.kernel.database import Database

__all__ = [
    "ADMISSION_REVIEWS",
    "DATABASE_GAUGES",
    "DATABASE_GAUGE_ERRORS",
    "DATABASE_GAUGE_FAMILIES",
    "DEAD_LETTERS",
    "EVENTS_INGESTED",
    "EVENT_QUEUE_DEPTH",
    "EVENT_QUEUE_LAG",
    "INTEGRATION_CHECKS",
    "INTEGRATION_CHECK_DURATION",
    "KUBERNETES_API_DURATION",
    "KUBERNETES_API_REQUESTS",
    "LOG_RECORDS_DROPPED",
    "LOG_RECORDS_SHIPPED",
    "METRIC_SNAPSHOTS",
    "RECONCILIATIONS",
    "RECONCILIATION_DURATION",
    "SPANS_DROPPED",
    "SPANS_EXPORTED",
    "TASK_ATTEMPTS",
    "TASK_LOG_FOLLOWERS",
    "TASK_LOG_LINES",
    "TASK_LOG_TRUNCATIONS",
    "TASK_OVERHEAD",
    "TASK_QUEUE_WAIT",
    "TASK_RUN",
    "WORKFLOW_INSTANCES",
    "WORKFLOW_INSTANCES_FINISHED",
    "WORKFLOW_INSTANCES_STARTED",
    "WORKFLOW_INSTANCE_DURATION",
    "DatabaseGauges",
    "GaugeSample",
    "GaugeSource",
    "PoolCollector",
    "event_ingested",
    "integration_checked",
    "kubernetes_api_call",
    "log_records_dropped",
    "spans_dropped",
    "task_attempt_finished",
    "task_cache_lookup",
    "task_overhead",
    "time_kubernetes_api_call",
    "time_reconciliation",
    "workflow_instance_finished",
    "workflow_instance_started",
]

log = logging.getLogger(__name__)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
_LONG = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)

# --- reconciliation -------------------------------------------------------------------------
RECONCILIATIONS = Counter(
    "plait_reconciliations_total",
    "Reconciliations of Plait's resources by kind and outcome (success, error).",
    ["kind", "outcome"],
)
RECONCILIATION_DURATION = Histogram(
    "plait_reconciliation_duration_seconds",
    "Time one reconciliation took, by kind.",
    ["kind"],
    buckets=_FAST,
)

# --- workflow instances ---------------------------------------------------------------------
WORKFLOW_INSTANCES_STARTED = Counter(
    "plait_workflow_instances_started_total",
    "Workflow instances this process started running, by namespace.",
    ["namespace"],
)
WORKFLOW_INSTANCES_FINISHED = Counter(
    "plait_workflow_instances_finished_total",
    "Workflow instances this process saw finish, by final phase.",
    ["phase"],
)
WORKFLOW_INSTANCE_DURATION = Histogram(
    "plait_workflow_instance_duration_seconds",
    "Wall time of a workflow instance from start to its final phase.",
    ["phase"],
    buckets=_LONG,
)

# --- task attempts --------------------------------------------------------------------------
TASK_ATTEMPTS = Counter(
    "plait_task_attempts_total",
    "Finished task attempts by outcome (succeeded, failed, timed_out, cancelled, ...).",
    ["outcome"],
)
TASK_QUEUE_WAIT = Histogram(
    "plait_task_queue_wait_seconds",
    "From a task's Job created to its pod running: Kubernetes' scheduling and start-up.",
    buckets=_WAIT,
)
TASK_RUN = Histogram(
    "plait_task_run_seconds",
    "A task's own run time: its container running to terminated.",
    buckets=_LONG,
)
TASK_OVERHEAD = Histogram(
    "plait_task_overhead_seconds",
    "Plait's own time per attempt, by stage: launch (the plan that starts the attempt made "
    "to its Job created) and advance (its completion observed to the run's next plan made "
    "on it).",
    ["stage"],
    buckets=_FAST,
)
TASK_CACHE_LOOKUPS = Counter(
    "plait_task_cache_lookups_total",
    "Attempts of tasks with a cache key, by result: hit (an earlier result reused, no Job), "
    "miss (none within the time to live: the task ran) or bypassed (the run asked to run "
    "every task).",
    ["result"],
)

# --- events ---------------------------------------------------------------------------------
INTEGRATION_CHECKS = Counter(
    "plait_integration_checks_total",
    "Health checks of Integrations (spec.healthCheck), by catalog type and result "
    "(healthy, unhealthy). No Integration label: series stay bounded.",
    ["type", "result"],
)
INTEGRATION_CHECK_DURATION = Histogram(
    "plait_integration_check_duration_seconds",
    "How long each Integration health check took, by catalog type.",
    ["type"],
    buckets=_FAST,
)
EVENTS_INGESTED = Counter(
    "plait_events_ingested_total",
    "CloudEvents received by the API, by outcome: stored (new), duplicate (seen before, "
    "acknowledged again) or rejected (invalid or too large; nothing stored). No namespace "
    "label: namespaces come from the request path, and series must stay bounded.",
    ["outcome"],
)

# --- admission ----------------------------------------------------------------------------
ADMISSION_REVIEWS = Counter(
    "plait_admission_reviews_total",
    "Admission reviews answered by plait webhook, by kind and verdict: allowed, warned "
    "(allowed, with a warning about an object not applied yet), invalid (content refused), "
    "forbidden (the requesting user may not use what the object names) or error (the API "
    "server could not be asked; refused).",
    ["kind", "verdict"],
)

# --- Kubernetes API -------------------------------------------------------------------------
KUBERNETES_API_REQUESTS = Counter(
    "plait_kubernetes_api_requests_total",
    "Calls Plait made to the Kubernetes API, by verb, resource and HTTP status code "
    "(2xx when the client does not report the exact success code; error: no response).",
    ["verb", "resource", "code"],
)
KUBERNETES_API_DURATION = Histogram(
    "plait_kubernetes_api_request_duration_seconds",
    "Latency of Plait's Kubernetes API calls, by verb and resource.",
    ["verb", "resource"],
    buckets=_FAST,
)

# --- the observability pipeline itself ------------------------------------------------------
LOG_RECORDS_DROPPED = Counter(
    "plait_log_records_dropped_total",
    "Log records not written to observability_logs, by reason (buffer_full: the database "
    "was unreachable long enough to fill the buffer; rejected; shutdown).",
    ["reason"],
)
LOG_RECORDS_SHIPPED = Counter(
    "plait_log_records_shipped_total", "Log records written to observability_logs."
)
TASK_LOG_LINES = Counter(
    "plait_task_log_lines_total",
    "Lines of task containers' output written to observability_logs (component task).",
)
TASK_LOG_TRUNCATIONS = Counter(
    "plait_task_log_truncations_total",
    "Task attempts whose output passed PLAIT_TASK_LOG_MAX_BYTES (the rest was not collected).",
)
TASK_LOG_FOLLOWERS = Gauge(
    "plait_task_log_followers",
    "Task containers whose logs this operator is reading now (at most PLAIT_TASK_LOG_FOLLOWERS).",
)
SPANS_DROPPED = Counter(
    "plait_spans_dropped_total",
    "Finished spans not written to observability_traces, by reason (as for log records).",
    ["reason"],
)
SPANS_EXPORTED = Counter("plait_spans_exported_total", "Spans written to observability_traces.")
METRIC_SNAPSHOTS = Counter(
    "plait_metric_snapshots_total",
    "Snapshots of this process's metrics written to observability_metrics, by outcome.",
    ["outcome"],
)
DATABASE_GAUGE_ERRORS = Counter(
    "plait_database_metric_refresh_errors_total",
    "Failed or timed-out refreshes of the gauges computed from PostgreSQL, by source.",
    ["source"],
)

# Gauges computed from PostgreSQL: name -> (help, label names). Served by DatabaseGauges.
DATABASE_GAUGE_FAMILIES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "plait_workflow_instances": (
        "Workflow instances by namespace and phase, from PostgreSQL (same on every "
        "replica: aggregate with max, not sum).",
        ("namespace", "phase"),
    ),
    "plait_event_queue_depth": (
        "Events in the processing queue by state, from PostgreSQL.",
        ("state",),
    ),
    "plait_event_queue_lag_seconds": (
        "Age of the oldest event still pending in the queue (0 when empty), from PostgreSQL.",
        (),
    ),
    "plait_dead_letters": ("Dead-lettered events by status, from PostgreSQL.", ("status",)),
}
# Series with a known, closed set of label values exist from the start (at 0), so rate()
# and alerts work before the first occurrence instead of seeing "no data".
for _outcome in ("succeeded", "failed", "timed_out", "cancelled"):
    TASK_ATTEMPTS.labels(_outcome)
for _reason in ("buffer_full", "rejected", "shutdown"):
    LOG_RECORDS_DROPPED.labels(_reason)
    SPANS_DROPPED.labels(_reason)
for _stage in ("launch", "advance"):
    TASK_OVERHEAD.labels(_stage)
for _ingested in ("stored", "duplicate", "rejected"):
    EVENTS_INGESTED.labels(_ingested)
for _phase in ("Succeeded", "Failed", "Cancelled"):
    WORKFLOW_INSTANCES_FINISHED.labels(_phase)
for _snapshot in ("written", "failed"):
    METRIC_SNAPSHOTS.labels(_snapshot)

WORKFLOW_INSTANCES = "plait_workflow_instances"
EVENT_QUEUE_DEPTH = "plait_event_queue_depth"
EVENT_QUEUE_LAG = "plait_event_queue_lag_seconds"
DEAD_LETTERS = "plait_dead_letters"


# --- one-line helpers for callers -----------------------------------------------------------


@contextlib.contextmanager
def time_reconciliation(kind: str) -> Iterator[None]:
    """Count and time one reconciliation of ``kind``; an exception counts as ``error``."""
    start = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "success"
    finally:
        RECONCILIATION_DURATION.labels(kind).observe(time.perf_counter() - start)
        RECONCILIATIONS.labels(kind, outcome).inc()


def workflow_instance_started(namespace: str) -> None:
    WORKFLOW_INSTANCES_STARTED.labels(namespace).inc()


def workflow_instance_finished(phase: str, duration_seconds: float | None = None) -> None:
    """A run reached its final ``phase`` (Succeeded, Failed, Cancelled)."""
    WORKFLOW_INSTANCES_FINISHED.labels(phase).inc()
    if duration_seconds is not None and duration_seconds >= 0:
        WORKFLOW_INSTANCE_DURATION.labels(phase).observe(duration_seconds)


def task_attempt_finished(
    outcome: str,
    *,
    queue_wait_seconds: float | None = None,
    run_seconds: float | None = None,
) -> None:
    """An attempt ended: count it, and observe Kubernetes' wait and the task's own time."""
    TASK_ATTEMPTS.labels(outcome).inc()
    if queue_wait_seconds is not None and queue_wait_seconds >= 0:
        TASK_QUEUE_WAIT.observe(queue_wait_seconds)
    if run_seconds is not None and run_seconds >= 0:
        TASK_RUN.observe(run_seconds)


def task_cache_lookup(result: Literal["hit", "miss", "bypassed"]) -> None:
    TASK_CACHE_LOOKUPS.labels(result).inc()


def task_overhead(stage: Literal["launch", "advance"], seconds: float) -> None:
    """Plait's own time around an attempt (see ``plait_task_overhead_seconds``)."""
    if seconds >= 0:
        TASK_OVERHEAD.labels(stage).observe(seconds)


def integration_checked(type_: str, healthy: bool, seconds: float) -> None:
    """One Integration health check (see ``plait_integration_checks_total``)."""
    INTEGRATION_CHECKS.labels(type_, "healthy" if healthy else "unhealthy").inc()
    INTEGRATION_CHECK_DURATION.labels(type_).observe(max(seconds, 0.0))


def event_ingested(outcome: str, count: int = 1) -> None:
    EVENTS_INGESTED.labels(outcome).inc(count)


def kubernetes_api_call(verb: str, resource: str, code: int | str, seconds: float) -> None:
    KUBERNETES_API_REQUESTS.labels(verb, resource, str(code)).inc()
    KUBERNETES_API_DURATION.labels(verb, resource).observe(seconds)


@contextlib.contextmanager
def time_kubernetes_api_call(verb: str, resource: str) -> Iterator[None]:
    """Count and time one API call; the code comes from the exception's ``status`` if any."""
    start = time.perf_counter()
    code: int | str = "2xx"
    try:
        yield
    except BaseException as exc:
        status = getattr(exc, "status", None)
        code = status if isinstance(status, int) and status > 0 else "error"
        raise
    finally:
        kubernetes_api_call(verb, resource, code, time.perf_counter() - start)


def log_records_dropped(reason: str, count: int = 1) -> None:
    LOG_RECORDS_DROPPED.labels(reason).inc(count)


def spans_dropped(reason: str, count: int = 1) -> None:
    SPANS_DROPPED.labels(reason).inc(count)


# --- gauges computed from PostgreSQL --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """One value of a gauge in :data:`DATABASE_GAUGE_FAMILIES`."""

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


GaugeSource = Callable[["Database"], Awaitable[Iterable[GaugeSample]]]


class DatabaseGauges(Collector):
    """Gauges whose truth is in PostgreSQL, refreshed in the background, served from a cache.

    Components register a source (an async function that reads their own schema through
    their own connection and returns :class:`GaugeSample` values); this collector never
    reads another component's tables itself.
    """

    def __init__(self) -> None:
        self._sources: dict[str, GaugeSource] = {}
        self._cache: dict[str, tuple[float, list[GaugeSample]]] = {}
        self.max_age = 15.0

    def register_source(self, name: str, source: GaugeSource) -> None:
        """Add (or replace) the source called ``name``."""
        self._sources[name] = source

    def unregister_source(self, name: str) -> None:
        self._sources.pop(name, None)
        self._cache.pop(name, None)

    async def refresh(self, database: Database, *, limit: float = 2.0) -> None:
        """Query every source once, each within ``limit`` s; failures keep the old cache."""
        for name, source in list(self._sources.items()):
            try:
                async with asyncio.timeout(limit):
                    samples = list(await source(database))
            except Exception as exc:
                DATABASE_GAUGE_ERRORS.labels(name).inc()
                log.debug("gauge source %s failed: %s", name, type(exc).__name__)
                continue
            unknown = {s.name for s in samples} - DATABASE_GAUGE_FAMILIES.keys()
            if unknown:
                DATABASE_GAUGE_ERRORS.labels(name).inc()
                log.error("gauge source %s returned undeclared metrics %s", name, sorted(unknown))
                continue
            self._cache[name] = (time.monotonic(), samples)

    async def run(self, database: Database, *, interval: float, limit: float) -> None:
        """Refresh every ``interval`` s until cancelled."""
        self.max_age = 3 * interval
        while True:
            await self.refresh(database, limit=min(limit, interval))
            await asyncio.sleep(interval)

    def collect(self) -> Iterable[Metric]:
        now = time.monotonic()
        fresh = [
            s for at, samples in self._cache.values() if now - at <= self.max_age for s in samples
        ]
        for name, (help_text, label_names) in DATABASE_GAUGE_FAMILIES.items():
            family = GaugeMetricFamily(name, help_text, labels=label_names)
            for sample in fresh:
                if sample.name == name:
                    family.add_metric([sample.labels.get(n, "") for n in label_names], sample.value)
            if family.samples:
                yield family

    def describe(self) -> Iterable[Metric]:
        return []


DATABASE_GAUGES = DatabaseGauges()
REGISTRY.register(DATABASE_GAUGES)


class PoolCollector(Collector):
    """Connections of each of a process's database pools: in use, idle, and waiters."""

    def __init__(self, database: Database, components: Iterable[str]) -> None:
        self._pools: dict[str, Any] = {}
        for name in components:
            with contextlib.suppress(Exception):
                self._pools[name] = database.pool(name)

    def collect(self) -> Iterable[Metric]:
        conns = GaugeMetricFamily(
            "plait_database_pool_connections",
            "Connections of a component's database pool, by state (in_use, idle).",
            labels=["component", "state"],
        )
        waiting = GaugeMetricFamily(
            "plait_database_pool_requests_waiting",
            "Requests waiting for a connection of a component's pool.",
            labels=["component"],
        )
        limit = GaugeMetricFamily(
            "plait_database_pool_max_connections",
            "Upper bound of a component's pool.",
            labels=["component"],
        )
        for name, pool in self._pools.items():
            stats = pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            conns.add_metric([name, "in_use"], max(0, size - idle))
            conns.add_metric([name, "idle"], idle)
            waiting.add_metric([name], stats.get("requests_waiting", 0))
            limit.add_metric([name], pool.max_size)
        yield from (conns, waiting, limit)

    def describe(self) -> Iterable[Metric]:
        return []

    def register(self, registry: CollectorRegistry = REGISTRY) -> PoolCollector:
        registry.register(self)
        return self
