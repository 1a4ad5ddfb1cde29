"""Traces: OpenTelemetry spans of runs, task attempts, reconciliations and events.

A workflow run can outlive the process that started it, so its root span is never held
open in memory: the run's ids are fixed in advance (:func:`run_trace`, derived from the
instance's uid, or joining the trace of the event that started it via the
``plait.dev/traceparent`` annotation), children name the root as parent while the run goes
on, and the root span itself is recorded when the run finishes, with its real start and
end times (:func:`workflow_span`). Task attempts are recorded the same way, after the fact,
with span ids derived from (instance, task, attempt), so the ``TRACEPARENT`` given to a
task's Job (:func:`task_traceparent`) names the attempt's span before it exists.

Spans go to ``observability_traces`` through :class:`DatabaseSpanProcessor`, a bounded
buffer written in batches by the same :class:`~plait.observability.batching.BatchWriter`
as log records (drops counted in ``plait_spans_dropped_total``), and to an OTLP/HTTP
collector too when an endpoint is configured (the SDK's BatchSpanProcessor).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import hashlib
import logging
import random
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from plait.errors import ValidationError
from plait.observability import metrics
from plait.observability import repository as repo
from plait.observability.batching import BatchWriter, BoundedBuffer, ConnectionFactory
from plait.observability.logging import log_context
from plait.observability.settings import ObservabilitySettings
from plait.observability.states import SpanKind, SpanStatus

__all__ = [
    "EVENT_SPAN",
    "RECONCILE_SPAN",
    "TASK_SPAN",
    "TRACEPARENT_ANNOTATION",
    "WORKFLOW_SPAN",
    "DatabaseSpanProcessor",
    "EventSpans",
    "RunTrace",
    "Tracing",
    "activate",
    "attempt_span_id",
    "current_traceparent",
    "event_span",
    "parse_traceparent",
    "reconcile_span",
    "run_trace",
    "start_event_span",
    "task_attempt_span",
    "task_traceparent",
    "traceparent",
    "tracer",
    "workflow_span",
]

log = logging.getLogger(__name__)

WORKFLOW_SPAN = "plait.workflow"
TASK_SPAN = "plait.task"
RECONCILE_SPAN = "plait.reconcile"
EVENT_SPAN = "plait.event"
TRACEPARENT_ANNOTATION = "plait.dev/traceparent"

_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-"
    r"(?P<flags>[0-9a-f]{2})(?P<rest>-.*)?$"
)

# --- W3C trace context ----------------------------------------------------------------------


def traceparent(span_context: SpanContext) -> str:
    """The W3C ``traceparent`` header value of ``span_context`` (for a Job's TRACEPARENT)."""
    if not span_context.is_valid:
        raise ValidationError("cannot make a traceparent of an invalid span context")
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def parse_traceparent(value: str) -> SpanContext:
    """A remote :class:`SpanContext` from a W3C ``traceparent``; ValidationError if malformed."""
    match = _TRACEPARENT.match(value.strip())
    if not match or match["version"] == "ff" or (match["version"] == "00" and match["rest"]):
        raise ValidationError(
            f"invalid traceparent {value[:80]!r}: expected 00-<32 hex trace id>-<16 hex span "
            "id>-<2 hex flags>, lowercase (W3C Trace Context)"
        )
    trace_id, span_id = int(match["trace"], 16), int(match["span"], 16)
    if not trace_id or not span_id:
        raise ValidationError(f"invalid traceparent {value[:80]!r}: all-zero trace or span id")
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match["flags"], 16))
    )


def current_traceparent() -> str | None:
    """``traceparent`` of the current span, if any (to store on what the span causes)."""
    ctx = otel.get_current_span().get_span_context()
    return traceparent(ctx) if ctx.is_valid else None


# --- fixed ids for spans recorded after the fact --------------------------------------------

_fixed: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "plait_fixed_span_ids", default=(None, None)
)


class _FixedIdGenerator(IdGenerator):
    """Random ids, unless :func:`_with_ids` fixed them for the span being started."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return _fixed.get()[1] or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return _fixed.get()[0] or self._random.generate_trace_id()


@contextlib.contextmanager
def _with_ids(trace_id: int | None, span_id: int | None) -> Iterator[None]:
    token = _fixed.set((trace_id, span_id))
    try:
        yield
    finally:
        _fixed.reset(token)


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _span_id(*parts: str) -> int:
    return int.from_bytes(_digest(*parts)[:8], "big") or 1


@dataclass(frozen=True, slots=True)
class RunTrace:
    """The trace of one workflow run: ids fixed before any span of it is recorded."""

    instance_uid: str
    trace_id: int
    root_span_id: int
    parent: SpanContext | None = None
    """The span of the event that started the run, if it came with a traceparent."""

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def root_context(self) -> SpanContext:
        return SpanContext(
            self.trace_id, self.root_span_id, is_remote=False, trace_flags=TraceFlags(1)
        )

    def context(self) -> otel_context.Context:
        """An OpenTelemetry context whose current span is the run's root (parent of children)."""
        return otel.set_span_in_context(
            NonRecordingSpan(self.root_context()), otel_context.Context()
        )

    @property
    def traceparent(self) -> str:
        return traceparent(self.root_context())


