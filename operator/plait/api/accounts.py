"""``/v1/auth``: signing in and out, one's own tokens, and the administration of users,
roles and service tokens. Each route's permission is declared in :data:`ROUTES` (next to
the rest of the table in :mod:`plait.api.routes`); the work is done by
:class:`plait.auth.service.AuthService`, which audits every change."""

from __future__ import annotations

import asyncio
import hmac
import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from plait.api.access import AUTH, SESSION_COOKIE, client_address, principal, unauthorized
from plait.api.context import read_capped, validated
from plait.api.problems import Problem
from plait.api.routing import Access, Body, Parameter, Reply, Route, problem
from plait.auth import audit, oidc
from plait.auth import repository as repo
from plait.auth.permissions import ANY_NAMESPACE
from plait.auth.service import (
    AuthenticationFailed,
    AuthService,
    IssuedToken,
    LoginThrottled,
    NewGrant,
    NewSession,
)

__all__ = ["ROUTES"]

MAX_BODY_BYTES = 64 * 1024
_USERNAME = "^[a-z0-9][a-z0-9._@-]{0,127}$"
_ROLE = "^[a-z][a-z0-9_-]{0,62}$"
_NAMESPACE = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_PERMISSION = r"^[a-z][a-z_]*:([a-z][a-z_]*|\*)$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


Username = Annotated[str, Field(pattern=_USERNAME, max_length=128)]
RoleName = Annotated[str, Field(pattern=_ROLE, max_length=63)]
PermissionName = Annotated[str, Field(pattern=_PERMISSION, max_length=100)]


class LoginRequest(_Model):
    """Username and password."""

    username: Annotated[str, Field(min_length=1, max_length=128)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class SessionInfo(_Model):
    """A new session; its secret is in the ``plait_session`` cookie, not here."""

    username: str
    expires_at: datetime = Field(description="The absolute limit: sign in again after it.")
    idle_expires_at: datetime = Field(description="Ends earlier unless used before this.")


class WhoAmI(_Model):
    """The caller, and what it may do where."""

    name: str
    kind: str = Field(description="user, token-file, kubernetes or anonymous.")
    method: str = Field(description="token, session, token-file, kubernetes or none.")
    permissions: list[str] = Field(description="Held in every namespace.")
    namespaces: dict[str, list[str]] = Field(description="Held in these namespaces only.")
    scopes: list[str] | None = Field(description="The token's scope; null when unscoped.")


class GrantModel(_Model):
    """A role held in one namespace only."""

    role: RoleName
    namespace: Annotated[str, Field(pattern=_NAMESPACE, max_length=63)]


class UserModel(_Model):
    """A user (never its password hash)."""

    username: str
    email: str | None
    display_name: str
    roles: list[str] = Field(description="Held in every namespace.")
    grants: list[GrantModel]
    disabled: bool
    sso: bool = Field(description="Signs in with OpenID Connect.")
    last_login_at: datetime | None
    created_at: datetime


class UserList(_Model):
    items: list[UserModel]


class NewUser(_Model):
    """A user to create; without a password it signs in by no password (a service user
    that uses service tokens)."""

    username: Username
    password: Annotated[str, Field(min_length=1, max_length=1024)] | None = Field(
        default=None,
        description="At least 12 characters, 4 of them different, not containing the username.",
    )
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)] | None = None
    display_name: Annotated[str, Field(max_length=200)] = ""
    roles: Annotated[list[RoleName], Field(max_length=50)] = Field(default_factory=list)
    grants: Annotated[list[GrantModel], Field(max_length=500)] = Field(default_factory=list)


class RoleModel(_Model):
    name: str
    description: str
    permissions: list[str]
    builtin: bool


class RoleList(_Model):
    items: list[RoleModel]


class NewRole(_Model):
    name: RoleName
    description: Annotated[str, Field(max_length=500)] = ""
    permissions: Annotated[list[PermissionName], Field(min_length=1, max_length=100)]


class TokenModel(_Model):
    """A token as listed: never the token itself."""

    id: uuid.UUID
    name: str
    kind: str = Field(description="personal or service.")
    owner: str
    prefix: str = Field(description="The token's first characters, to recognise it.")
    scopes: list[str] | None = Field(description="null: whatever the owner holds.")
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_from: str | None
    revoked_at: datetime | None
    created_by: str
    created_at: datetime


class TokenList(_Model):
    items: list[TokenModel]


