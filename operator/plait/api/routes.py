"""Every route of ``plait api``, declared once: the router and ``/openapi.json`` both come
from :data:`ROUTES` (see :mod:`plait.api.routing` for what a route declares)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from plait.api import accounts, deadletters, events, health, runs, ui, webhooks, workflowtests
from plait.api.context import NAMESPACE_MAX_LENGTH, NAMESPACE_PATTERN
from plait.api.models import (
    SCHEMA_REF,
    Acknowledgement,
    BatchAcknowledgement,
    CloudEvent,
    DeadLetter,
    DeadLetterPage,
    DeadLetterQuery,
    PurgeRequest,
    PurgeResult,
)
from plait.api.openapi import build_document, openapi_json
from plait.api.routing import Access, Body, Parameter, Reply, Route, problem
from plait.event_processing.cloudevents import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE

__all__ = ["ROUTES", "document"]

_NAMESPACE = Parameter(
    "namespace",
    "path",
    {"type": "string", "pattern": NAMESPACE_PATTERN, "maxLength": NAMESPACE_MAX_LENGTH},
    "Kubernetes namespace the events or dead letters belong to.",
)
_LETTER_ID = Parameter(
    "id",
    "path",
    {"type": "string", "format": "uuid"},
    "Id of the dead letter.",
    # Not the purge route's last segment, so that other methods there answer 405.
    route_pattern="(?!purge$)[^{}/]+",
)


def _header_schema(attribute: dict[str, Any]) -> dict[str, Any]:
    """An attribute's schema as a header's: never null, no title or description."""
    schema = {k: v for k, v in attribute.items() if k not in ("title", "description")}
    branches = [b for b in schema.pop("anyOf", ()) if b.get("type") != "null"]
    if branches:
        schema.update(branches[0])
    return schema


def _binary_mode_headers() -> tuple[Parameter, ...]:
    """``ce-<attribute>`` for each context attribute, with the attribute's schema."""
    properties: dict[str, Any] = CloudEvent.model_json_schema()["properties"]
    names = ("specversion", "id", "source", "type", "subject", "time", "dataschema",
             "partitionkey")  # fmt: skip
    return tuple(
        Parameter(
            f"ce-{name}",
            "header",
            _header_schema(properties[name]),
            f"Binary mode: the `{name}` attribute, percent-encoded UTF-8 "
            "(any other `ce-*` header is an extension attribute).",
        )
        for name in names
    )


