"""Observability: Plait's logs, metrics and traces, stored in daily partitions.

Owns the ``observability_service`` schema; :mod:`.repository` is its only SQL.
"""

from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus

__all__ = ["LogLevel", "MetricKind", "SpanKind", "SpanStatus"]
