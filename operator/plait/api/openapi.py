"""The OpenAPI 3.1 document of ``plait api``, served at ``/openapi.json``.

Written by hand next to the routes it describes; a test checks that it is a valid OpenAPI
document and that it lists exactly the routes the application serves.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from plait import __version__

__all__ = ["add_routes", "document"]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


_NAMESPACE = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "description": "Kubernetes namespace the events or dead letters belong to.",
    "schema": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
}
_LETTER_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "Id of the dead letter.",
    "schema": {"type": "string", "format": "uuid"},
}
_UNAUTHORIZED = _problem("Missing or wrong bearer token (with `WWW-Authenticate: Bearer`).")
_SERVICE_UNAVAILABLE = _problem("The database cannot be reached; nothing was stored.")

_CLOUDEVENT = {
    "type": "object",
    "description": "A CloudEvent 1.0 in JSON format. Other lower-case alphanumeric members "
    "are extension attributes (strings, integers or booleans); `partitionkey` orders "
    "events that share it (else `subject` does).",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1, "format": "uri-reference"},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": "string", "minLength": 1},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string", "format": "uri"},
        "data": {"description": "Event data (JSON)."},
        "data_base64": {"type": "string", "contentEncoding": "base64"},
        "partitionkey": {"type": "string", "minLength": 1},
    },
    "additionalProperties": {"type": ["string", "integer", "boolean"]},
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Plait API",
        "version": __version__,
        "description": "Event ingestion (CloudEvents 1.0 over HTTP) and the dead-letter queue "
        "of Plait. Everything under /v1 needs `Authorization: Bearer <token>`.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Liveness: the process serves HTTP.",
                "operationId": "healthz",
                "security": [],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the database is reachable.",
                "operationId": "readyz",
                "security": [],
                "responses": {
                    "200": {"description": "ok"},
                    "503": {"description": "database unreachable"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics.",
                "operationId": "metrics",
                "security": [],
                "responses": {"200": {"description": "Prometheus text format"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1 document"}},
            }
        },
        "/v1/namespaces/{namespace}/events": {
            "parameters": [_NAMESPACE],
            "post": {
                "summary": "Send CloudEvents (binary mode, structured mode or a batch).",
                "description": "The Content-Type chooses the mode: "
                "`application/cloudevents+json` (one structured event), "
                "`application/cloudevents-batch+json` (a JSON array of events, all stored or "
                "none), anything else is binary mode with `ce-specversion`, `ce-id`, "
                "`ce-source`, `ce-type` (and optional `ce-*`) headers and the data as the body. "
                "The answer comes after the events are committed. An event whose source and id "
                "were stored before is acknowledged again and not stored twice.",
                "operationId": "sendEvents",
                "parameters": [
                    {
                        "name": "ce-specversion",
                        "in": "header",
                        "required": False,
                        "description": "Binary mode: `1.0` (also ce-id, ce-source, ce-type, ...).",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/cloudevents+json": {
                            "schema": {"$ref": "#/components/schemas/CloudEvent"}
                        },
                        "application/cloudevents-batch+json": {
                            "schema": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/CloudEvent"},
                            }
                        },
                        "*/*": {"schema": {"description": "Binary mode: the event's data."}},
                    },
                },
                "responses": {
                    "202": {
                        "description": "Stored (at least one new event, for a batch).",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Acknowledgement"},
                                        {"$ref": "#/components/schemas/BatchAcknowledgement"},
                                    ]
                                }
                            }
                        },
                    },
                    "200": {
                        "description": "Duplicate(s): already stored, nothing changed.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Acknowledgement"},
                                        {"$ref": "#/components/schemas/BatchAcknowledgement"},
                                    ]
                                }
                            }
                        },
                    },
                    "400": _problem("Malformed JSON or an invalid CloudEvent; `errors` say where."),
                    "401": _UNAUTHORIZED,
                    "413": _problem(
                        "Over --max-event-bytes, --max-batch-bytes or --max-batch-events."
                    ),
                    "415": _problem("An unsupported application/cloudevents* media type."),
                    "422": _problem(
                        "Data violates the JSON Schema of the type's EventDefinition; "
                        "`errors` give each failing path and reason."
                    ),
                    "503": _SERVICE_UNAVAILABLE,
                },
            },
        },
        "/v1/namespaces/{namespace}/deadletters": {
            "parameters": [_NAMESPACE],
            "get": {
                "summary": "List dead letters, newest first.",
                "operationId": "listDeadLetters",
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["Open", "Replayed", "Discarded"]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`nextCursor` of the previous page.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "One page.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["items", "nextCursor"],
                                    "properties": {
                                        "items": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/DeadLetter"},
                                        },
                                        "nextCursor": {"type": ["string", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "400": _problem("Invalid status, limit or cursor."),
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/v1/namespaces/{namespace}/deadletters/purge": {
            "parameters": [_NAMESPACE],
            "post": {
                "summary": "Delete dead letters by id and/or created before a time.",
                "operationId": "purgeDeadLetters",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "minProperties": 1,
                                "properties": {
                                    "ids": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": {"type": "string", "format": "uuid"},
                                    },
                                    "olderThan": {"type": "string", "format": "date-time"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "How many were deleted.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"purged": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    "400": _problem("Invalid body."),
                    "401": _UNAUTHORIZED,
                },
            },
        },
        "/v1/namespaces/{namespace}/deadletters/{id}": {
            "parameters": [_NAMESPACE, _LETTER_ID],
            "get": {
                "summary": "One dead letter, with the full event.",
                "operationId": "getDeadLetter",
                "responses": {
                    "200": {
                        "description": "The dead letter.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DeadLetter"}
                            }
                        },
                    },
                    "400": _problem("The id is not a UUID."),
                    "401": _UNAUTHORIZED,
                    "404": _problem("No such dead letter in the namespace."),
                },
            },
            "delete": {
                "summary": "Delete one dead letter.",
                "operationId": "deleteDeadLetter",
                "responses": {
                    "204": {"description": "Deleted."},
                    "400": _problem("The id is not a UUID."),
                    "401": _UNAUTHORIZED,
                    "404": _problem("No such dead letter in the namespace."),
                },
            },
        },
        "/v1/namespaces/{namespace}/deadletters/{id}/replay": {
            "parameters": [_NAMESPACE, _LETTER_ID],
            "post": {
                "summary": "Send the event through dispatch again (the letter becomes Replayed).",
                "operationId": "replayDeadLetter",
                "responses": {
                    "200": {
                        "description": "Replayed.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/DeadLetter"}
                            }
                        },
                    },
                    "401": _UNAUTHORIZED,
                    "404": _problem("No such dead letter in the namespace."),
                    "409": _problem("The dead letter is not Open (already replayed)."),
                },
            },
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "CloudEvent": _CLOUDEVENT,
            "Acknowledgement": {
                "type": "object",
                "required": ["id", "source", "stored", "position", "partitionKey"],
                "properties": {
                    "id": {"type": "string"},
                    "source": {"type": "string"},
                    "stored": {
                        "type": "boolean",
                        "description": "false: a duplicate of an event stored before.",
                    },
                    "position": {
                        "type": ["integer", "null"],
                        "description": "Position in the (namespace, type, partition key) "
                        "sequence, from 1; null for an event without a partition key.",
                    },
                    "partitionKey": {"type": ["string", "null"]},
                },
            },
            "BatchAcknowledgement": {
                "type": "object",
                "required": ["stored", "duplicates", "events"],
                "properties": {
                    "stored": {"type": "integer"},
                    "duplicates": {"type": "integer"},
                    "events": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Acknowledgement"},
                    },
                },
            },
            "DeadLetter": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "namespace": {"type": "string"},
                    "eventInstanceId": {"type": ["string", "null"], "format": "uuid"},
                    "source": {"type": "string"},
                    "eventId": {"type": "string"},
                    "type": {"type": "string"},
                    "reason": {"type": "string"},
                    "attempts": {"type": "integer"},
                    "status": {"type": "string", "enum": ["Open", "Replayed", "Discarded"]},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "resolvedAt": {"type": ["string", "null"], "format": "date-time"},
                    "payload": {"$ref": "#/components/schemas/CloudEvent"},
                },
            },
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string", "format": "uri"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["path", "reason"],
                            "properties": {
                                "path": {
                                    "type": "string",
                                    "description": "JSON pointer into the request (for a "
                                    "batch it starts with the event's index).",
                                },
                                "reason": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def document() -> dict[str, Any]:
    return _DOCUMENT


async def openapi_json(_: web.Request) -> web.Response:
    return web.json_response(_DOCUMENT)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
