"""Administration through /v1/auth: bad input gets a precise 400 and changes nothing;
every change and every failure is audited without the secret."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.auth.conftest import ADMIN, PASSWORD, AuthApi

USERS = "SELECT count(*) FROM auth_service.users"
GRANTS = "SELECT count(*) FROM auth_service.role_grants"


async def test_bad_users_are_refused_and_change_nothing(auth: AuthApi) -> None:
    cases: dict[str, dict[str, Any]] = {
        "the password has 5 characters; at least 12 are required": {"password": "short"},
        "/password: String should have at least 1 character": {"password": ""},
        "fewer than 4 different characters": {"password": "aaaaaaaaaaaabbb"},
        "the password contains the username": {"password": "zed-is-my-password"},
        "unknown role(s) wizard": {"roles": ["wizard"]},
        "unknown role(s) sorcerer": {"grants": [{"role": "sorcerer", "namespace": "shop"}]},
        "/grants/0/namespace": {"grants": [{"role": "viewer", "namespace": "Not_A_NS"}]},
        "/username: String should match pattern": {"username": "Zed"},
        "/email": {"email": "not-an-email"},
        "unknown field 'colour'": {"colour": "blue"},
    }
    for expected, change in cases.items():
        body = {
            "username": "zed",
            "password": PASSWORD,
            "roles": ["viewer"],
            "grants": [{"role": "editor", "namespace": "shop"}],
            **change,
        }
        resp = await auth.call("POST", "/v1/auth/users", headers=ADMIN, json=body)
        assert resp.status == 400, change
        detail = (await resp.json())["detail"]
        assert expected in detail, (change, detail)
        assert await auth.rows(USERS) == [(0,)]
        assert await auth.rows(GRANTS) == [(0,)]
    await auth.create_user(
        "zed", roles=["viewer"], grants=[{"role": "editor", "namespace": "shop"}]
    )
    resp = await auth.call(
        "POST", "/v1/auth/users", headers=ADMIN, json={"username": "zed", "password": PASSWORD}
    )
    assert resp.status == 400
    assert "exists already" in (await resp.json())["detail"]
    shown = await (await auth.call("GET", "/v1/auth/users/zed", headers=ADMIN)).json()
    assert shown["grants"] == [{"role": "editor", "namespace": "shop"}]
    assert "passwordHash" not in shown
    [(stored,)] = await auth.rows("SELECT password_hash FROM auth_service.users")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


async def test_roles_can_be_defined_and_deleted_but_not_builtin_ones(auth: AuthApi) -> None:
    resp = await auth.call(
        "POST",
        "/v1/auth/roles",
        headers=ADMIN,
        json={"name": "auditor", "permissions": ["auth:read", "nope:x"]},
    )
    assert resp.status == 400
    assert "unknown permission(s) nope:x" in (await resp.json())["detail"]
    resp = await auth.call(
        "POST",
        "/v1/auth/roles",
        headers=ADMIN,
        json={"name": "auditor", "permissions": ["auth:read"]},
    )
    assert resp.status == 201
    await auth.create_user("ivy", password=None, roles=["auditor"])
    resp = await auth.call("DELETE", "/v1/auth/roles/auditor", headers=ADMIN)
    assert resp.status == 400
    assert "still held" in (await resp.json())["detail"]
    resp = await auth.call("DELETE", "/v1/auth/roles/viewer", headers=ADMIN)
    assert resp.status == 400
    assert "built in" in (await resp.json())["detail"]
    resp = await auth.call("GET", "/v1/auth/roles/publisher", headers=ADMIN)
    assert (await resp.json())["permissions"] == ["events:publish", "tokens:own"]


async def test_changes_and_failures_are_audited_without_secrets(
    auth: AuthApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="plait.auth.audit")
    await auth.create_user("kim", roles=["viewer"])
    issued = await auth.issue("kim")
    await auth.call("POST", "/v1/auth/login", json={"username": "kim", "password": "wrong-pass-1"})
    await auth.call("GET", "/v1/auth/users", headers={"Authorization": f"Bearer {issued['token']}"})
    await auth.call("GET", "/v1/auth/whoami", headers={"Authorization": "Bearer nonsense"})
    audits = [(r.audit, r.getMessage()) for r in caplog.records if hasattr(r, "audit")]
    kinds = [kind for kind, _ in audits]
    assert "user.create" in kinds
    assert "token.create" in kinds
    assert kinds.count("authentication") == 2
    assert "authorization" in kinds
    by_kind = dict(audits)
    assert "user.create by token-file: kim" in by_kind["user.create"]
    assert "kim was refused: lacks auth:read cluster-wide" in by_kind["authorization"]
    text = "\n".join(f"{m} {vars(r)}" for r, (_, m) in zip(caplog.records, audits, strict=False))
    for secret in (PASSWORD, issued["token"], "wrong-pass-1", "nonsense"):
        assert secret not in text
    client = {getattr(r, "client", None) for r in caplog.records if hasattr(r, "audit")}
    assert "127.0.0.1" in client


async def test_audit_records_land_in_the_observability_logs(
    auth: AuthApi, component_dsns: dict[str, str]
) -> None:
    """Shipped by the observability component's log shipper; the teardown's pg_dump check
    then covers the logs table too."""
    from plait.observability.batching import DsnConnections
    from plait.observability.settings import ObservabilitySettings
    from plait.observability.shipper import LogShipper

    connections = DsnConnections(component_dsns["observability"])
    shipper = LogShipper(connections, ObservabilitySettings(log_flush_interval_ms=50))
    audit_logger = logging.getLogger("plait.auth.audit")
    audit_logger.setLevel(logging.INFO)
    shipper.start(audit_logger)
    try:
        await auth.create_user("lee", roles=["viewer"])
        wrong = {"username": "lee", "password": "not lee's password"}
        auth.used.add(wrong["password"])
        assert (await auth.call("POST", "/v1/auth/login", json=wrong)).status == 401
    finally:
        await shipper.stop(logger=audit_logger)
        await connections.close()
    rows = await auth.rows(
        "SELECT component, level::text, message, attributes FROM "
        "observability_service.observability_logs WHERE logger = 'plait.auth.audit' "
        "ORDER BY time"
    )
    assert [(c, m) for c, _, m, _ in rows] == [
        ("auth", "user.create by token-file: lee"),
        ("auth", "authentication failed (password): wrong username or password"),
    ]
    attributes = rows[1][3]
    assert attributes["audit"] == "authentication"
    assert attributes["outcome"] == "bad-credentials"
    assert attributes["username"] == "lee"
    assert attributes["client"] == "127.0.0.1"
