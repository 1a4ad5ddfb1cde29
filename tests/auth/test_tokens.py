"""API tokens against the real database: shown once, scoped, expiring, revoked on the next
request on every replica, refused when malformed, never stored in clear."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from plait.auth.secrets import TOKEN_PATTERN, parse
from tests.auth.conftest import ADMIN, AuthApi, bearer

EVENTS = "/v1/namespaces/{}/events"
STRUCTURED = {"Content-Type": "application/cloudevents+json"}


def event(id_: str) -> str:
    return json.dumps({"specversion": "1.0", "id": id_, "source": "/t", "type": "t.happened"})


async def publish(auth: AuthApi, token: str, namespace: str, replica: int = 0) -> int:
    resp = await auth.clients[replica].post(
        EVENTS.format(namespace),
        data=event(f"e-{datetime.now().timestamp()}"),
        headers={**STRUCTURED, **bearer(token)},
    )
    return resp.status


async def test_token_is_shown_once_and_scoped_within_its_owner(auth: AuthApi) -> None:
    await auth.create_user(
        "ada", roles=["viewer"], grants=[{"role": "editor", "namespace": "shop"}]
    )
    cookie = await auth.login("ada")
    resp = await auth.call(
        "POST", "/v1/auth/tokens", headers=cookie, json={"name": "ci", "scopes": ["events:publish"]}
    )
    assert resp.status == 201, await resp.text()
    issued = await resp.json()
    token = issued["token"]
    auth.used.add(token)
    assert TOKEN_PATTERN.match(token)
    assert parse(token) == "pat"
    assert issued["prefix"] == token[:14]
    assert issued["kind"] == "personal"
    assert issued["owner"] == "ada"
    assert issued["scopes"] == ["events:publish"]

    # Listed without the secret.
    listing = await (await auth.call("GET", "/v1/auth/tokens", headers=cookie)).json()
    assert [t["id"] for t in listing["items"]] == [issued["id"]]
    assert "token" not in listing["items"][0]

    # editor in shop: publishing there works; elsewhere 403 naming permission and namespace.
    assert await publish(auth, token, "shop") == 202
    resp = await auth.client.post(
        EVENTS.format("other"), data=event("x"), headers={**STRUCTURED, **bearer(token)}
    )
    assert resp.status == 403
    problem = await resp.json()
    assert problem["permission"] == "events:publish"
    assert problem["namespace"] == "other"
    assert "ada lacks the permission events:publish in namespace 'other'" in problem["detail"]
    # The owner may read dead letters in shop, the token's scope may not.
    resp = await auth.call("GET", "/v1/namespaces/shop/deadletters", headers=bearer(token))
    assert resp.status == 403
    assert "within the token's scope" in (await resp.json())["detail"]
    resp = await auth.call("GET", "/v1/namespaces/shop/deadletters", headers=cookie)
    assert resp.status == 200

    # last-used time and address recorded.
    shown = await (await auth.call("GET", f"/v1/auth/tokens/{issued['id']}", headers=cookie)).json()
    assert shown["lastUsedAt"] is not None
    assert shown["lastUsedFrom"] == "127.0.0.1"

    # A scoped token cannot mint a wider one.
    resp = await auth.call(
        "POST",
        "/v1/auth/tokens",
        headers=bearer(token),
        json={"name": "wider", "scopes": ["events:read"]},
    )
    assert resp.status == 403  # its scope lacks tokens:own


async def test_bad_scopes_and_expiry_are_refused_and_change_nothing(auth: AuthApi) -> None:
    await auth.create_user("bob", roles=["viewer"])
    cookie = await auth.login("bob")
    cases: dict[str, dict[str, Any]] = {
        "scope auth:write is wider than the permissions of 'bob'": {"scopes": ["auth:write"]},
        "unknown permission(s) in scope: wizards:summon": {"scopes": ["wizards:summon"]},
        "is in the past": {"expiresAt": "2001-01-01T00:00:00Z"},
        "/name: String should have at least 1 character": {"name": ""},
        "/expiresAt: Input should be a valid datetime": {"expiresAt": "tomorrow"},
    }
    for expected, extra in cases.items():
        resp = await auth.call(
            "POST", "/v1/auth/tokens", headers=cookie, json={"name": "t", **extra}
        )
        assert resp.status == 400, extra
        body = await resp.json()
        assert expected in body["detail"] or expected in json.dumps(body["errors"]), body
    assert await auth.rows("SELECT count(*) FROM auth_service.api_tokens") == [(0,)]


async def test_expired_token_is_refused(auth: AuthApi) -> None:
    await auth.create_user("cy", password=None, roles=["publisher"])
    soon = (datetime.now(UTC) + timedelta(seconds=4)).isoformat()
    issued = await auth.issue("cy", expiresAt=soon)
    assert issued["kind"] == "service"
    assert issued["token"].startswith("plait_svc_")
    assert await publish(auth, issued["token"], "shop") == 202
    await asyncio.sleep(4.5)
    resp = await auth.client.post(
        EVENTS.format("shop"), data=event("late"), headers={**STRUCTURED, **bearer(issued["token"])}
    )
    assert resp.status == 401
    assert "the token expired at" in (await resp.json())["detail"]
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_revocation_and_disabling_take_effect_on_the_next_request_on_every_replica(
    auth: AuthApi,
) -> None:
    await auth.create_user("dee", password=None, roles=["publisher"])
    first, second = await auth.issue("dee"), await auth.issue("dee")
    for replica in (0, 1):
        assert await publish(auth, first["token"], "shop", replica) == 202
    resp = await auth.call(
        "POST", f"/v1/auth/users/dee/tokens/{first['id']}/revoke", headers=ADMIN, replica=0
    )
    assert resp.status == 200
    assert (await resp.json())["revokedAt"] is not None
    resp = await auth.clients[1].post(
        EVENTS.format("shop"), data=event("r"), headers={**STRUCTURED, **bearer(first["token"])}
    )
    assert resp.status == 401
    assert "the token was revoked at" in (await resp.json())["detail"]
    assert await publish(auth, second["token"], "shop", 1) == 202

    # Disabling the owner stops every token at once; enabling brings them back.
    assert (await auth.call("POST", "/v1/auth/users/dee/disable", headers=ADMIN)).status == 200
    resp = await auth.clients[1].post(
        EVENTS.format("shop"), data=event("d"), headers={**STRUCTURED, **bearer(second["token"])}
    )
    assert resp.status == 401
    assert "user 'dee' is disabled" in (await resp.json())["detail"]
    assert (await auth.call("POST", "/v1/auth/users/dee/enable", headers=ADMIN)).status == 200
    assert await publish(auth, second["token"], "shop", 1) == 202


async def test_malformed_and_unknown_tokens_get_a_precise_401(auth: AuthApi) -> None:
    await auth.create_user("eve", password=None, roles=["viewer"])
    good = (await auth.issue("eve"))["token"]
    altered = good[:-8] + ("A" if good[-8] != "A" else "B") + good[-7:]
    forged = "plait_pat_" + "0" * 30 + "_" + "000000"
    cases = {
        "plait_pat_short": "not shaped like that",
        altered: "checksum does not match",
        forged: "checksum does not match",
        good.replace("plait_svc_", "plait_ses_").rsplit("_", 1)[0] + "_zzzzzz": "checksum",
    }
    for token, expected in cases.items():
        resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(token))
        assert resp.status == 401, token
        assert expected in (await resp.json())["detail"]
    # Well-formed but never issued (its checksum is right): unknown.
    from plait.auth.secrets import new_secret

    resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(new_secret("pat")))
    assert resp.status == 401
    assert "no such token" in (await resp.json())["detail"]
    resp = await auth.call("GET", "/v1/auth/whoami", headers=bearer(good))
    assert (await resp.json())["name"] == "eve"


async def test_tokens_are_stored_only_as_keyed_hashes(auth: AuthApi) -> None:
    await auth.create_user("fay", password=None, roles=["viewer"])
    issued = await auth.issue("fay")
    rows = await auth.rows("SELECT token_hash, display_prefix FROM auth_service.api_tokens")
    [(digest, prefix)] = rows
    assert len(digest) == 32
    assert prefix == issued["token"][:14]
    # The teardown's pg_dump check covers the rest: the token is nowhere in the database.
