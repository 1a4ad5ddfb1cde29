"""Signing in: the session cookie, its refresh up to an absolute limit, signing out, the
slowdown of repeated failures, and disabled users."""

from __future__ import annotations

import asyncio
import time

import pytest

from plait.auth.settings import AuthSettings
from tests.auth.conftest import ADMIN, PASSWORD, AuthApi, fast_settings


async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(auth: AuthApi) -> None:
    await auth.create_user("ada", roles=["viewer"])
    resp = await auth.call("POST", "/v1/auth/login", json={"username": "ada", "password": PASSWORD})
    assert resp.status == 200
    header = resp.headers["Set-Cookie"]
    assert header.startswith("plait_session=plait_ses_")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
        assert attribute in header
    cookie = {"Cookie": f"plait_session={resp.cookies['plait_session'].value}"}
    auth.used.add(resp.cookies["plait_session"].value)
    me = await (await auth.call("GET", "/v1/auth/whoami", headers=cookie, replica=1)).json()
    assert me["name"] == "ada"
    assert me["method"] == "session"
    assert "events:read" in me["permissions"]
    assert (await auth.call("POST", "/v1/auth/logout", headers=cookie)).status == 204
    resp = await auth.call("GET", "/v1/auth/whoami", headers=cookie, replica=1)
    assert resp.status == 401
    assert "the session has ended" in (await resp.json())["detail"]


async def test_wrong_passwords_slow_down_per_user_and_per_address(auth: AuthApi) -> None:
    await auth.create_user("cy", roles=["viewer"])
    wrong = {"username": "cy", "password": "not the password at all"}
    for _ in range(3):  # fast_settings: 3 free failures
        resp = await auth.call("POST", "/v1/auth/login", json=wrong)
        assert resp.status == 401
        assert (await resp.json())["detail"] == "wrong username or password"
    assert (await auth.call("POST", "/v1/auth/login", json=wrong)).status == 401
    # Now even the right password must wait, on this replica.
    right = {"username": "cy", "password": PASSWORD}
    resp = await auth.call("POST", "/v1/auth/login", json=right)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) >= 1
    # The same address is slowed down for other usernames too.
    resp = await auth.call("POST", "/v1/auth/login", json={**right, "username": "someone"})
    assert resp.status == 429
    metrics = await (await auth.call("GET", "/metrics")).text()
    assert "plait_auth_login_throttled_total" in metrics
    assert 'plait_auth_authentications_total{method="password",outcome="bad-credentials"}' in (
        metrics
    )
    auth.used.add(wrong["password"])


async def test_unknown_user_and_disabled_user_are_refused(auth: AuthApi) -> None:
    resp = await auth.call(
        "POST", "/v1/auth/login", json={"username": "ghost", "password": PASSWORD}
    )
    assert resp.status == 401
    assert (await resp.json())["detail"] == "wrong username or password"
    await auth.create_user("dee", roles=["viewer"])
    cookie = await auth.login("dee")
    assert (await auth.call("POST", "/v1/auth/users/dee/disable", headers=ADMIN)).status == 200
    resp = await auth.call("GET", "/v1/auth/whoami", headers=cookie, replica=1)
    assert resp.status == 401
    resp = await auth.call("POST", "/v1/auth/login", json={"username": "dee", "password": PASSWORD})
    assert resp.status == 401
    assert (await resp.json())["detail"] == "user 'dee' is disabled"
    # Enabling again does not bring the ended session back.
    assert (await auth.call("POST", "/v1/auth/users/dee/enable", headers=ADMIN)).status == 200
    assert (await auth.call("GET", "/v1/auth/whoami", headers=cookie)).status == 401
    await auth.login("dee")


async def test_a_session_cookie_is_not_a_bearer_token(auth: AuthApi) -> None:
    await auth.create_user("eve", roles=["viewer"])
    cookie = (await auth.login("eve"))["Cookie"].split("=", 1)[1]
    resp = await auth.call("GET", "/v1/auth/whoami", headers={"Authorization": f"Bearer {cookie}"})
    assert resp.status == 401
    assert "a session cookie is not a bearer token" in (await resp.json())["detail"]
    resp = await auth.call("GET", "/v1/auth/whoami", headers={"Cookie": "plait_session=junk"})
    assert resp.status == 401
    assert "session cookie" in (await resp.json())["detail"]


class TestShortSessions:
    """Sessions of 3 s idle time and 7 s absolute limit."""

    @pytest.fixture
    def auth_settings(self) -> AuthSettings:
        return fast_settings(session_idle_seconds=3.0, session_absolute_seconds=7.0)

    async def test_use_refreshes_a_session_until_its_absolute_limit(self, auth: AuthApi) -> None:
        await auth.create_user("bob", roles=["viewer"])
        cookie = await auth.login("bob")
        started = time.monotonic()
        # Used every half second, it outlives its 3 s idle time, up to the 7 s limit.
        last_ok = 0.0
        while True:
            await asyncio.sleep(0.5)
            resp = await auth.call("GET", "/v1/auth/whoami", headers=cookie)
            if resp.status != 200:
                break
            last_ok = time.monotonic() - started
            assert last_ok < 30, "the session outlived its absolute limit"
        assert resp.status == 401
        assert "absolute limit" in (await resp.json())["detail"]
        assert last_ok > 3.5, f"never refreshed past its idle time (last success {last_ok:.1f} s)"
        # Left alone, it ends after its idle time. (Signing in deleted the ended session.)
        cookie = await auth.login("bob")
        assert await auth.rows("SELECT count(*) FROM auth_service.sessions") == [(1,)]
        await asyncio.sleep(3.5)
        resp = await auth.call("GET", "/v1/auth/whoami", headers=cookie)
        assert resp.status == 401
        assert "expired after inactivity" in (await resp.json())["detail"]
