"""``/v1/ui/components``: the dashboard's versioned components (pages, charts, tables).

Applying a component stores its spec as the next version (an unchanged spec stores
nothing); rolling back stores an older version's spec again as the newest, so history only
grows. Components are global, not namespaced: changing one needs ``workflows:write``
everywhere; reading them, ``instances:read`` in some namespace (what the overview needs).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field

from plait.api.context import DATABASE, read_capped, validated
from plait.api.problems import Problem
from plait.api.routing import Access, Body, Parameter, Reply, Route, problem
from plait.auth.permissions import ANY_NAMESPACE
from plait.errors import ConfigurationError, ValidationError
from plait.event_processing.cloudevents import load_json
from plait.web_application import repository
from plait.web_application.panels import validate_spec
from plait.web_application.repository import UiComponent
from plait.web_application.states import UiComponentKind

__all__ = ["ROUTES"]

MAX_BODY_BYTES = 64 * 1024
_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")


class ComponentIn(BaseModel):
    """A component to apply: its kind and spec."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["page", "chart", "table"]
    spec: dict[str, Any]


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[int, Field(ge=1, le=2_147_483_647)]


class ComponentOut(BaseModel):
    """One version of a component."""

    name: str
    version: int
    kind: str
    spec: dict[str, Any]
    spec_hash: str = Field(serialization_alias="specHash")
    created_at: datetime = Field(serialization_alias="createdAt")
    #: False when applying changed nothing (the spec was the latest already).
    created: bool = True


class ComponentList(BaseModel):
    items: list[ComponentOut]


def _out(c: UiComponent, created: bool = True) -> ComponentOut:
    return ComponentOut(
        name=c.name,
        version=c.version,
        kind=c.kind.value,
        spec=c.spec,
        spec_hash=c.spec_hash,
        created_at=c.created_at,
        created=created,
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.match(name):
        raise ValidationError(
            f"{name[:80]!r} is not a component name: a lower-case letter, then up to 127 "
            "lower-case letters, digits, '_', '.' or '-'"
        )
    return name


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    raw = await read_capped(request, MAX_BODY_BYTES, "request body", "a fixed limit")
    try:
        data = load_json(raw or b"null")
    except ValueError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from None
    return validated(model, data)


@contextlib.asynccontextmanager
async def _connection(request: web.Request) -> AsyncIterator[AsyncConnection[Any]]:
    """The web_application component's connection; 503 where this API has no database
    for it (``PLAIT_DATABASE_URL_WEB_APPLICATION`` or the shared one)."""
    database = request.app[DATABASE]
    try:
        database.pool("web_application")
    except ConfigurationError as exc:
        raise Problem(503, "not-configured", "Not configured", str(exc)) from None
    async with database.connection("web_application") as conn:
        yield conn


async def list_components(request: web.Request) -> web.Response:
    async with _connection(request) as conn:
        found = await repository.list_ui_components(conn)
    return _json(ComponentList(items=[_out(c) for c in found]))


async def apply_component(request: web.Request) -> web.Response:
    name = _name(request)
    body: ComponentIn = await _body(request, ComponentIn)
    spec = validate_spec(body.kind, body.spec)
    async with _connection(request) as conn:
        latest = await repository.latest_ui_component(conn, name)
        if latest is not None and latest.kind.value != body.kind:
            raise Problem(
                409,
                "kind-changed",
                "Conflict",
                f"{name} is a {latest.kind.value}; a component keeps its kind",
            )
        stored, created = await repository.upsert_ui_component(
            conn, name, UiComponentKind(body.kind), spec
        )
    return _json(_out(stored, created), 201 if created else 200)


async def show_component(request: web.Request) -> web.Response:
    name = _name(request)
    async with _connection(request) as conn:
        versions = await repository.ui_component_versions(conn, name)
    if not versions:
        raise Problem(404, "not-found", "Not found", f"no dashboard component {name!r}")
    return _json(ComponentList(items=[_out(v) for v in versions]))


async def rollback_component(request: web.Request) -> web.Response:
    name = _name(request)
    body: RollbackIn = await _body(request, RollbackIn)
    async with _connection(request) as conn:
        old = await repository.get_ui_component_version(conn, name, body.version)
        if old is None:
            raise Problem(404, "not-found", "Not found", f"{name} has no version {body.version}")
        stored, created = await repository.upsert_ui_component(conn, name, old.kind, old.spec)
    return _json(_out(stored, created), 201 if created else 200)


_COMPONENT_NAME = Parameter(
    "name",
    "path",
    {"type": "string", "pattern": _NAME.pattern},
    "Name of the component.",
)
_UNAVAILABLE = problem(
    "PostgreSQL cannot be reached, or this API has no database for the web_application "
    "component (PLAIT_DATABASE_URL_WEB_APPLICATION or the shared one); nothing was changed.",
    {"Retry-After": "Seconds to wait before retrying (when PostgreSQL cannot be reached)."},
)
_READ = Access("instances:read", ANY_NAMESPACE)
_WRITE = Access("workflows:write")
_STORED = (ComponentOut,)

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/ui/components",
        list_components,
        "listUiComponents",
        "The latest version of every dashboard component.",
        {200: Reply("Every live component.", (ComponentList,)), 503: _UNAVAILABLE},
        access=_READ,
    ),
    Route(
        "GET",
        "/v1/ui/components/{name}",
        show_component,
        "getUiComponent",
        "Every version of one dashboard component, newest first.",
        {
            200: Reply("Its versions.", (ComponentList,)),
            400: problem("Not a component name."),
            404: problem("No such component."),
            503: _UNAVAILABLE,
        },
        parameters=(_COMPONENT_NAME,),
        access=_READ,
    ),
    Route(
        "PUT",
        "/v1/ui/components/{name}",
        apply_component,
        "applyUiComponent",
        "Store a page, chart or table as the component's next version.",
        {
            200: Reply("The spec was the latest version already; nothing stored.", _STORED),
            201: Reply("Stored as the next version.", _STORED),
            400: problem("Not a component name, malformed JSON, or a spec that breaks the rules."),
            408: problem("The body did not arrive within --body-timeout."),
            409: problem("The component exists with another kind."),
            413: problem(f"The body is over {MAX_BODY_BYTES} bytes."),
            503: _UNAVAILABLE,
        },
        description="A chart or table reads one allow-listed observability view (or metric) "
        "by its columns; no SQL is accepted. See docs/dashboard.md for the spec.",
        parameters=(_COMPONENT_NAME,),
        body=Body({"application/json": ComponentIn}),
        access=_WRITE,
    ),
    Route(
        "POST",
        "/v1/ui/components/{name}/rollback",
        rollback_component,
        "rollbackUiComponent",
        "Store an older version's spec again as the newest version.",
        {
            200: Reply("That version is the latest already; nothing stored.", _STORED),
            201: Reply("Stored as the next version.", _STORED),
            400: problem("Not a component name, or a malformed body."),
            404: problem("No such component or version."),
            408: problem("The body did not arrive within --body-timeout."),
            413: problem(f"The body is over {MAX_BODY_BYTES} bytes."),
            503: _UNAVAILABLE,
        },
        parameters=(_COMPONENT_NAME,),
        body=Body({"application/json": RollbackIn}),
        access=_WRITE,
    ),
)