_UNAVAILABLE = problem(
    "PostgreSQL cannot be reached; nothing was changed. Retry later.",
    {"Retry-After": "Seconds to wait before retrying."},
)
_INVALID_ID = problem("Invalid namespace, or the id is not a UUID.")
_NOT_FOUND = problem("No such dead letter in the namespace.")
_UNREADABLE = "the body does not decode as its `Content-Encoding` says"
_ACKNOWLEDGED = (Acknowledgement, BatchAcknowledgement)
_LETTER = Reply("The dead letter.", (DeadLetter,))
_PUBLISH = Access("events:publish", "namespace")
_READ_LETTERS = Access("events:read", "namespace")
_WRITE_LETTERS = Access("deadletters:write", "namespace")

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/healthz",
        health.healthz,
        "healthz",
        "Liveness: the process serves HTTP.",
        {200: Reply("ok", content_type="text/plain")},
        public=True,
    ),
    Route(
        "GET",
        "/readyz",
        health.readyz,
        "readyz",
        "Readiness: the database is reachable.",
        {
            200: Reply("ok", content_type="text/plain"),
            503: Reply("database unreachable", content_type="text/plain"),
        },
        public=True,
    ),
    Route(
        "GET",
        "/metrics",
        health.metrics,
        "metrics",
        "Prometheus metrics.",
        {200: Reply("Prometheus text format", content_type=CONTENT_TYPE_LATEST)},
        public=True,
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi_json,
        "openapi",
        "This document.",
        {200: Reply("OpenAPI 3.1 document", content_type="application/json")},
        public=True,
    ),
    Route(
        "POST",
        "/v1/namespaces/{namespace}/events",
        events.post_events,
        "sendEvents",
        "Send CloudEvents (binary mode, structured mode or a batch).",
        {
            202: Reply("Stored (at least one new event, for a batch).", _ACKNOWLEDGED),
            200: Reply("Duplicate(s): already stored, nothing changed.", _ACKNOWLEDGED),
            400: problem(
                "Malformed JSON, an invalid CloudEvent or namespace, or "
                f"{_UNREADABLE}; `errors` say where."
            ),
            408: problem("The body did not arrive within --body-timeout; nothing was stored."),
            413: problem("Over --max-event-bytes, --max-batch-bytes or --max-batch-events."),
            415: problem("An unsupported application/cloudevents* media type."),
            422: problem(
                "Data violates the JSON Schema of the type's EventDefinition; "
                "`errors` give each failing path and reason."
            ),
            500: problem(
                "The EventDefinition of the event's type has an invalid JSON Schema; fix the "
                "definition (nothing was stored)."
            ),
            503: _UNAVAILABLE,
        },
        description="The Content-Type chooses the mode: `application/cloudevents+json` (one "
        "structured event), `application/cloudevents-batch+json` (a JSON array of events, "
        "all stored or none), anything else is binary mode with `ce-specversion`, `ce-id`, "
        "`ce-source`, `ce-type` (and optional `ce-*`) headers and the data as the body. The "
        "answer comes after the events are committed. An event whose source and id were "
        "stored before is acknowledged again and not stored twice.",
        parameters=(_NAMESPACE, *_binary_mode_headers()),
        body=Body(
            {
                STRUCTURED_CONTENT_TYPE: CloudEvent,
                BATCH_CONTENT_TYPE: {
                    "type": "array",
                    "items": {"$ref": SCHEMA_REF.format(model="CloudEvent")},
                },
                "*/*": {"description": "Binary mode: the event's data."},
            }
        ),
        access=_PUBLISH,
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/deadletters",
        deadletters.list_letters,
        "listDeadLetters",
        "List dead letters, newest first.",
        {
            200: Reply("One page.", (DeadLetterPage,)),
            400: problem("Invalid namespace, status, limit or cursor."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE,),
        query=DeadLetterQuery,
        access=_READ_LETTERS,
    ),
    Route(
        "POST",
        "/v1/namespaces/{namespace}/deadletters/purge",
        deadletters.purge_letters,
        "purgeDeadLetters",
        "Delete dead letters by id and/or created before a time.",
        {
            200: Reply("How many were deleted.", (PurgeResult,)),
            400: problem(f"Invalid namespace or body, or {_UNREADABLE}; `errors` say where."),
            408: problem("The body did not arrive within --body-timeout."),
            413: problem(f"The body is over {deadletters.MAX_PURGE_BYTES} bytes."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE,),
        body=Body({"application/json": PurgeRequest}),
        access=_WRITE_LETTERS,
    ),
    Route(
        "GET",
        "/v1/namespaces/{namespace}/deadletters/{id}",
        deadletters.show_letter,
        "getDeadLetter",
        "One dead letter, with the full event.",
        {200: _LETTER, 400: _INVALID_ID, 404: _NOT_FOUND, 503: _UNAVAILABLE},
        parameters=(_NAMESPACE, _LETTER_ID),
        access=_READ_LETTERS,
    ),
    Route(
        "DELETE",
        "/v1/namespaces/{namespace}/deadletters/{id}",
        deadletters.delete_letter,
        "deleteDeadLetter",
        "Delete one dead letter.",
        {204: Reply("Deleted."), 400: _INVALID_ID, 404: _NOT_FOUND, 503: _UNAVAILABLE},
        parameters=(_NAMESPACE, _LETTER_ID),
        access=_WRITE_LETTERS,
    ),
    Route(
        "POST",
        "/v1/namespaces/{namespace}/deadletters/{id}/replay",
        deadletters.replay_letter,
        "replayDeadLetter",
        "Send the event through dispatch again (the letter becomes Replayed).",
        {
            200: Reply("Replayed.", (DeadLetter,)),
            400: _INVALID_ID,
            404: _NOT_FOUND,
            409: problem("The dead letter is not Open (already replayed)."),
            503: _UNAVAILABLE,
        },
        parameters=(_NAMESPACE, _LETTER_ID),
        access=_WRITE_LETTERS,
    ),
    Route(
        "POST",
        "/v1/namespaces/{namespace}/webhooks/{integration}",
        webhooks.post_webhook,
        "receiveWebhook",
        "Receive a signed delivery (GitHub, Slack, HMAC) as a CloudEvent.",
        {
            202: Reply("Verified and stored as a new event.", (Acknowledgement,)),
            200: Reply(
                "A redelivery (same id): already stored, nothing changed; or Slack's URL "
                "verification answered with its challenge.",
                (Acknowledgement, webhooks.UrlVerification),
            ),
            400: problem("Verified, but the body is not what the sender sends (not JSON, ...)."),
            401: problem("Unsigned, wrongly signed, too old, or no Integration to verify it with."),
            404: problem("Not an Integration name."),
            408: problem("The body did not arrive within --body-timeout; nothing was stored."),
            413: problem("Over --max-event-bytes."),
            503: _UNAVAILABLE,
        },
        description="The route needs no token: the signature is the credential, checked with "
        "the signing secret of the Integration (its type's webhook key in its Secret) before "
        "anything is stored. See docs/integrations.md for the event each delivery becomes.",
        parameters=(
            _NAMESPACE,
            Parameter(
                "integration",
                "path",
                {"type": "string", "maxLength": 253},
                "Name of the Integration (type github, slack or webhook) in the namespace.",
            ),
        ),
        body=Body({"*/*": {"description": "The delivery, exactly as signed."}}),
        public=True,
    ),
    *runs.ROUTES,
    *workflowtests.ROUTES,
    *accounts.ROUTES,
    *ui.ROUTES,
)


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document of :data:`ROUTES` (built once)."""
    return build_document(ROUTES)
