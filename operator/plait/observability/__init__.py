"""Observability: Plait's logs, metrics and traces, stored in daily partitions.

Owns the ``observability_service`` schema; :mod:`.repository` is its only SQL. A process
calls :func:`configure_logging` at start and runs a :class:`Telemetry`; code elsewhere uses
:func:`log_context`, the metric helpers of :mod:`.metrics` and the span helpers below.
See docs/observability.md.
"""

from plait.observability.logging import configure_logging, log_context, redact
from plait.observability.retention import RetentionSettings, enforce_retention
from plait.observability.settings import ObservabilitySettings
from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus
from plait.observability.telemetry import Telemetry
from plait.observability.tracing import (
    TRACEPARENT_ANNOTATION,
    RunTrace,
    current_traceparent,
    event_span,
    parse_traceparent,
    reconcile_span,
    run_trace,
    task_attempt_span,
    task_traceparent,
    traceparent,
    tracer,
    workflow_span,
)

__all__ = [
    "TRACEPARENT_ANNOTATION",
    "LogLevel",
    "MetricKind",
    "ObservabilitySettings",
    "RetentionSettings",
    "RunTrace",
    "SpanKind",
    "SpanStatus",
    "Telemetry",
    "configure_logging",
    "current_traceparent",
    "enforce_retention",
    "event_span",
    "log_context",
    "parse_traceparent",
    "reconcile_span",
    "redact",
    "run_trace",
    "task_attempt_span",
    "task_traceparent",
    "traceparent",
    "tracer",
    "workflow_span",
]
