"""Shipping log records into ``observability_logs``, off the hot path.

:class:`ShippingHandler` is a :class:`logging.Handler` whose ``emit`` only turns the
record into a row and appends it to a bounded in-memory buffer: it never does I/O, so
logging never blocks a reconciliation or a request. :class:`LogShipper` is the background
task that COPYs the buffer into PostgreSQL in batches (every ``log_flush_interval_ms`` or
as soon as ``log_batch_size`` records wait), retries with backoff while the database is
unreachable, and flushes on :meth:`LogShipper.stop`. When the buffer is full the newest
records are dropped and counted in ``plait_log_records_dropped_total{reason="buffer_full"}``
(why the newest: see :mod:`plait.observability.batching`); stderr still has every line.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from plait.observability import metrics
from plait.observability import repository as repo
from plait.observability.batching import BatchWriter, BoundedBuffer, ConnectionFactory
from plait.observability.logging import ContextFilter, RedactionFilter, extra_attributes
from plait.observability.settings import ObservabilitySettings
from plait.observability.states import LogLevel

__all__ = ["LogShipper", "ShippingHandler", "level_of"]


def level_of(levelno: int) -> LogLevel:
    """The table's level for a Python level number (custom levels round down)."""
    if levelno >= logging.CRITICAL:
        return LogLevel.CRITICAL
    if levelno >= logging.ERROR:
        return LogLevel.ERROR
    if levelno >= logging.WARNING:
        return LogLevel.WARNING
    if levelno >= logging.INFO:
        return LogLevel.INFO
    return LogLevel.DEBUG


class ShippingHandler(logging.Handler):
    """Turns records into rows of ``observability_logs`` and queues them; never blocks."""

    def __init__(self, buffer: BoundedBuffer[repo.LogRecord], level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.buffer = buffer
        self.addFilter(ContextFilter())
        self.addFilter(RedactionFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            attributes: dict[str, Any] = extra_attributes(record)
            obj = getattr(record, "plait_object", None)
            if obj is not None:
                attributes["object"] = obj
            if record.exc_text:
                attributes["exc_info"] = record.exc_text
            if record.levelno >= logging.WARNING:
                attributes["source"] = f"{record.pathname}:{record.lineno}"
            self.buffer.put(
                repo.LogRecord(
                    time=dt.datetime.fromtimestamp(record.created, dt.UTC),
                    level=level_of(record.levelno),
                    component=getattr(record, "plait_component", None) or "plait",
                    message=record.getMessage(),
                    logger=record.name,
                    attributes=attributes,
                    namespace=getattr(record, "plait_namespace", None),
                    workflow_instance_id=getattr(record, "plait_workflow_instance_id", None),
                    task_instance_id=getattr(record, "plait_task_instance_id", None),
                    trace_id=getattr(record, "plait_trace_id", None),
                    span_id=getattr(record, "plait_span_id", None),
                )
            )
        except Exception:
            self.handleError(record)


class LogShipper:
    """The handler, its buffer and the background task that writes it, as one unit."""

    def __init__(
        self,
        connections: ConnectionFactory,
        settings: ObservabilitySettings | None = None,
        *,
        level: int = logging.NOTSET,
    ) -> None:
        settings = settings or ObservabilitySettings()
        self.buffer: BoundedBuffer[repo.LogRecord] = BoundedBuffer(
            settings.log_buffer_size,
            on_drop=lambda n: metrics.log_records_dropped("buffer_full", n),
        )
        self.handler = ShippingHandler(self.buffer, level)
        self.writer: BatchWriter[repo.LogRecord] = BatchWriter(
            "log shipping",
            self.buffer,
            repo.copy_logs,
            connections,
            batch_size=settings.log_batch_size,
            interval=settings.log_flush_interval_ms / 1000,
            on_written=metrics.LOG_RECORDS_SHIPPED.inc,
            on_dropped=metrics.log_records_dropped,
        )

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full (since this shipper started)."""
        return self.buffer.dropped

    def start(self, logger: logging.Logger | None = None) -> None:
        """Attach the handler (to the root logger by default) and start writing."""
        (logger or logging.getLogger()).addHandler(self.handler)
        self.writer.start()

    async def flush(self) -> None:
        """Write everything buffered now (raises if the database refuses)."""
        await self.writer.flush()

    async def stop(self, grace: float = 5.0, logger: logging.Logger | None = None) -> None:
        """Detach the handler, then write what is left within ``grace`` s."""
        (logger or logging.getLogger()).removeHandler(self.handler)
        await self.writer.stop(grace)
