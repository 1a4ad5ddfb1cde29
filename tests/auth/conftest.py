"""The API with accounts switched on, on a migrated database, and a check after every test
that the database holds none of the secrets the test used.

Each test gets ``auth``: an in-process ``plait api`` (connected as the event_processing and
auth roles, with a token key and a shared admin token) and helpers to make users, sign in
and issue tokens through the API itself. Every password and token the helpers see is
remembered; at teardown the test's database is dumped with ``pg_dump`` and none of them may
appear in it.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.auth.secrets import SecretKey
from plait.auth.settings import AuthSettings
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.testing import PostgresServer

ADMIN_TOKEN = "shared-admin-token-" + secrets.token_hex(8)
PASSWORD = "correct horse battery staple"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


@dataclass
class AuthApi:
    """Replicas of the API on one database, and what a test needs to drive them."""

    clients: list[TestClient[Any, Any]]
    dsn: str
    #: Every secret the test handled: none may be stored in clear.
    used: set[str] = field(default_factory=set)

    @property
    def client(self) -> TestClient[Any, Any]:
        return self.clients[0]

    async def call(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        replica: int = 0,
    ) -> ClientResponse:
        client = self.clients[replica]
        resp = await client.request(method, path, headers=headers, json=json)
        # Cookies are sent only where a test passes them.
        client.session.cookie_jar.clear()
        return resp

    async def create_user(
        self,
        username: str,
        *,
        password: str | None = PASSWORD,
        roles: list[str] | None = None,
        grants: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"username": username, "roles": roles or [], "grants": grants or []}
        if password is not None:
            body["password"] = password
            self.used.add(password)
        resp = await self.call("POST", "/v1/auth/users", headers=ADMIN, json=body)
        assert resp.status == 201, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        """Sign in; the Cookie header that carries the session."""
        self.used.add(password)
        resp = await self.call(
            "POST", "/v1/auth/login", json={"username": username, "password": password}
        )
        assert resp.status == 200, await resp.text()
        cookie = resp.cookies["plait_session"].value
        self.used.add(cookie)
        return {"Cookie": f"plait_session={cookie}"}

    async def issue(
        self, username: str, *, scopes: list[str] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A service token for ``username`` issued by the admin (the whole answer)."""
        body: dict[str, Any] = {"name": f"for {username}", **extra}
        if scopes is not None:
            body["scopes"] = scopes
        resp = await self.call(
            "POST", f"/v1/auth/users/{username}/tokens", headers=ADMIN, json=body
        )
        assert resp.status == 201, await resp.text()
        issued: dict[str, Any] = await resp.json()
        self.used.add(issued["token"])
        return issued

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            return await (await conn.execute(query, args)).fetchall()


def fast_settings(**changes: Any) -> AuthSettings:
    """Settings for tests: a key, plain-HTTP cookies, a slowdown that starts early."""
    base = AuthSettings(
        key=SecretKey(secrets.token_bytes(32)),
        cookie_secure=False,
        throttle_free_failures=3,
        throttle_base_seconds=30.0,
    )
    return replace(base, **changes)


@contextlib.asynccontextmanager
async def serve_replicas(
    dsn: str,
    component_dsns: dict[str, str],
    settings: AuthSettings,
    replicas: int = 1,
    port: int | None = None,
) -> AsyncIterator[list[TestClient[Any, Any]]]:
    """``replicas`` independent applications (own pools, own caches) on one database."""
    async with contextlib.AsyncExitStack() as stack:
        clients: list[TestClient[Any, Any]] = []
        for _ in range(replicas):
            database = await Database.open(
                Settings(
                    database_url=SecretStr(component_dsns["event_processing"]),
                    database_pool_min=1,
                ),
                [component_by_name("event_processing"), component_by_name("auth")],
                environ={"PLAIT_DATABASE_URL_AUTH": component_dsns["auth"]},
            )
            stack.push_async_callback(database.close)
            config = ApiConfig(tokens=TokenStore([ADMIN_TOKEN]), auth=settings, max_attempts=1)
            server = TestServer(build_app(database, config), port=port if not clients else None)
            client = TestClient(server)
            await stack.enter_async_context(client)
            clients.append(client)
        yield clients


def assert_no_secret_in_dump(server: PostgresServer, dsn: str, used: set[str]) -> None:
    """``pg_dump`` of the database must not contain any of ``used``."""
    dump = subprocess.run(
        [str(server.bindir / "pg_dump"), "--no-owner", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "auth_service.users" in dump  # the dump is of the right database
    found = sorted(s for s in used if s in dump)
    assert not found, f"secrets stored in clear: {[s[:12] + '...' for s in found]}"


@pytest.fixture
def auth_settings() -> AuthSettings:
    return fast_settings()


@pytest.fixture
def api_port() -> int | None:
    """The first replica's port (None: any free one)."""
    return None


@pytest.fixture
async def auth(
    postgres_server: PostgresServer,
    migrated_database: str,
    component_dsns: dict[str, str],
    auth_settings: AuthSettings,
    api_port: int | None,
) -> AsyncIterator[AuthApi]:
    """Two replicas of the API (so a test can show a change seen by both)."""
    async with serve_replicas(
        migrated_database, component_dsns, auth_settings, 2, api_port
    ) as clients:
        api = AuthApi(clients, migrated_database)
        api.used.add(ADMIN_TOKEN)
        yield api
    assert_no_secret_in_dump(postgres_server, migrated_database, api.used)
