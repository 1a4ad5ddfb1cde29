"""Authentication and authorisation of every request, from the route table.

The middleware calls :func:`check_access` for every route that is not public (and for
unmatched ``/v1`` paths, so that strangers learn nothing about the routes). Credentials are
tried in this order: ``Authorization: Bearer`` with a Plait token, a token of the shared
token file, or a Kubernetes token (TokenReview); without the header, the session cookie.
Then the route's :class:`~plait.api.routing.Access` is checked: 401 without valid
credentials (``WWW-Authenticate``), 403 naming the permission and namespace that are missing.
"""

from __future__ import annotations

from aiohttp import web

from plait.api.context import CONFIG
from plait.api.problems import Problem
from plait.api.routing import Route
from plait.auth import audit
from plait.auth.kubernetes import looks_like_jwt
from plait.auth.permissions import ADMIN, ANY_NAMESPACE, Principal
from plait.auth.secrets import looks_like_plait_token
from plait.auth.service import AuthenticationFailed, AuthService
from plait.auth.settings import RoleMapping

__all__ = ["AUTH", "PRINCIPAL", "SESSION_COOKIE", "check_access", "client_address", "principal"]

AUTH = web.AppKey("auth", AuthService)
PRINCIPAL = web.RequestKey("principal", Principal)
SESSION_COOKIE = "plait_session"
_UNAUTHENTICATED = Principal(
    name="anonymous (--allow-unauthenticated)",
    kind="anonymous",
    method="none",
    everywhere=frozenset({ADMIN}),
)


def unauthorized(detail: str, *, invalid: bool = False) -> Problem:
    challenge = 'Bearer realm="plait"'
    if invalid:
        challenge += ', error="invalid_token"'
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": challenge}
    )


def client_address(request: web.Request) -> str | None:
    return request.remote


def principal(request: web.Request) -> Principal:
    """The caller of a non-public route (set by :func:`check_access`)."""
    return request[PRINCIPAL]


async def _token_file_principal(service: AuthService, roles: tuple[str, ...]) -> Principal:
    if roles == ("admin",):  # the default: no database round trip
        return Principal(
            name="token-file", kind="token-file", method="token-file", everywhere=frozenset({ADMIN})
        )
    return await service.mapped_principal(
        "token-file", "token-file", [RoleMapping(role=r, user="token-file") for r in roles]
    )


async def authenticate(request: web.Request) -> Principal:
    config = request.app[CONFIG]
    if config.allow_unauthenticated:
        return _UNAUTHENTICATED
    service = request.app[AUTH]
    client = client_address(request)
    header = request.headers.get("Authorization")
    try:
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                audit.failure(
                    "bearer", "malformed", "Authorization is not Bearer <token>", client=client
                )
                raise unauthorized("the Authorization header must be Bearer <token>")
            if looks_like_plait_token(token):
                return await service.authenticate_token(token, client)
            if config.tokens.check(token):
                audit.success("token-file")
                return await _token_file_principal(service, service.settings.token_file_roles)
            if service.kubernetes_enabled and looks_like_jwt(token):
                return await service.authenticate_kubernetes(token, client)
            audit.failure("bearer", "unknown", "a bearer token matching no source", client=client)
            raise unauthorized("the bearer token is not valid", invalid=True)
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            return await service.authenticate_session(cookie, client)
    except AuthenticationFailed as exc:
        raise unauthorized(exc.detail, invalid=True) from None
    raise unauthorized("send Authorization: Bearer <token>, or sign in for a session cookie")


async def check_access(request: web.Request, route: Route | None) -> None:
    """Authenticate the caller, then check the route's declared permission."""
    caller = await authenticate(request)
    request[PRINCIPAL] = caller
    if route is None or route.access is None or route.access.permission is None:
        return
    permission = route.access.permission
    source = route.access.namespace
    namespace = request.match_info.get(source) if source not in (None, ANY_NAMESPACE) else source
    if caller.allows(permission, namespace):
        return
    where = (
        "cluster-wide"
        if namespace is None
        else "in any namespace"
        if namespace == ANY_NAMESPACE
        else f"in namespace {namespace[:63]!r}"
    )
    scoped = " (within the token's scope)" if caller.scopes is not None else ""
    audit.denied(caller.name, permission, where, client=client_address(request))
    extensions = {"permission": permission}
    if namespace is not None and namespace != ANY_NAMESPACE:
        extensions["namespace"] = namespace[:63]
    raise Problem(
        403,
        "forbidden",
        "Forbidden",
        f"{caller.name} lacks the permission {permission} {where}{scoped}",
        extensions=extensions,
    )
