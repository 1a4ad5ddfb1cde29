"""What a route of ``plait api`` declares, and the aiohttp router built from those
declarations.

A :class:`Route` says in one place everything about one operation: method, path, handler,
summary, parameters, request body and reply models, every status it can answer, and
whether it is public or which permission it needs, where. :func:`add_routes` builds the
router from the table in :mod:`plait.api.routes` and
:func:`plait.api.openapi.build_document` builds the OpenAPI document from the same table,
so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from plait.api.models import ProblemDetails

__all__ = [
    "Access",
    "Body",
    "Handler",
    "Parameter",
    "Reply",
    "Route",
    "add_routes",
    "problem",
    "route_of",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Parameter:
    """A path, query or header parameter, with its JSON Schema."""

    name: str
    location: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False
    #: For a path parameter: the regular expression aiohttp matches it with (default: one
    #: path segment).
    route_pattern: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One status a route can answer: its meaning, its body and its headers.

    ``models`` is the JSON body (one of them, when several); without models,
    ``content_type`` names a body that has no JSON Schema (text, the metrics exposition).
    ``headers`` maps the name of a header always sent with this status to its meaning.
    """

    description: str
    models: tuple[type[BaseModel], ...] = ()
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def problem(description: str, headers: Mapping[str, str] | None = None) -> Reply:
    """An error answer: ``application/problem+json`` (see :mod:`plait.api.problems`)."""
    return Reply(
        description,
        (ProblemDetails,),
        content_type="application/problem+json",
        headers=dict(headers or {}),
    )


@dataclass(frozen=True, slots=True)
class Body:
    """The request body: media type -> a model, a JSON Schema, or a list of a model."""

    content: Mapping[str, type[BaseModel] | Mapping[str, Any]]
    description: str = ""
    required: bool = True


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a route: holders of ``permission`` (None: anyone authenticated) in the
    namespace named by the path parameter ``namespace`` (None: held everywhere;
    :data:`plait.auth.permissions.ANY_NAMESPACE`: held in at least one namespace)."""

    permission: str | None
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One operation of the API."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    replies: Mapping[int, Reply]
    description: str = ""
    parameters: tuple[Parameter, ...] = ()
    #: Query parameters, from the fields of a model (the handler validates with it too).
    query: type[BaseModel] | None = None
    body: Body | None = None
    #: Served without credentials (health, metrics, this document, signing in). Every
    #: other route needs them and may also answer 401.
    public: bool = False
    #: The permission every non-public route requires (checked by the middleware in
    #: plait.api.app on the matched route; a route without one is refused at start-up).
    access: Access | None = None

    @property
    def router_path(self) -> str:
        """``path`` with the route patterns of its path parameters, for aiohttp."""
        path = self.path
        for parameter in self.parameters:
            if parameter.location == "path" and parameter.route_pattern is not None:
                path = path.replace(
                    f"{{{parameter.name}}}", f"{{{parameter.name}:{parameter.route_pattern}}}"
                )
        return path

    @property
    def statuses(self) -> frozenset[int]:
        """Every status this route can answer."""
        statuses = frozenset(self.replies)
        if not self.public:
            statuses |= {401}
        if self.access is not None and self.access.permission is not None:
            statuses |= {403}
        return statuses


_ROUTES = web.AppKey("routes", dict)


def add_routes(app: web.Application, routes: tuple[Route, ...]) -> None:
    """Add ``routes`` to ``app``'s router, each named after its operation id."""
    table: dict[str, Route] = {}
    for route in routes:
        if route.operation_id in table:
            raise ValueError(f"two routes share the operation id {route.operation_id!r}")
        if not route.public and route.access is None:
            raise ValueError(f"route {route.operation_id!r} declares no permission (access=)")
        table[route.operation_id] = route
        path = route.router_path
        if route.method == "GET":  # aiohttp answers HEAD for every GET route
            app.router.add_get(path, route.handler, name=route.operation_id)
        else:
            app.router.add_route(route.method, path, route.handler, name=route.operation_id)
    app[_ROUTES] = table


def route_of(request: web.Request) -> Route | None:
    """The declared route ``request`` matched; None when it matched none (404, 405)."""
    name = request.match_info.route.name
    table: dict[str, Route] = request.app[_ROUTES]
    return table.get(name) if name is not None else None
