"""Integration health checks against real servers started here: an aiohttp server on
loopback that records every request (HTTP, GitHub's and Slack's APIs), the test
PostgreSQL, the S3-compatible server of the artifact tests; the credentials read from a
real Secret of the test cluster, the result recorded in the real schema."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client, config

from plait.integration import repository
from plait.integration.handlers import IntegrationStore
from plait.integration.health import check, check_integration, status_patch
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import ObjectRef, OperatorContext
from plait.testing.postgres import PostgresServer
from plait.testing.s3 import S3Server
from tests.fixtures.kube import Kube
from tests.fixtures.s3 import BUCKET

TOKEN = "tok-" + uuid.uuid4().hex
INTERNAL = {"allowInternal": True}  # the servers here listen on loopback


class Recorder:
    """A loopback HTTP server answering like the services checked, recording each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server: TestServer | None = None

    def url(self, path: str = "") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        authorised = request.headers.get("Authorization") == f"Bearer {TOKEN}"
        if request.path == "/ok":
            return web.Response(text="hello")
        if request.path == "/broken":
            return web.Response(status=503)
        if request.path == "/slow":
            await asyncio.sleep(5)
            return web.Response(text="late")
        if request.path == "/github/rate_limit":
            if not authorised:
                return web.json_response({"message": "Bad credentials"}, status=401)
            return web.json_response({"resources": {}})
        if request.path == "/slack/auth.test":
            if not authorised:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "team": "T"})
        if request.path == "/leaky/auth.test":  # a server that echoes the credential back
            header = request.headers.get("Authorization", "")
            return web.json_response({"ok": False, "error": f"bad {header}"})
        return web.Response(status=404)


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        rec.server = server
        yield rec


async def test_http_check_sends_the_settings_headers_and_the_token(recorder: Recorder) -> None:
    settings = {"baseUrl": recorder.url("/ok"), "headers": {"X-Team": "ops"}, "allowInternal": True}
    result = await check("http", settings, {"token": TOKEN}, 5)
    assert (result.healthy, result.error, result.reason) == (True, None, "CheckSucceeded")
    assert 0 < result.latency_seconds < 5
    [(method, path, headers)] = recorder.requests
    assert (method, path, headers["Authorization"], headers["X-Team"]) == (
        "GET", "/ok", f"Bearer {TOKEN}", "ops",
    )  # fmt: skip
    broken = await check("http", {"baseUrl": recorder.url("/broken"), **INTERNAL}, {}, 5)
    assert (broken.healthy, broken.error) == (
        False, f"GET {recorder.url('/broken')} answered HTTP 503",
    )  # fmt: skip


async def test_internal_addresses_are_refused_unless_allowed(recorder: Recorder) -> None:
    for url in (recorder.url("/ok"), "http://169.254.169.254/latest/meta-data/"):
        result = await check("http", {"baseUrl": url}, {"token": TOKEN}, 5)
        assert (result.healthy, result.reason) == (False, "InternalAddress")
        assert result.error is not None
        assert "the Integration does not allow internal addresses (allowInternal)" in result.error
    named = await check("github", {"apiUrl": "http://localhost:9/"}, {}, 5)
    assert named.error is not None
    assert named.error.startswith("refused: localhost resolves to ")
    assert recorder.requests == []


async def test_a_check_past_its_timeout_fails_with_reason_timeout(recorder: Recorder) -> None:
    result = await check("http", {"baseUrl": recorder.url("/slow"), **INTERNAL}, {}, 0.3)
    assert (result.healthy, result.reason, result.error) == (
        False, "Timeout", "no answer within 0.3 s",
    )  # fmt: skip
    assert result.latency_seconds < 2


async def test_github_and_slack_make_their_auth_call(recorder: Recorder) -> None:
    github = {"apiUrl": recorder.url("/github"), **INTERNAL}
    assert (await check("github", github, {"token": TOKEN}, 5)).healthy
    refused = await check("github", github, {"token": "wrong"}, 5)
    assert refused.error == f"GET {recorder.url('/github/rate_limit')} answered HTTP 401"
    slack = {"apiUrl": recorder.url("/slack"), **INTERNAL}
    assert (await check("slack", slack, {"token": TOKEN}, 5)).healthy
    invalid = await check("slack", slack, {"token": "wrong"}, 5)
    assert invalid.error == "Slack auth.test: ok is false (invalid_auth)"
    assert [(m, p, h.get("Authorization")) for m, p, h in recorder.requests] == [
        ("GET", "/github/rate_limit", f"Bearer {TOKEN}"),
        ("GET", "/github/rate_limit", "Bearer wrong"),
        ("POST", "/slack/auth.test", f"Bearer {TOKEN}"),
        ("POST", "/slack/auth.test", "Bearer wrong"),
    ]


async def test_a_secret_echoed_in_an_error_is_masked(recorder: Recorder) -> None:
    result = await check(
        "slack", {"apiUrl": recorder.url("/leaky"), **INTERNAL}, {"token": TOKEN}, 5
    )
    assert result.error == "Slack auth.test: ok is false (bad Bearer ***)"


