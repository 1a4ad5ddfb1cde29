"""What a "wait for event" task waits for, and whether an event is it: pure functions.

A waiting task attempt is a row in ``workflow_event_subscriptions`` whose ``filter`` holds
the correlation (CEL text) and the values it reads, frozen when the task started waiting
(:func:`filter_document`): matching an event then needs that row and the event alone, never
the run's other state, so any process holding the event can decide it.

The correlation sees ``event`` (:func:`event_view`: ``id``, ``source``, ``type``,
``subject``, ``time``, ``data``, ``extensions``, the shape triggers see too), ``params``,
``tasks`` (``tasks.<name>.outputs`` and ``.phase`` of the upstream tasks it names) and
``workflow`` (``name``, ``namespace``). The matched event's data becomes the task's
outputs (:func:`outputs_of`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from plait.errors import ValidationError
from plait.event_processing.repository import EventInstance
from plait.kernel import expressions

__all__ = [
    "correlates",
    "event_view",
    "filter_document",
    "outputs_of",
    "timeout_message",
]

logger = logging.getLogger(__name__)


def event_view(event: EventInstance) -> dict[str, Any]:
    """The ``event`` variable of CEL: the CloudEvent's attributes (``id`` is the sender's
    id), its data (``data_base64`` text for binary data) and its extensions."""
    return {
        "id": event.event_id,
        "source": event.source,
        "type": event.type,
        "subject": event.subject,
        "time": event.time,
        "data": event.data if event.data is not None else event.data_base64,
        "extensions": dict(event.extensions or {}),
    }


def outputs_of(event: EventInstance) -> dict[str, Any]:
    """The waiting task's outputs: the event's data when it is a JSON object, else
    ``{"data": <the value>}`` (a list, a string, a number, base64 text of binary data);
    an event without data gives no outputs (``{}``)."""
    data = event.data if event.data is not None else event.data_base64
    if isinstance(data, dict):
        return dict(data)
    if data is None:
        return {}
    return {"data": data}


def filter_document(
    correlation: str,
    params: Mapping[str, Any],
    tasks: Mapping[str, Any],
    workflow: Mapping[str, Any],
) -> dict[str, Any]:
    """What a subscription stores to decide matches on its own: the correlation and the
    values of ``params``, ``tasks`` and ``workflow`` it may read (every parameter, the
    upstream tasks it names: all finished ones when it computes a name)."""
    named = expressions.member_references(correlation, "tasks")
    uses_tasks = "tasks" in _program(correlation).variables
    if "*" in named or (uses_tasks and not named):
        chosen = dict(tasks)
    else:
        chosen = {name: tasks[name] for name in named if name in tasks}
    return {
        "correlation": correlation,
        "bindings": {"params": dict(params), "tasks": chosen, "workflow": dict(workflow)},
    }


def correlates(document: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether the correlation of a subscription's ``filter`` is true for ``event`` (an
    :func:`event_view`). An expression that fails on this event (a missing key, a wrong
    type) is a non-match for it: events of the type that lack the field are not the one
    awaited, and they must not hold up the others."""
    correlation = document.get("correlation")
    if not isinstance(correlation, str):
        return False
    bindings = dict(document.get("bindings") or {})
    try:
        verdict = expressions.evaluate(_program(correlation), {**bindings, "event": dict(event)})
    except ValidationError as exc:
        logger.debug("correlation %r failed on event %s: %s", correlation, event.get("id"), exc)
        return False
    return verdict is True


@functools.lru_cache(maxsize=1024)
def _program(correlation: str) -> expressions.Program:
    """Compiled once per distinct correlation: an event is checked against many waits."""
    return expressions.compile(correlation)


def timeout_message(event_type: str, seconds: int) -> str:
    """The message of an attempt whose wait timed out."""
    return f"no matching event of type {event_type} within {seconds}s"