def run_trace(
    instance_uid: str | uuid.UUID, annotations: Mapping[str, str] | None = None
) -> RunTrace:
    """The trace of the run with this uid: the started-by event's trace if annotated, else its own.

    Deterministic: every replica, before or after a restart, computes the same ids. An
    unparsable annotation is logged and ignored (the run gets its own trace).
    """
    uid = str(instance_uid)
    root = _span_id("plait.workflow", uid)
    value = (annotations or {}).get(TRACEPARENT_ANNOTATION)
    if value:
        try:
            parent = parse_traceparent(value)
            return RunTrace(uid, parent.trace_id, root, parent)
        except ValidationError as exc:
            log.warning("ignoring annotation %s of run %s: %s", TRACEPARENT_ANNOTATION, uid, exc)
    try:
        trace_id = uuid.UUID(uid).int
    except ValueError:
        trace_id = 0
    if not trace_id:
        trace_id = int.from_bytes(_digest("plait.trace", uid)[:16], "big") or 1
    return RunTrace(uid, trace_id, root)


def attempt_span_id(run: RunTrace, task: str, attempt: int) -> int:
    """Span id of a task attempt (known before the attempt's span is recorded)."""
    return _span_id("plait.task", run.instance_uid, task, str(attempt))


def task_traceparent(run: RunTrace, task: str, attempt: int) -> str:
    """The TRACEPARENT for an attempt's Job: the task's own spans become the attempt's children."""
    return traceparent(
        SpanContext(
            run.trace_id,
            attempt_span_id(run, task, attempt),
            is_remote=False,
            trace_flags=TraceFlags(1),
        )
    )


# --- the provider -------------------------------------------------------------------------


def _ns(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise ValidationError(f"span time {when.isoformat()} has no time zone")
    return int(when.timestamp() * 1_000_000_000)


def _time(ns: int | None) -> dt.datetime:
    return dt.datetime.fromtimestamp((ns or 0) / 1e9, dt.UTC)


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class DatabaseSpanProcessor(SpanProcessor):
    """Queues every finished span for ``observability_traces``; never blocks the caller."""

    def __init__(self, buffer: BoundedBuffer[repo.Span], component: str) -> None:
        self.buffer = buffer
        self.component = component

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.get_span_context()
        if ctx is None:
            return
        attributes = {k: _json_value(v) for k, v in (span.attributes or {}).items()}
        uid = attributes.get("plait.instance.uid")
        try:
            instance = uuid.UUID(str(uid)) if uid else None
        except ValueError:
            instance = None
        start = _time(span.start_time)
        end = max(start, _time(span.end_time))
        self.buffer.put(
            repo.Span(
                start_time=start,
                end_time=end,
                trace_id=f"{ctx.trace_id:032x}",
                span_id=f"{ctx.span_id:016x}",
                parent_span_id=f"{span.parent.span_id:016x}" if span.parent else None,
                name=span.name,
                component=str(attributes.pop("plait.component", None) or self.component),
                kind=SpanKind(span.kind.name),
                status_code=SpanStatus(span.status.status_code.name),
                status_message=span.status.description,
                attributes=attributes,
                events=[
                    {
                        "name": e.name,
                        "time": _time(e.timestamp).isoformat(),
                        "attributes": {k: _json_value(v) for k, v in (e.attributes or {}).items()},
                    }
                    for e in span.events
                ],
                workflow_instance_id=instance,
            )
        )

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracing:
    """A process's tracer provider and the writer of its spans into PostgreSQL."""

    def __init__(
        self,
        settings: ObservabilitySettings,
        connections: ConnectionFactory,
        component: str,
    ) -> None:
        self.component = component
        #: Spans go to an OTLP collector too (through the SDK's processors).
        self.exports_elsewhere = bool(settings.otlp_endpoint)
        self.buffer: BoundedBuffer[repo.Span] = BoundedBuffer(
            settings.span_buffer_size, on_drop=lambda n: metrics.spans_dropped("buffer_full", n)
        )
        self.writer: BatchWriter[repo.Span] = BatchWriter(
            "spans",
            self.buffer,
            repo.copy_spans,
            connections,
            batch_size=settings.span_batch_size,
            interval=settings.span_flush_interval_ms / 1000,
            on_written=metrics.SPANS_EXPORTED.inc,
            on_dropped=metrics.spans_dropped,
        )
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": f"plait-{component}"}),
            id_generator=_FixedIdGenerator(),
            sampler=ALWAYS_ON,
        )
        self.provider.add_span_processor(DatabaseSpanProcessor(self.buffer, component))
        endpoint = settings.otlp_endpoint
        if endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = endpoint.rstrip("/")
            if not url.endswith("/v1/traces"):
                url += "/v1/traces"
            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
            log.info("also exporting spans over OTLP/HTTP to %s", url)
        self.tracer = self.provider.get_tracer("plait")

    def start(self) -> None:
        self.writer.start()

    async def stop(self, grace: float = 5.0) -> None:
        await asyncio.to_thread(self.provider.shutdown)
        await self.writer.stop(grace)


