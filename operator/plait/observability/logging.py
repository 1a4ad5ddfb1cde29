"""Structured logging: one JSON object per line, with context, and secrets redacted.

Every record carries the component that wrote it, the namespace and object it is about
(:func:`log_context`, a contextvar, so it follows ``await`` and never leaks between
concurrent handlers), and the trace and span ids of the current OpenTelemetry span.
:class:`RedactionFilter` rewrites the message, the exception text and extra attributes
before any handler formats or ships the record, so a secret never reaches stderr nor
``observability_logs``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import trace

__all__ = [
    "REDACTED",
    "ContextFilter",
    "JsonFormatter",
    "RedactionFilter",
    "RoutineSuccessFilter",
    "TextFormatter",
    "component_of",
    "configure_logging",
    "current_context",
    "log_context",
    "redact",
    "redact_text",
    "set_process_component",
]

REDACTED = "[REDACTED]"

_KNOWN_COMPONENTS = frozenset(
    {
        "workflow_orchestrator",
        "event_processing",
        "task_execution",
        "integration",
        "observability",
        "auth",
        "testing_framework",
        "web_application",
        "controller",
        "api",
        "kernel",
    }
)

_process_component = "plait"
_component: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "plait_log_component", default=None
)
_namespace: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "plait_log_namespace", default=None
)
_object: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "plait_log_object", default=None
)
_instance: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar(
    "plait_log_workflow_instance", default=None
)
_task: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar(
    "plait_log_task_instance", default=None
)

# --- redaction --------------------------------------------------------------------------

_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_.-])?(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|authorization|credentials?|cookie|set-cookie)s?$"
)
_KEY_WORDS = (
    r"[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|credentials?)s?"
)
_TEXT_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer abc / Basic abc (header dumps, dict reprs)
    (
        re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?)(?:\w+\s+)?[^\s'\",;}]+"),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
    # password=..., "token": "...", secret: ... (DSN keywords, JSON, YAML, query strings)
    (
        re.compile(
            r"(?i)(\b" + _KEY_WORDS + r"['\"]?\s*[:=]\s*['\"]?)(?!\[REDACTED\])[^\s'\",;&}]+"
        ),
        r"\1" + REDACTED,
    ),
)


def redact_text(text: str) -> str:
    """``text`` with bearer tokens, URL passwords and ``password=``-like values masked."""
    for pattern, replacement in _TEXT_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """Recursively mask values under secret-like keys, and secrets inside strings."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.match(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_CONTEXT_ATTRS = frozenset(
    {
        "plait_component",
        "plait_namespace",
        "plait_object",
        "plait_workflow_instance_id",
        "plait_task_instance_id",
        "plait_trace_id",
        "plait_span_id",
        "plait_redacted",
    }
)


#: ``extra=`` attributes that say nothing about the event: Kopf passes its whole
#: OperatorSettings with every object log record (about 2 KB each).
_IGNORED_ATTRS = frozenset({"settings"})