class NewToken(_Model):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    scopes: Annotated[list[PermissionName], Field(max_length=100)] | None = Field(
        default=None,
        description="Permissions the token may use, each within the owner's (absent: all of "
        "the owner's, as they change).",
    )
    expires_at: AwareDatetime | None = Field(default=None, description="Absent: never.")


class IssuedTokenModel(TokenModel):
    """A new token: ``token`` is shown this once and stored nowhere."""

    token: str


# --- helpers -------------------------------------------------------------------------------


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json", by_alias=True), status=status)


async def _body(request: web.Request, model: type[Any]) -> Any:
    raw = await read_capped(request, MAX_BODY_BYTES, "request body", "a fixed limit")
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        detail = f"the body is not valid JSON: {exc}"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "", "reason": detail}],
        ) from None
    return validated(model, data)


def _user_model(user: repo.User, grants: list[repo.Grant]) -> UserModel:
    return UserModel(
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        roles=user.roles,
        grants=[GrantModel(role=g.role, namespace=g.namespace) for g in grants],
        disabled=user.disabled_at is not None,
        sso=user.oidc_subject is not None,
        last_login_at=user.last_login_at,
        created_at=user.created_at,
    )


def _token_fields(token: repo.Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "kind": token.kind,
        "owner": token.username,
        "prefix": token.display_prefix,
        "scopes": token.scopes,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "last_used_from": token.last_used_from,
        "revoked_at": token.revoked_at,
        "created_by": token.created_by,
        "created_at": token.created_at,
    }


def _issued(issued: IssuedToken) -> web.Response:
    return _json(IssuedTokenModel(token=issued.secret, **_token_fields(issued.token)), 201)