_active: Tracing | None = None
_noop = otel.NoOpTracer()


def activate(tracing: Tracing | None) -> None:
    """Make ``tracing`` the process's (None: spans go nowhere). Called by Telemetry."""
    global _active
    _active = tracing


def tracer() -> otel.Tracer:
    """Plait's tracer: the active provider's, or a no-op one when tracing is off."""
    return _active.tracer if _active is not None else _noop


# --- spans the runtime records --------------------------------------------------------------


def _status(span: otel.Span, outcome: str, error: str | None) -> None:
    if error or outcome in {"failed", "timed_out", "error"}:
        span.set_status(Status(StatusCode.ERROR, error or outcome))
    else:
        span.set_status(Status(StatusCode.OK))


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def workflow_span(
    run: RunTrace,
    *,
    namespace: str,
    instance: str,
    workflow: str,
    start: dt.datetime,
    end: dt.datetime,
    outcome: str,
    error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Record a finished run's root span (ids from ``run``; ``outcome``: succeeded, failed, ...)."""
    attrs = _clean(
        {
            "plait.namespace": namespace,
            "plait.instance": instance,
            "plait.instance.uid": run.instance_uid,
            "plait.workflow.name": workflow,
            "plait.outcome": outcome,
            **(attributes or {}),
        }
    )
    parent = (
        otel.set_span_in_context(NonRecordingSpan(run.parent), otel_context.Context())
        if run.parent is not None
        else otel_context.Context()
    )
    with _with_ids(run.trace_id, run.root_span_id):
        span = tracer().start_span(WORKFLOW_SPAN, parent, start_time=_ns(start), attributes=attrs)
    _status(span, outcome, error)
    span.end(end_time=_ns(max(start, end)))


def task_attempt_span(
    run: RunTrace,
    *,
    namespace: str,
    instance: str,
    workflow: str,
    task: str,
    attempt: int,
    start: dt.datetime,
    end: dt.datetime,
    outcome: str,
    job_name: str | None = None,
    queue_wait_seconds: float | None = None,
    run_seconds: float | None = None,
    overhead_seconds: float | None = None,
    error: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """Record a finished attempt's span, child of the run's root, id from :func:`attempt_span_id`.

    ``start`` is when Plait created the Job, ``end`` when it observed the completion; the
    three durations split that time (see docs/observability.md).
    """
    attrs = _clean(
        {
            "plait.namespace": namespace,
            "plait.instance": instance,
            "plait.instance.uid": run.instance_uid,
            "plait.workflow.name": workflow,
            "plait.task.name": task,
            "plait.attempt": attempt,
            "plait.outcome": outcome,
            "plait.job.name": job_name,
            "plait.task.queue_wait_seconds": queue_wait_seconds,
            "plait.task.run_seconds": run_seconds,
            "plait.task.overhead_seconds": overhead_seconds,
            **(attributes or {}),
        }
    )
    with _with_ids(None, attempt_span_id(run, task, attempt)):
        span = tracer().start_span(
            TASK_SPAN, run.context(), start_time=_ns(start), attributes=attrs
        )
    _status(span, outcome, error)
    span.end(end_time=_ns(max(start, end)))


@contextlib.contextmanager
def reconcile_span(
    kind: str, namespace: str, name: str, *, run: RunTrace | None = None
) -> Iterator[otel.Span]:
    """One reconciliation: a span (child of ``run``'s root if given), its metrics, log context.

    Wrap a handler's body in it; an exception marks the span ERROR, counts
    ``plait_reconciliations_total{outcome="error"}`` and propagates.
    """
    parent = run.context() if run is not None else None
    attrs = {"plait.kind": kind, "plait.namespace": namespace, "plait.object": name}
    if run is not None:
        attrs["plait.instance.uid"] = run.instance_uid
    with (
        log_context(namespace=namespace, object=name),
        metrics.time_reconciliation(kind),
        tracer().start_as_current_span(RECONCILE_SPAN, parent, attributes=attrs) as span,
    ):
        try:
            yield span
        except BaseException:
            span.set_attribute("plait.outcome", "error")
            raise
        span.set_attribute("plait.outcome", "success")


def start_event_span(
    *,
    namespace: str,
    source: str,
    type: str,
    event_id: str,
    parent_traceparent: str | None = None,
) -> otel.Span:
    """Start (not enter) the ingestion span of one event, a SERVER span joining the sender's
    trace if it sent one; the caller ends it. A batch has one per event, side by side, so
    they cannot be nested context managers. ``traceparent(span.get_span_context())`` is
    what to store with the event, so the runs it starts join its trace."""
    parent: otel_context.Context | None = None
    if parent_traceparent:
        try:
            remote = parse_traceparent(parent_traceparent)
            parent = otel.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())
        except ValidationError as exc:
            log.info("ignoring the event's traceparent: %s", exc)
    attrs = {
        "plait.namespace": namespace,
        "plait.event.source": source,
        "plait.event.type": type,
        "plait.event.id": event_id,
    }
    return tracer().start_span(EVENT_SPAN, parent, kind=otel.SpanKind.SERVER, attributes=attrs)


class EventSpans:
    """The ingestion spans of one request's events (a batch has one per event, side by
    side); ``traceparents[i]`` is what to store with event ``i`` (None: no tracing).

    When spans go to PostgreSQL alone, they are recorded without the SDK's span objects,
    whose start and end cost more than storing the event itself in a batch of thousands:
    ids are drawn here (a remote parent's trace id kept) and each row goes to the span
    writer when the request ends. With an OTLP exporter, each is an SDK span
    (:func:`start_event_span`), so every processor sees it.
    """

    def __init__(self, events: Sequence[tuple[str, str, str, str, str | None]]) -> None:
        """``events``: (namespace, source, type, id, the sender's traceparent) each."""
        active = _active
        self._direct = active if active is not None and not active.exports_elsewhere else None
        self._start = dt.datetime.now(dt.UTC)
        self._sdk: list[otel.Span] = []
        self._rows: list[tuple[int, int, int | None, dict[str, Any]]] = []
        self.traceparents: list[str | None] = []
        for namespace, source, type_, event_id, parent in events:
            if self._direct is None:
                span = start_event_span(
                    namespace=namespace,
                    source=source,
                    type=type_,
                    event_id=event_id,
                    parent_traceparent=parent,
                )
                context = span.get_span_context()
                self.traceparents.append(traceparent(context) if context.is_valid else None)
                self._sdk.append(span)
                continue
            remote = _remote_parent(parent)
            trace_id = remote.trace_id if remote is not None else random.getrandbits(128) or 1
            span_id = random.getrandbits(64) or 1
            attributes = {
                "plait.namespace": namespace,
                "plait.event.source": source,
                "plait.event.type": type_,
                "plait.event.id": event_id,
            }
            self._rows.append(
                (trace_id, span_id, remote.span_id if remote is not None else None, attributes)
            )
            self.traceparents.append(f"00-{trace_id:032x}-{span_id:016x}-01")

    def end(self, error: str | None = None) -> None:
        """End every span; ``error``: why the request failed (the spans' status)."""
        for span in self._sdk:
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()
        if self._direct is None:
            return
        end = max(self._start, dt.datetime.now(dt.UTC))
        status = SpanStatus.ERROR if error is not None else SpanStatus.UNSET
        for trace_id, span_id, parent, attributes in self._rows:
            self._direct.buffer.put(
                repo.Span(
                    start_time=self._start,
                    end_time=end,
                    trace_id=f"{trace_id:032x}",
                    span_id=f"{span_id:016x}",
                    parent_span_id=f"{parent:016x}" if parent is not None else None,
                    name=EVENT_SPAN,
                    component=self._direct.component,
                    kind=SpanKind.SERVER,
                    status_code=status,
                    status_message=error,
                    attributes=attributes,
                )
            )
        self._rows.clear()


def _remote_parent(value: str | None) -> SpanContext | None:
    """The sender's span context from its traceparent; None (logged) when unparsable."""
    if not value:
        return None
    try:
        return parse_traceparent(value)
    except ValidationError as exc:
        log.info("ignoring the event's traceparent: %s", exc)
        return None


@contextlib.contextmanager
def event_span(
    *,
    namespace: str,
    source: str,
    type: str,
    event_id: str,
    parent_traceparent: str | None = None,
) -> Iterator[otel.Span]:
    """:func:`start_event_span`, current (and ended) for the ``with`` block."""
    span = start_event_span(
        namespace=namespace,
        source=source,
        type=type,
        event_id=event_id,
        parent_traceparent=parent_traceparent,
    )
    with log_context(namespace=namespace), otel.use_span(span, end_on_exit=True):
        yield span