def extra_attributes(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` attributes of a record (already redacted by :class:`RedactionFilter`)."""
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _STANDARD_ATTRS
        and k not in _CONTEXT_ATTRS
        and k not in _IGNORED_ATTRS
        and not k.startswith("_")
    }


class RedactionFilter(logging.Filter):
    """Masks secrets in the message, its arguments, the traceback and ``extra=`` values.

    Attach it to every handler (``configure_logging`` does): handler filters run for
    records propagated from any logger, logger filters would not. Idempotent.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "plait_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in extra_attributes(record).items():
            setattr(record, key, REDACTED if _SECRET_KEY.match(key) else redact(value))
        record.plait_redacted = True
        return True


# --- context ----------------------------------------------------------------------------


def set_process_component(name: str) -> None:
    """The component named on records whose logger is not inside a Plait component."""
    global _process_component
    _process_component = name


def component_of(logger_name: str) -> str:
    """``plait.event_processing.x`` -> ``event_processing``; else the process's component."""
    override = _component.get()
    if override:
        return override
    parts = logger_name.split(".", 2)
    if len(parts) >= 2 and parts[0] == "plait" and parts[1] in _KNOWN_COMPONENTS:
        return parts[1]
    return _process_component


@contextlib.contextmanager
def log_context(
    *,
    namespace: str | None = None,
    object: str | None = None,
    component: str | None = None,
    workflow_instance_id: uuid.UUID | str | None = None,
    task_instance_id: uuid.UUID | str | None = None,
) -> Iterator[None]:
    """Stamp every record logged inside the block (and its awaits) with these fields.

    Only the arguments given change; the others keep the enclosing block's values.
    """
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []

    def put(var: contextvars.ContextVar[Any], value: Any) -> None:
        if value is not None:
            tokens.append((var, var.set(value)))

    put(_namespace, namespace)
    put(_object, object)
    put(_component, component)
    put(_instance, _as_uuid(workflow_instance_id))
    put(_task, _as_uuid(task_instance_id))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def current_context() -> dict[str, Any]:
    """The fields :func:`log_context` set here, and the current span's ids (for tests, CLI)."""
    span = trace.get_current_span().get_span_context()
    return {
        "namespace": _namespace.get(),
        "object": _object.get(),
        "workflow_instance_id": _instance.get(),
        "task_instance_id": _task.get(),
        "trace_id": format(span.trace_id, "032x") if span.is_valid else None,
        "span_id": format(span.span_id, "016x") if span.is_valid else None,
    }


class ContextFilter(logging.Filter):
    """Copies the log context and the current span's ids onto the record, at logging time."""

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "plait_component"):
            return True
        record.plait_component = component_of(record.name)
        record.plait_namespace = _namespace.get()
        record.plait_object = _object.get()
        record.plait_workflow_instance_id = _instance.get()
        record.plait_task_instance_id = _task.get()
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.plait_trace_id = format(span.trace_id, "032x")
            record.plait_span_id = format(span.span_id, "016x")
        else:
            record.plait_trace_id = record.plait_span_id = None
        return True


# --- formatting -------------------------------------------------------------------------


def _iso(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, ids, exc_info, extra."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "component": getattr(record, "plait_component", None) or component_of(record.name),
        }
        for key in ("namespace", "object", "trace_id", "span_id"):
            value = getattr(record, f"plait_{key}", None)
            if value is not None:
                doc[key] = value
        for key in ("workflow_instance_id", "task_instance_id"):
            value = getattr(record, f"plait_{key}", None)
            if value is not None:
                doc[key] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = record.stack_info
        for key, value in extra_attributes(record).items():
            doc.setdefault(key, value)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the context in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        where = "/".join(
            v
            for v in (
                getattr(record, "plait_namespace", None),
                getattr(record, "plait_object", None),
            )
            if v
        )
        trace_id = getattr(record, "plait_trace_id", None)
        tags = " ".join(
            t for t in (f"[{where}]" if where else "", f"trace={trace_id}" if trace_id else "") if t
        )
        if not tags:
            return line
        head, sep, rest = line.partition("\n")
        return f"{head} {tags}{sep}{rest}"


class RoutineSuccessFilter(logging.Filter):
    """Demotes Kopf's "Handler '…' succeeded." to DEBUG (and drops it unless DEBUG is on).

    Kopf logs it at INFO for every watch event a handler takes: four or more per task
    (its Job's and Pod's events), each formatted, redacted and shipped to PostgreSQL for
    nothing; a handler's failure and retries stay warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not isinstance(record.msg, str):
            return True
        if not (record.msg.startswith("Handler '") and record.msg.endswith("' succeeded.")):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_ROUTINE_SUCCESS = RoutineSuccessFilter()


def configure_logging(
    level: str | int = "INFO", *, json: bool = True, component: str = "plait"
) -> logging.Handler:
    """Replace the root handlers with one stderr handler (JSON or text), filtered.

    Returns the handler. Records of every logger (Kopf, aiohttp, psycopg) go through the
    context and redaction filters. Call once at process start, before anything logs.
    """
    set_process_component(component)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if not getattr(old, "plait_keep", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    kopf_objects = logging.getLogger("kopf.objects")
    if _ROUTINE_SUCCESS not in kopf_objects.filters:
        kopf_objects.addFilter(_ROUTINE_SUCCESS)
    return handler
