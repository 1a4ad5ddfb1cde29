"""``POST /v1/namespaces/{namespace}/events``: CloudEvents in, acknowledged once committed.

The Content-Type picks the mode: ``application/cloudevents-batch+json`` is a batch,
``application/cloudevents+json`` one structured event, anything else binary mode (``ce-*``
headers). A request is all-or-nothing: every event is parsed first, then checked against its
type's JSON Schema and stored in one transaction, and the answer is sent only after that
transaction committed. Requests that arrive together share that transaction
(:mod:`plait.event_processing.group_commit`), so concurrent single events do not each pay
a commit. A redelivered event (same source and id) is acknowledged again (200) and stored
once.

Bodies are read with a cap: a Content-Length over the limit is refused before anything is
read, and a body streamed without one is cut off at the limit.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Sequence

from aiohttp import web
from jsonschema.exceptions import SchemaError

from plait.api.context import CONFIG, DATABASE, namespace_of, read_capped
from plait.api.models import Acknowledgement, BatchAcknowledgement
from plait.api.problems import Problem
from plait.event_processing.cloudevents import (
    BATCH_CONTENT_TYPE,
    STRUCTURED_CONTENT_TYPE,
    CloudEvent,
    InvalidEventError,
    SchemaValidator,
    Violation,
    parse_batch,
    parse_binary,
    parse_structured,
)
from plait.event_processing.group_commit import Definitions, GroupCommit
from plait.event_processing.repository import EventReceipt, NewEvent
from plait.observability.metrics import event_ingested
from plait.observability.tracing import EventSpans

__all__ = ["SCHEMA_VALIDATOR", "post_events"]

logger = logging.getLogger(__name__)

#: Events committed together at most (concurrent requests, a batch counts its events).
GROUP_EVENTS = 1000
SCHEMA_VALIDATOR = web.AppKey("schema_validator", SchemaValidator)


def _acknowledgement(instance: EventReceipt, created: bool) -> Acknowledgement:
    return Acknowledgement(
        id=instance.event_id,
        source=instance.source,
        stored=created,
        position=instance.sequence_position,
        partition_key=instance.partition_key,
    )


async def _parse(request: web.Request) -> tuple[list[CloudEvent], bool]:
    """(events, is_batch) of the request, or a 4xx Problem."""
    config = request.app[CONFIG]
    media = request.content_type
    if media == BATCH_CONTENT_TYPE:
        body = await read_capped(request, config.max_batch_bytes, "batch", "--max-batch-bytes")
        events = parse_batch(body)
        if len(events) > config.max_batch_events:
            raise Problem(
                413,
                "payload-too-large",
                "Payload too large",
                f"the batch holds {len(events)} events; the limit is {config.max_batch_events} "
                "events (--max-batch-events)",
            )
        if len(body) > config.max_event_bytes:
            # Only then can one event exceed the per-event limit; measure each as sent back.
            for index, event_json in enumerate(json.loads(body)):
                size = len(json.dumps(event_json, separators=(",", ":")).encode())
                if size > config.max_event_bytes:
                    raise Problem(
                        413,
                        "payload-too-large",
                        "Payload too large",
                        f"event /{index} is {size} bytes; the limit is {config.max_event_bytes} "
                        "bytes per event (--max-event-bytes)",
                    )
        return events, True
    body = await read_capped(request, config.max_event_bytes, "event", "--max-event-bytes")
    if media == STRUCTURED_CONTENT_TYPE:
        return [parse_structured(body)], False
    if media.startswith("application/cloudevents"):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"{media} is not supported: use {STRUCTURED_CONTENT_TYPE}, {BATCH_CONTENT_TYPE} "
            "or binary mode (ce-* headers)",
        )
    return [parse_binary(request.headers, body)], False


def _check_schemas(
    validator: SchemaValidator,
    namespace: str,
    events: Sequence[CloudEvent],
    is_batch: bool,
    definitions: Definitions,
) -> None:
    """Refuse the request unless every event's data satisfies its type's JSON Schema."""
    problems: list[Violation] = []
    for index, event in enumerate(events):
        definition = definitions.get((namespace, event.type))
        schema = definition.spec.get("schema") if definition is not None else None
        if not isinstance(schema, dict):
            continue
        assert definition is not None
        try:
            problems += validator.violations(
                event, definition.id, schema, f"/{index}" if is_batch else ""
            )
        except SchemaError as exc:
            raise Problem(
                500,
                "invalid-event-definition",
                "Invalid event definition",
                f"the JSON Schema of EventDefinition {namespace}/{definition.name} (type "
                f"{event.type!r}) is itself invalid: {exc.message}",
            ) from None
    if problems:
        raise InvalidEventError(
            "Event data does not match its EventDefinition's schema", problems, status=422
        )


_GROUP_COMMITS: weakref.WeakKeyDictionary[web.Application, GroupCommit] = (
    weakref.WeakKeyDictionary()
)


def _group_commit(app: web.Application) -> GroupCommit:
    """The application's group commit, made on first use (one per application)."""
    group = _GROUP_COMMITS.get(app)
    if group is None:
        database = app[DATABASE]
        group = GroupCommit(
            lambda: database.connection("event_processing"),
            max_attempts=app[CONFIG].max_attempts,
            max_group_events=max(app[CONFIG].max_batch_events, GROUP_EVENTS),
        )
        _GROUP_COMMITS[app] = group
    return group


def _traced(namespace: str, events: list[CloudEvent]) -> tuple[list[NewEvent], EventSpans]:
    """Start each event's ingestion span; the span's trace context goes into the event's
    ``traceparent`` extension (CloudEvents distributed tracing), so the runs it starts join
    the sender's trace through it."""
    spans = EventSpans(
        [
            (namespace, e.source, e.type, e.id, _str_or_none(e.extensions.get("traceparent")))
            for e in events
        ]
    )
    traced = [
        e.to_new_event(namespace, parent)
        for e, parent in zip(events, spans.traceparents, strict=True)
    ]
    return traced, spans


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def post_events(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    try:
        events, is_batch = await _parse(request)
    except (InvalidEventError, Problem):
        event_ingested("rejected")
        raise
    validator = request.app[SCHEMA_VALIDATOR]

    def check(definitions: Definitions) -> None:
        _check_schemas(validator, namespace, events, is_batch, definitions)

    # The check runs in the transaction that stores the events, together with the other
    # requests of its group: one query finds the definitions of all their types.
    traced, spans = _traced(namespace, events)
    error: str | None = None
    try:
        results = await _group_commit(request.app).store(traced, check)
    except (InvalidEventError, Problem) as exc:
        event_ingested("rejected", len(events))
        error = str(exc)
        raise
    finally:
        spans.end(error)
    stored = sum(1 for _, created in results if created)
    if stored:
        event_ingested("stored", stored)
    if len(results) - stored:
        event_ingested("duplicate", len(results) - stored)
    status = 202 if stored else 200
    answer: Acknowledgement | BatchAcknowledgement = (
        BatchAcknowledgement(
            stored=stored,
            duplicates=len(results) - stored,
            events=[_acknowledgement(i, c) for i, c in results],
        )
        if is_batch
        else _acknowledgement(*results[0])
    )
    return web.json_response(answer.model_dump(mode="json", by_alias=True), status=status)
