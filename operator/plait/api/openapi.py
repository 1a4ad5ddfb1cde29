"""The OpenAPI 3.1 document of ``plait api``, served at ``/openapi.json``.

Built from the route table (:mod:`plait.api.routes`) and the JSON Schema of the request and
reply models (:mod:`plait.api.models`): nothing in it is written twice. Tests check that it
is a valid OpenAPI document, that it lists exactly the routes served, and a fuzzer checks
that a real ``plait api`` answers every request with a documented status and body.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from plait import __version__
from plait.api.models import SCHEMA_REF
from plait.api.routing import Parameter, Reply, Route, problem

__all__ = [
    "DOCUMENT",
    "FORBIDDEN",
    "UNAUTHORIZED",
    "build_document",
    "openapi_json",
    "query_parameters",
]

DOCUMENT = web.AppKey("openapi_document", dict)
UNAUTHORIZED = problem(
    "No credentials, or bad ones (malformed, unknown, expired or revoked token; ended "
    "session; disabled user).",
    {"WWW-Authenticate": "`Bearer`: the scheme to authenticate with."},
)
FORBIDDEN = problem(
    "Authenticated, but without the route's permission in the namespace; `permission` and "
    "`namespace` name what was missing."
)


Refs = Mapping[tuple[type[BaseModel], JsonSchemaMode], Mapping[str, Any]]


def _models(routes: Iterable[Route]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for route in routes:
        if route.query is not None:
            found[(route.query, "validation")] = None
        if route.body is not None:
            for content in route.body.content.values():
                if isinstance(content, type):
                    found[(content, "validation")] = None
        for reply in (*route.replies.values(), UNAUTHORIZED, FORBIDDEN):
            for model in reply.models:
                found[(model, "serialization")] = None
    return list(found)


def _schemas(routes: Iterable[Route]) -> tuple[Refs, dict[str, Any]]:
    """The $ref of each (model, mode) and the schemas they point to (pydantic names a model
    whose request and reply shapes differ twice, ``-Input`` and ``-Output``)."""
    found, schema = models_json_schema(_models(routes), ref_template=SCHEMA_REF)
    refs = {
        (model, mode): ref
        for (model, mode), ref in found.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    return refs, _without_null_defaults(schema.get("$defs", {}))


def _without_null_defaults(schema: Any) -> Any:
    """``schema`` less ``"default": null``: absent and null mean the same to the API, and the
    schemas do not list null as a value (pydantic writes the Python default)."""
    if isinstance(schema, dict):
        return {
            k: _without_null_defaults(v)
            for k, v in schema.items()
            if not (k == "default" and v is None)
        }
    if isinstance(schema, list):
        return [_without_null_defaults(v) for v in schema]
    return schema


def _parameter(parameter: Parameter) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": parameter.name,
        "in": parameter.location,
        "required": parameter.required or parameter.location == "path",
        "schema": _without_null_defaults(dict(parameter.schema)),
    }
    if parameter.description:
        item["description"] = parameter.description
    return item


def query_parameters(model: type[BaseModel]) -> list[Parameter]:
    """One query parameter per field of ``model``, with the field's JSON Schema."""
    schema = _without_null_defaults(model.model_json_schema(ref_template=SCHEMA_REF))
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema["properties"].items():
        described = dict(property_schema)
        description = described.pop("description", "")
        described.pop("title", None)
        parameters.append(Parameter(name, "query", described, description, name in required))
    return parameters


def _reply(reply: Reply, refs: Refs) -> dict[str, Any]:
    item: dict[str, Any] = {"description": reply.description}
    if reply.models:
        schemas = [dict(refs[(m, "serialization")]) for m in reply.models]
        schema = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
        item["content"] = {reply.content_type or "application/json": {"schema": schema}}
    elif reply.content_type:
        item["content"] = {reply.content_type: {"schema": {"type": "string"}}}
    if reply.headers:
        item["headers"] = {
            name: {"description": meaning, "required": True, "schema": {"type": "string"}}
            for name, meaning in reply.headers.items()
        }
    return item


def _operation(route: Route, refs: Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    if route.description:
        operation["description"] = route.description
    parameters = [*route.parameters]
    if route.query is not None:
        parameters += query_parameters(route.query)
    if parameters:
        operation["parameters"] = [_parameter(p) for p in parameters]
    if route.body is not None:
        content = {
            media: {
                "schema": dict(refs[(schema, "validation")])
                if isinstance(schema, type)
                else dict(schema)
            }
            for media, schema in route.body.content.items()
        }
        operation["requestBody"] = {"required": route.body.required, "content": content}
        if route.body.description:
            operation["requestBody"]["description"] = route.body.description
    replies = dict(route.replies)
    if route.public:
        operation["security"] = []
    else:
        replies.setdefault(401, UNAUTHORIZED)
    if route.access is not None:
        operation["x-plait-permission"] = route.access.permission or "(any authenticated caller)"
        operation["x-plait-namespace"] = (
            "cluster-wide"
            if route.access.namespace is None
            else "any"
            if route.access.namespace == "*"
            else f"path parameter `{route.access.namespace}`"
        )
        if route.access.permission is not None:
            replies.setdefault(403, FORBIDDEN)
    operation["responses"] = {
        str(status): _reply(replies[status], refs) for status in sorted(replies)
    }
    return operation


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``."""
    routes = list(routes)
    refs, schemas = _schemas(routes)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Plait API",
            "version": __version__,
            "description": "Event ingestion (CloudEvents 1.0 over HTTP), the dead-letter "
            "queue and the accounts of Plait. Everything under /v1 but signing in needs "
            "`Authorization: Bearer <token>` (a Plait token, a token of the shared token "
            "file, or a Kubernetes ServiceAccount token) or a session cookie; each operation "
            "names the permission it needs in `x-plait-permission`, held where "
            "`x-plait-namespace` says.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "plait_session"},
            },
            "schemas": schemas,
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[DOCUMENT])