async def test_postgres_runs_select_1_with_the_password(
    postgres_server: PostgresServer, migrated_database: str, role_passwords: dict[str, str]
) -> None:
    database = migrated_database.rsplit("/", 1)[1]
    settings = {
        "host": "127.0.0.1",
        "port": postgres_server.port,
        "database": database,
        "user": component_by_name("integration").role,
        "sslmode": "disable",
    }
    good = await check("postgres", settings, {"password": role_passwords["integration"]}, 5)
    assert (good.healthy, good.error) == (True, None)
    wrong = "wrong-" + uuid.uuid4().hex
    bad = await check("postgres", settings, {"password": wrong}, 5)
    assert not bad.healthy
    assert bad.error is not None
    assert "password authentication failed" in bad.error
    assert wrong not in bad.error


async def test_s3_checks_the_bucket(s3_server: S3Server) -> None:
    settings = {"bucket": BUCKET, "endpoint": s3_server.endpoint, "region": s3_server.region}
    keys = {"accessKeyId": s3_server.access_key, "secretAccessKey": s3_server.secret_key}
    assert (await check("s3", settings, keys, 10)).healthy
    missing = await check("s3", {**settings, "bucket": "no-such-bucket"}, keys, 10)
    assert (missing.healthy, missing.error) == (False, "S3 HeadBucket 'no-such-bucket': 404")
    forged = await check("s3", settings, {**keys, "secretAccessKey": "x" * 40}, 10)
    assert not forged.healthy
    assert forged.error is not None
    assert forged.error.startswith(f"S3 HeadBucket '{BUCKET}': 40")


@pytest.fixture
async def ctx(component_dsns: dict[str, str], kube: Kube) -> AsyncIterator[OperatorContext]:
    environ = {"PLAIT_DATABASE_URL_INTEGRATION": component_dsns["integration"]}
    async with await Database.open(
        Settings(database_pool_min=1), [component_by_name("integration")], environ=environ
    ) as database:
        config.load_kube_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
        calls = KubeCalls(pool_size=2)
        yield OperatorContext(database, calls)
        calls.close()


async def _store(ctx: OperatorContext, namespace: str, name: str, spec: dict[str, Any]) -> None:
    store_ctx = OperatorContext(ctx.db, cast(KubeCalls, None))
    ref = ObjectRef(namespace, name, str(uuid.uuid4()), 1)
    applied = await IntegrationStore().apply(store_ctx, ref, IntegrationSpec.model_validate(spec))
    assert applied.condition_status == "True", applied.message


async def test_the_operator_reads_the_secret_and_records_the_result(
    ctx: OperatorContext, kube: Kube, recorder: Recorder
) -> None:
    ns = kube.namespace
    kube.core.create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="api"), string_data={"api-token": TOKEN}),
    )
    base = {"type": "github", "settings": {"apiUrl": recorder.url("/github"), **INTERNAL}}
    check_spec = {"healthCheck": {"intervalSeconds": 60, "timeoutSeconds": 5}}
    specs = {
        "good": {
            **base,
            **check_spec,
            "secretRef": {"name": "api", "keys": {"token": "api-token"}},
        },
        "nokey": {**base, **check_spec, "secretRef": {"name": "api"}},
        "nosecret": {**base, **check_spec, "secretRef": {"name": "absent"}},
    }
    results = {}
    for name, spec in specs.items():
        await _store(ctx, ns, name, spec)
        results[name] = await check_integration(ctx, ns, name, IntegrationSpec.model_validate(spec))
    assert results["good"].healthy
    assert (results["nokey"].reason, results["nokey"].error) == (
        "SecretKeyMissing", "Secret 'api' has no key 'token'",
    )  # fmt: skip
    assert (results["nosecret"].reason, results["nosecret"].error) == (
        "SecretNotFound", "Secret 'absent' does not exist",
    )  # fmt: skip
    assert len(recorder.requests) == 1  # only the one with its credentials was called
    async with ctx.db.connection("integration") as conn:
        rows = {n: await repository.latest_integration(conn, ns, n) for n in specs}
    good = rows["good"]
    assert good is not None
    assert good.healthy is True
    assert good.health_error is None
    assert good.health_checked_at == results["good"].checked_at
    assert good.health_latency_seconds == pytest.approx(results["good"].latency_seconds)
    lost = rows["nosecret"]
    assert lost is not None
    assert (lost.healthy, lost.health_error) == (
        False,
        "Secret 'absent' does not exist",
    )
    patch = status_patch({"conditions": []}, 3, results["nosecret"])
    [condition] = patch["conditions"]
    assert {k: condition[k] for k in ("type", "status", "reason", "message")} == {
        "type": "Healthy",
        "status": "False",
        "reason": "SecretNotFound",
        "message": "Secret 'absent' does not exist",
    }
    assert patch["health"] == {"latencySeconds": 0.0, "error": "Secret 'absent' does not exist"}
