"""Every route, every built-in role: the answer follows the route table's declaration.

A role holding a route's permission gets past authorisation (anything but 401/403); a role
without it gets 403 naming the permission (and the namespace, for namespaced routes); no
credentials get 401 everywhere. A route without a declared permission fails here and is
refused when the router is built.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plait.api.routes import ROUTES
from plait.api.routing import Access, Reply, Route, add_routes
from plait.auth.permissions import ANY_NAMESPACE, grants
from tests.auth.conftest import AuthApi, bearer

_PATH_VALUES = {
    "namespace": "shop",
    "id": str(uuid.UUID(int=7)),
    "username": "nobody-here",
    "name": "no-such-role",
}


def _path(route: Route) -> str:
    path = route.path
    for name, value in _PATH_VALUES.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"no test value for a parameter of {route.path}"
    return path


def _guarded() -> list[Route]:
    return [r for r in ROUTES if not r.public]


def test_every_non_public_route_declares_a_permission() -> None:
    undeclared = [r.operation_id for r in _guarded() if r.access is None]
    assert not undeclared, f"routes without a permission: {undeclared}"
    assert all(r.path.startswith("/v1/") for r in _guarded())


def test_a_route_without_a_permission_is_refused_by_the_router() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    route = Route("GET", "/v1/x", handler, "x", "X.", {200: Reply("ok")})
    with pytest.raises(ValueError, match="declares no permission"):
        add_routes(web.Application(), (route,))
    add_routes(
        web.Application(),
        (Route("GET", "/v1/x", handler, "x", "X.", {200: Reply("ok")}, access=Access(None)),),
    )


async def _call(auth: AuthApi, route: Route, headers: dict[str, str]) -> tuple[int, Any]:
    body: dict[str, Any] | None = None if route.body is None else {}
    resp = await auth.call(route.method, _path(route), headers=headers, json=body)
    text = await resp.text()
    return resp.status, text


async def test_route_role_matrix(auth: AuthApi) -> None:
    roles = await auth.rows(
        "SELECT name, permissions FROM auth_service.roles WHERE builtin ORDER BY name"
    )
    assert {name for name, _ in roles} >= {"admin", "editor", "publisher", "viewer"}
    checked = 0
    for role, permissions in roles:
        await auth.create_user(f"u-{role}", password=None, roles=[role])
        token = (await auth.issue(f"u-{role}"))["token"]
        for route in _guarded():
            assert route.access is not None
            status, text = await _call(auth, route, bearer(token))
            needed = route.access.permission
            what = f"{route.method} {route.path} as {role}: {status} {text[:300]}"
            if needed is None or grants(permissions, needed):
                assert status not in (401, 403), what
            else:
                assert status == 403, what
                assert f'"permission": "{needed}"' in text, what
                if route.access.namespace not in (None, ANY_NAMESPACE):
                    assert '"namespace": "shop"' in text, what
            checked += 1
    assert checked == len(roles) * len(_guarded())


async def test_namespace_limited_grants(auth: AuthApi) -> None:
    """editor in shop, viewer everywhere: writes in shop only, reads everywhere."""
    await auth.create_user(
        "nina", password=None, roles=["viewer"], grants=[{"role": "editor", "namespace": "shop"}]
    )
    headers = bearer((await auth.issue("nina"))["token"])
    purge = {"olderThan": "2000-01-01T00:00:00Z"}
    for namespace, expected in (("shop", 200), ("books", 403)):
        resp = await auth.call(
            "POST", f"/v1/namespaces/{namespace}/deadletters/purge", headers=headers, json=purge
        )
        assert resp.status == expected, await resp.text()
        resp = await auth.call("GET", f"/v1/namespaces/{namespace}/deadletters", headers=headers)
        assert resp.status == 200
    # Namespace grants give nothing cluster-wide.
    resp = await auth.call("GET", "/v1/auth/users", headers=headers)
    assert resp.status == 403
    assert (await resp.json())["detail"].endswith("lacks the permission auth:read cluster-wide")


async def test_no_credentials_is_401_on_every_guarded_route(auth: AuthApi) -> None:
    for route in _guarded():
        status, text = await _call(auth, route, {})
        assert status == 401, f"{route.method} {route.path}: {status} {text[:200]}"


async def test_openapi_shows_each_permission(auth: AuthApi) -> None:
    document = await (await auth.call("GET", "/openapi.json")).json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "session"}
    for route in _guarded():
        assert route.access is not None
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["x-plait-permission"] == (
            route.access.permission or "(any authenticated caller)"
        )
        assert ("403" in operation["responses"]) == (route.access.permission is not None)


def test_docs_list_every_route_with_its_permission() -> None:
    """docs/auth.md's route table is the route table."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "auth.md").read_text()
    table = text.split("<!-- routes:start", 1)[1].split("<!-- routes:end -->", 1)[0]
    documented = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            documented[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    where = {None: "everywhere", ANY_NAMESPACE: "in any namespace", "namespace": "in the namespace"}
    expected = {}
    for route in _guarded():
        assert route.access is not None
        permission = route.access.permission
        expected[f"{route.method} {route.path}"] = (
            permission or "any caller",
            where[route.access.namespace] if permission else "",
        )
    assert documented == expected
