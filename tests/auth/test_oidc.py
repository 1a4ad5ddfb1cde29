"""Single sign-on against a real OpenID Provider (hack/oidc-provider, built from the Go
module of github.com/zitadel/oidc): authorization code with PKCE, groups mapped to roles."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp
import pytest

from plait.auth.settings import AuthSettings, OidcSettings, RoleMapping
from plait.testing._process import free_port, stop_process, wait_until
from tests.auth.conftest import AuthApi, fast_settings

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "plait"
CLIENT_SECRET = "oidc-client-secret-" + os.urandom(6).hex()
PASSWORDS = {"grace": "grace's passphrase at the IdP", "mallory": "mallory's passphrase at the IdP"}
GROUPS = {"grace": ["shop-editors", "staff"], "mallory": ["outsiders"]}


@dataclass(frozen=True)
class Provider:
    issuer: str
    redirect_uri: str


@pytest.fixture(scope="module")
def provider_binary() -> Path:
    """hack/build-oidc-provider.sh: built into ~/.cache/plait on the first run."""
    build = subprocess.run(
        [str(ROOT / "hack" / "build-oidc-provider.sh")], capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return Path(build.stdout.strip())


@pytest.fixture
def api_port() -> int:
    return free_port()


@pytest.fixture
def provider(provider_binary: Path, api_port: int, tmp_path: Path) -> Iterator[Provider]:
    port = free_port()
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            {
                f"id-{name}": {
                    "username": name,
                    "password": password,
                    "email": f"{name}@example.org",
                    "groups": GROUPS[name],
                }
                for name, password in PASSWORDS.items()
            }
        )
    )
    redirect = f"http://127.0.0.1:{api_port}/v1/auth/oidc/callback"
    proc = subprocess.Popen(
        [str(provider_binary)],
        env={
            **os.environ,
            "PLAIT_OIDC_PORT": str(port),
            "PLAIT_OIDC_USERS": str(users),
            "PLAIT_OIDC_CLIENT_ID": CLIENT_ID,
            "PLAIT_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "PLAIT_OIDC_REDIRECT_URI": redirect,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    issuer = f"http://localhost:{port}/"

    def ready() -> bool:
        import urllib.request

        with urllib.request.urlopen(issuer + ".well-known/openid-configuration", timeout=2):
            return True

    try:
        wait_until(ready, timeout=30, what="the OpenID provider")
        yield Provider(issuer, redirect)
    finally:
        stop_process(proc)


@pytest.fixture
def auth_settings(provider: Provider) -> AuthSettings:
    return fast_settings(
        oidc=OidcSettings(
            issuer=provider.issuer,
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=provider.redirect_uri,
            mappings=(
                RoleMapping(group="shop-editors", role="editor", namespaces=("shop",)),
                RoleMapping(group="staff", role="viewer"),
            ),
        )
    )


async def sign_in(auth: AuthApi, username: str, password: str) -> aiohttp.ClientResponse:
    """A browser's trip: Plait -> provider's login form -> provider -> Plait's callback."""
    base = str(auth.client.make_url("/"))
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        start = await browser.get(base + "v1/auth/oidc/login", allow_redirects=False)
        assert start.status == 302, await start.text()
        authorize = start.headers["Location"]
        query = parse_qs(urlparse(authorize).query)
        assert query["code_challenge_method"] == ["S256"]
        assert query["code_challenge"][0]
        assert query["nonce"][0]
        assert query["state"][0]
        form_page = await browser.get(authorize)  # follows to the provider's login form
        html = await form_page.text()
        request_id = re.search(r'name="id" value="([^"]+)"', html)
        assert request_id is not None, html[:500]
        posted = await browser.post(
            urljoin(str(form_page.url), "/login/username"),
            data={"username": username, "password": password, "id": request_id.group(1)},
            allow_redirects=False,
        )
        location = posted.headers["Location"]
        # The provider's own redirects, until it sends the browser back to Plait.
        while not location.startswith(base):
            hop = await browser.get(urljoin(str(posted.url), location), allow_redirects=False)
            assert hop.status in (302, 303), await hop.text()
            location = hop.headers["Location"]
        back = await browser.get(location, allow_redirects=False)
        await back.read()
        return back


async def test_groups_map_to_roles_and_the_session_works(auth: AuthApi, provider: Provider) -> None:
    auth.used |= {CLIENT_SECRET, *PASSWORDS.values()}
    back = await sign_in(auth, "grace", PASSWORDS["grace"])
    assert back.status == 200, await back.text()
    assert (await back.json())["username"] == "grace"
    session = back.cookies["plait_session"]
    assert session["samesite"] == "Strict"
    auth.used.add(session.value)
    cookie = {"Cookie": f"plait_session={session.value}"}
    me = await (await auth.call("GET", "/v1/auth/whoami", headers=cookie)).json()
    assert me["name"] == "grace"
    assert "events:read" in me["permissions"]  # staff -> viewer everywhere
    assert "events:publish" in me["namespaces"]["shop"]  # shop-editors -> editor in shop
    rows = await auth.rows(
        "SELECT oidc_issuer, oidc_subject, password_hash, roles FROM auth_service.users"
    )
    assert rows == [(provider.issuer, "id-grace", None, ["viewer"])]
    # Signing in again reuses the user.
    assert (await sign_in(auth, "grace", PASSWORDS["grace"])).status == 200
    assert await auth.rows("SELECT count(*) FROM auth_service.users") == [(1,)]


async def test_unmapped_people_and_forged_callbacks_are_refused(auth: AuthApi) -> None:
    auth.used |= {CLIENT_SECRET, *PASSWORDS.values()}
    back = await sign_in(auth, "mallory", PASSWORDS["mallory"])
    assert back.status == 401
    assert (
        "no role mapping names the user or its groups (outsiders)" in (await back.json())["detail"]
    )
    assert await auth.rows("SELECT count(*) FROM auth_service.users") == [(0,)]
    # A callback without this browser's flow cookie, or with another state, is refused.
    resp = await auth.call("GET", "/v1/auth/oidc/callback?code=x&state=y")
    assert resp.status == 400
    assert "no plait_oidc cookie" in (await resp.json())["detail"]
    resp = await auth.call(
        "GET",
        "/v1/auth/oidc/callback?code=x&state=y",
        headers={"Cookie": "plait_oidc=forged.value"},
    )
    assert resp.status == 400
    assert "not made by this server" in (await resp.json())["detail"]
    resp = await auth.call("GET", "/v1/auth/oidc/callback?error=access_denied")
    assert resp.status == 400
    assert "access_denied" in (await resp.json())["detail"]