def _token_id(request: web.Request) -> uuid.UUID:
    raw = request.match_info["id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        detail = f"token id {raw[:80]!r} is not a UUID"
        raise Problem(
            400,
            "invalid-request",
            "Invalid request",
            detail,
            errors=[{"path": "id", "reason": detail}],
        ) from None


def _own_username(request: web.Request) -> str:
    caller = principal(request)
    if caller.user_id is None:
        raise Problem(
            400,
            "not-a-user",
            "Not a user",
            f"{caller.name} is not a Plait user and has no tokens of its own; use "
            "/v1/auth/users/{username}/tokens",
        )
    return caller.name


# --- handlers ------------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    form = await _body(request, LoginRequest)
    service = request.app[AUTH]
    try:
        new = await service.login(form.username, form.password, client_address(request))
    except AuthenticationFailed as exc:
        raise unauthorized(exc.detail) from None
    except LoginThrottled as exc:
        raise Problem(
            429,
            "too-many-attempts",
            "Too many attempts",
            str(exc),
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        ) from None
    return _session_response(service, new)


def _session_response(service: AuthService, new: NewSession) -> web.Response:
    response = _json(
        SessionInfo(
            username=new.user.username,
            expires_at=new.session.expires_at,
            idle_expires_at=new.session.idle_expires_at,
        )
    )
    response.set_cookie(
        SESSION_COOKIE,
        new.secret,
        max_age=int(service.settings.session_absolute_seconds),
        path="/",
        secure=service.settings.cookie_secure,
        httponly=True,
        samesite="Strict",
    )
    return response


OIDC_COOKIE = "plait_oidc"
_OIDC_PATH = "/v1/auth/oidc"


def _provider(request: web.Request) -> oidc.Provider:
    provider = request.app[AUTH].oidc
    if provider is None:
        detail = "single sign-on is not configured (PLAIT_AUTH_OIDC_ISSUER)"
        raise Problem(404, "not-found", "Not found", detail)
    return provider


def _unavailable(exc: OSError) -> Problem:
    return Problem(
        503,
        "identity-provider-unavailable",
        "Identity provider unavailable",
        str(exc),
        headers={"Retry-After": "5"},
    )


async def oidc_login(request: web.Request) -> web.Response:
    """Off to the identity provider, with what the callback must check in a sealed cookie."""
    provider = _provider(request)
    service = request.app[AUTH]
    try:
        url, flow = await asyncio.to_thread(provider.start)
    except oidc.OidcUnavailable as exc:
        raise _unavailable(exc) from None
    except oidc.OidcError as exc:
        raise unauthorized(str(exc)) from None
    response = web.Response(status=302, headers={"Location": url})
    response.set_cookie(
        OIDC_COOKIE,
        oidc.seal(service.flow_key(), flow),
        max_age=oidc.FLOW_SECONDS,
        path=_OIDC_PATH,
        secure=service.settings.cookie_secure,
        httponly=True,
        # The provider sends the person back with a top-level GET from its own site.
        samesite="Lax",
    )
    return response


def _bad_callback(detail: str) -> Problem:
    return Problem(
        400,
        "invalid-request",
        "Invalid request",
        detail,
        errors=[{"path": "state", "reason": detail}],
    )


async def oidc_callback(request: web.Request) -> web.Response:
    """Back from the identity provider: redeem the code, check the ID token, sign in."""
    provider = _provider(request)
    service = request.app[AUTH]
    client = client_address(request)
    query = request.query
    if "error" in query:
        detail = f"the identity provider answered {query['error'][:100]!r}"
        if "error_description" in query:
            detail += f": {query['error_description'][:300]}"
        raise _bad_callback(detail)
    sealed = request.cookies.get(OIDC_COOKIE)
    if not sealed:
        raise _bad_callback(f"no {OIDC_COOKIE} cookie: start at {_OIDC_PATH}/login")
    try:
        flow = oidc.unseal(service.flow_key(), sealed)
    except ValueError as exc:
        raise _bad_callback(str(exc)) from None
    code, state = query.get("code", ""), query.get("state", "")
    if not code or not state:
        raise _bad_callback("the callback needs both code and state")
    if not hmac.compare_digest(state, str(flow["state"])):
        raise _bad_callback("state does not match this browser's sign-in")
    try:
        identity = await asyncio.to_thread(provider.finish, code, flow)
    except oidc.OidcUnavailable as exc:
        raise _unavailable(exc) from None
    except oidc.OidcError as exc:
        audit.failure("oidc", "invalid", str(exc), client=client)
        raise unauthorized(str(exc)) from None
    try:
        new = await service.sso_login(identity, client)
    except AuthenticationFailed as exc:
        raise unauthorized(exc.detail) from None
    response = _session_response(service, new)
    response.del_cookie(OIDC_COOKIE, path=_OIDC_PATH)
    return response


async def logout(request: web.Request) -> web.Response:
    await request.app[AUTH].logout(principal(request), client_address(request))
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def whoami(request: web.Request) -> web.Response:
    caller = principal(request)
    return _json(
        WhoAmI(
            name=caller.name,
            kind=caller.kind,
            method=caller.method,
            permissions=sorted(caller.everywhere),
            namespaces={ns: sorted(p) for ns, p in sorted(caller.by_namespace.items())},
            scopes=sorted(caller.scopes) if caller.scopes is not None else None,
        )
    )


async def list_users(request: web.Request) -> web.Response:
    users = await request.app[AUTH].list_users()
    return _json(UserList(items=[_user_model(u, g) for u, g in users]))


async def create_user(request: web.Request) -> web.Response:
    new = await _body(request, NewUser)
    service = request.app[AUTH]
    user = await service.create_user(
        principal(request).name,
        new.username,
        password=new.password,
        roles=new.roles,
        grants_=[NewGrant(g.role, g.namespace) for g in new.grants],
        email=new.email,
        display_name=new.display_name,
        client=client_address(request),
    )
    _, grants = await service.user_and_grants(user.username)
    return _json(_user_model(user, grants), 201)


async def show_user(request: web.Request) -> web.Response:
    user, grants = await request.app[AUTH].user_and_grants(request.match_info["username"])
    return _json(_user_model(user, grants))


async def _set_disabled(request: web.Request, disabled: bool) -> web.Response:
    service = request.app[AUTH]
    user = await service.set_disabled(
        principal(request).name, request.match_info["username"], disabled, client_address(request)
    )
    _, grants = await service.user_and_grants(user.username)
    return _json(_user_model(user, grants))


async def disable_user(request: web.Request) -> web.Response:
    return await _set_disabled(request, True)


async def enable_user(request: web.Request) -> web.Response:
    return await _set_disabled(request, False)


async def list_roles(request: web.Request) -> web.Response:
    roles = await request.app[AUTH].list_roles()
    return _json(RoleList(items=[_role_model(r) for r in roles]))


def _role_model(role: repo.Role) -> RoleModel:
    return RoleModel(
        name=role.name,
        description=role.description,
        permissions=role.permissions,
        builtin=role.builtin,
    )


async def create_role(request: web.Request) -> web.Response:
    new = await _body(request, NewRole)
    role = await request.app[AUTH].create_role(
        principal(request).name,
        new.name,
        new.description,
        new.permissions,
        client_address(request),
    )
    return _json(_role_model(role), 201)


async def show_role(request: web.Request) -> web.Response:
    return _json(_role_model(await request.app[AUTH].get_role(request.match_info["name"])))


async def delete_role(request: web.Request) -> web.Response:
    await request.app[AUTH].delete_role(
        principal(request).name, request.match_info["name"], client_address(request)
    )
    return web.Response(status=204)


async def _issue(request: web.Request, owner: str, kind: str) -> web.Response:
    new = await _body(request, NewToken)
    issued = await request.app[AUTH].issue_token(
        principal(request),
        owner,
        name=new.name,
        scopes=new.scopes,
        expires_at=new.expires_at,
        kind=kind,
        client=client_address(request),
    )
    return _issued(issued)


async def _list_tokens(request: web.Request, owner: str) -> web.Response:
    tokens = await request.app[AUTH].list_tokens(owner)
    return _json(TokenList(items=[TokenModel(**_token_fields(t)) for t in tokens]))


async def _revoke(request: web.Request, owner: str) -> web.Response:
    token = await request.app[AUTH].revoke_token(
        principal(request), owner, _token_id(request), client_address(request)
    )
    return _json(TokenModel(**_token_fields(token)))


async def list_own_tokens(request: web.Request) -> web.Response:
    return await _list_tokens(request, _own_username(request))


async def create_own_token(request: web.Request) -> web.Response:
    return await _issue(request, _own_username(request), "personal")


async def show_own_token(request: web.Request) -> web.Response:
    token_id = _token_id(request)
    token = await request.app[AUTH].get_token(_own_username(request), token_id)
    return _json(TokenModel(**_token_fields(token)))


async def revoke_own_token(request: web.Request) -> web.Response:
    return await _revoke(request, _own_username(request))


async def list_user_tokens(request: web.Request) -> web.Response:
    return await _list_tokens(request, request.match_info["username"])


async def create_user_token(request: web.Request) -> web.Response:
    return await _issue(request, request.match_info["username"], "service")


async def revoke_user_token(request: web.Request) -> web.Response:
    return await _revoke(request, request.match_info["username"])


# --- the routes ----------------------------------------------------------------------------

_USER = Parameter("username", "path", {"type": "string", "maxLength": 128}, "The user's name.")
_ROLE_NAME = Parameter("name", "path", {"type": "string", "maxLength": 63}, "The role's name.")
_TOKEN_ID = Parameter(
    "id",
    "path",
    {"type": "string", "format": "uuid"},
    "The token's id.",
    route_pattern="[^{}/]+",
)
_UNAVAILABLE = problem(
    "PostgreSQL cannot be reached; nothing was changed. Retry later.",
    {"Retry-After": "Seconds to wait before retrying."},
)
_BAD_BODY = problem("Malformed JSON or a body that breaks the rules; `errors` say where.")
_REFUSED = problem(
    "Malformed JSON, or input that breaks a rule (a weak password, an unknown role or "
    "permission, a scope wider than the owner's, a name taken); nothing was changed."
)
_TOO_LARGE = problem(f"The body is over {MAX_BODY_BYTES} bytes.")
_SLOW = problem("The body did not arrive within --body-timeout.")
_NO_USER = problem("No such user.")
_NOT_A_USER = problem("Malformed token id, or the caller is not a Plait user (no own tokens).")
_AUTH_READ = Access("auth:read")
_AUTH_WRITE = Access("auth:write")
_OWN = Access("tokens:own", ANY_NAMESPACE)
_CHANGE = {400: _REFUSED, 408: _SLOW, 413: _TOO_LARGE, 503: _UNAVAILABLE}

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/auth/login",
        login,
        "login",
        "Sign in with username and password: a session cookie for the dashboard.",
        {
            200: Reply(
                "Signed in; the session is in the `plait_session` cookie (Secure, "
                "HttpOnly, SameSite=Strict).",
                (SessionInfo,),
                headers={"Set-Cookie": "The session cookie."},
            ),
            400: _BAD_BODY,
            401: problem(
                "Wrong username or password, or the user is disabled.",
                {"WWW-Authenticate": "`Bearer`: the scheme to authenticate with."},
            ),
            408: _SLOW,
            413: _TOO_LARGE,
            429: problem(
                "Too many failed sign-ins for this user or address; wait.",
                {"Retry-After": "Seconds to wait."},
            ),
            503: _UNAVAILABLE,
        },
        description="Each use of the session within its idle time keeps it alive, up to its "
        "absolute limit. Repeated failures for one username or one client address make the "
        "next attempt wait (429), twice as long after each further failure.",
        body=Body({"application/json": LoginRequest}),
        public=True,
    ),
    Route(
        "GET",
        "/v1/auth/oidc/login",
        oidc_login,
        "oidcLogin",
        "Single sign-on: go to the identity provider (authorization code flow with PKCE).",
        {
            302: Reply(
                "To the identity provider; the flow's state is in the `plait_oidc` "
                "cookie (HttpOnly, SameSite=Lax, 10 minutes).",
                headers={"Location": "The provider's authorization URL."},
            ),
            401: problem(
                "The provider's metadata cannot be trusted.",
                {"WWW-Authenticate": "`Bearer`: the scheme to authenticate with."},
            ),
            404: problem("Single sign-on is not configured."),
            503: problem(
                "The identity provider cannot be reached.",
                {"Retry-After": "Seconds to wait before retrying."},
            ),
        },
        public=True,
    ),
    Route(
        "GET",
        "/v1/auth/oidc/callback",
        oidc_callback,
        "oidcCallback",
        "Single sign-on: back from the identity provider; signs in with a session cookie.",
        {
            200: Reply(
                "Signed in; the session is in the `plait_session` cookie.",
                (SessionInfo,),
                headers={"Set-Cookie": "The session cookie."},
            ),
            400: problem(
                "No or another browser's sign-in (state), an expired flow, or the "
                "provider's own error."
            ),
            401: problem(
                "The code or ID token was refused, no role mapping names the "
                "person or its groups, or the user is disabled.",
                {"WWW-Authenticate": "`Bearer`: the scheme to authenticate with."},
            ),
            404: problem("Single sign-on is not configured."),
            503: problem(
                "The identity provider or PostgreSQL cannot be reached.",
                {"Retry-After": "Seconds to wait before retrying."},
            ),
        },
        description="The person's groups (the configured claim) map to roles through "
        "PLAIT_AUTH_OIDC_ROLE_MAPPINGS, recorded on the user at every sign-in.",
        parameters=(
            Parameter("code", "query", {"type": "string"}, "The authorization code."),
            Parameter("state", "query", {"type": "string"}, "The flow's state."),
            Parameter("error", "query", {"type": "string"}, "The provider's error, if any."),
        ),
        public=True,
    ),
    Route(
        "POST",
        "/v1/auth/logout",
        logout,
        "logout",
        "End the session of the cookie sent.",
        {
            204: Reply("Signed out."),
            400: problem("The request carries no session."),
            503: _UNAVAILABLE,
        },
        access=Access(None),
    ),
    Route(
        "GET",
        "/v1/auth/whoami",
        whoami,
        "whoAmI",
        "The caller and its permissions.",
        {200: Reply("The caller.", (WhoAmI,)), 503: _UNAVAILABLE},
        access=Access(None),
    ),
    Route(
        "GET",
        "/v1/auth/users",
        list_users,
        "listUsers",
        "List users.",
        {200: Reply("Every user.", (UserList,)), 503: _UNAVAILABLE},
        access=_AUTH_READ,
    ),
    Route(
        "POST",
        "/v1/auth/users",
        create_user,
        "createUser",
        "Create a user.",
        {201: Reply("Created.", (UserModel,)), **_CHANGE},
        body=Body({"application/json": NewUser}),
        access=_AUTH_WRITE,
    ),
    Route(
        "GET",
        "/v1/auth/users/{username}",
        show_user,
        "getUser",
        "One user.",
        {200: Reply("The user.", (UserModel,)), 404: _NO_USER, 503: _UNAVAILABLE},
        parameters=(_USER,),
        access=_AUTH_READ,
    ),
    Route(
        "POST",
        "/v1/auth/users/{username}/disable",
        disable_user,
        "disableUser",
        "Disable a user: its sessions end and its tokens stop working at once.",
        {200: Reply("Disabled.", (UserModel,)), 404: _NO_USER, 503: _UNAVAILABLE},
        parameters=(_USER,),
        access=_AUTH_WRITE,
    ),
    Route(
        "POST",
        "/v1/auth/users/{username}/enable",
        enable_user,
        "enableUser",
        "Enable a disabled user again (its tokens work again; sessions stay ended).",
        {200: Reply("Enabled.", (UserModel,)), 404: _NO_USER, 503: _UNAVAILABLE},
        parameters=(_USER,),
        access=_AUTH_WRITE,
    ),
    Route(
        "GET",
        "/v1/auth/users/{username}/tokens",
        list_user_tokens,
        "listUserTokens",
        "List a user's tokens.",
        {200: Reply("Newest first.", (TokenList,)), 404: _NO_USER, 503: _UNAVAILABLE},
        parameters=(_USER,),
        access=_AUTH_READ,
    ),
    Route(
        "POST",
        "/v1/auth/users/{username}/tokens",
        create_user_token,
        "createServiceToken",
        "Issue a service token for a user (shown once).",
        {201: Reply("The token, shown this once.", (IssuedTokenModel,)), 404: _NO_USER, **_CHANGE},
        parameters=(_USER,),
        body=Body({"application/json": NewToken}),
        access=_AUTH_WRITE,
    ),
    Route(
        "POST",
        "/v1/auth/users/{username}/tokens/{id}/revoke",
        revoke_user_token,
        "revokeServiceToken",
        "Revoke one of a user's tokens (effective on the next request).",
        {
            200: Reply("Revoked.", (TokenModel,)),
            400: _NOT_A_USER,
            404: problem("No such user, or no such token of the user."),
            503: _UNAVAILABLE,
        },
        parameters=(_USER, _TOKEN_ID),
        access=_AUTH_WRITE,
    ),
    Route(
        "GET",
        "/v1/auth/roles",
        list_roles,
        "listRoles",
        "List roles.",
        {200: Reply("Every role.", (RoleList,)), 503: _UNAVAILABLE},
        access=_AUTH_READ,
    ),
    Route(
        "POST",
        "/v1/auth/roles",
        create_role,
        "createRole",
        "Define a role.",
        {201: Reply("Created.", (RoleModel,)), **_CHANGE},
        body=Body({"application/json": NewRole}),
        access=_AUTH_WRITE,
    ),
    Route(
        "GET",
        "/v1/auth/roles/{name}",
        show_role,
        "getRole",
        "One role.",
        {200: Reply("The role.", (RoleModel,)), 404: problem("No such role."), 503: _UNAVAILABLE},
        parameters=(_ROLE_NAME,),
        access=_AUTH_READ,
    ),
    Route(
        "DELETE",
        "/v1/auth/roles/{name}",
        delete_role,
        "deleteRole",
        "Delete a role that is not built in and that no one holds.",
        {
            204: Reply("Deleted."),
            400: problem("Built in, or still held."),
            404: problem("No such role."),
            503: _UNAVAILABLE,
        },
        parameters=(_ROLE_NAME,),
        access=_AUTH_WRITE,
    ),
    Route(
        "GET",
        "/v1/auth/tokens",
        list_own_tokens,
        "listTokens",
        "List one's own tokens.",
        {200: Reply("Newest first.", (TokenList,)), 400: _NOT_A_USER, 503: _UNAVAILABLE},
        access=_OWN,
    ),
    Route(
        "POST",
        "/v1/auth/tokens",
        create_own_token,
        "createToken",
        "Create a personal access token (shown once).",
        {201: Reply("The token, shown this once.", (IssuedTokenModel,)), **_CHANGE},
        body=Body({"application/json": NewToken}),
        access=_OWN,
    ),
    Route(
        "GET",
        "/v1/auth/tokens/{id}",
        show_own_token,
        "getToken",
        "One of one's own tokens.",
        {
            200: Reply("The token (never its secret).", (TokenModel,)),
            400: _NOT_A_USER,
            404: problem("No such token of the caller."),
            503: _UNAVAILABLE,
        },
        parameters=(_TOKEN_ID,),
        access=_OWN,
    ),
    Route(
        "POST",
        "/v1/auth/tokens/{id}/revoke",
        revoke_own_token,
        "revokeToken",
        "Revoke one of one's own tokens (effective on the next request, on every replica).",
        {
            200: Reply("Revoked.", (TokenModel,)),
            400: _NOT_A_USER,
            404: problem("No such token of the caller."),
            503: _UNAVAILABLE,
        },
        parameters=(_TOKEN_ID,),
        access=_OWN,
    ),
)
