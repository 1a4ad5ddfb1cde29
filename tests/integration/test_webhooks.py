"""Signed inbound webhooks: GitHub, Slack and generic HMAC deliveries through the real API
application, on the real schema, with the signing secret read from a real Secret of the
test cluster's kube-apiserver.

The signature checks are first tested against the providers' own documented examples
(GitHub's "Hello, World!" vector, Slack's slash-command request)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.api.webhooks import WEBHOOK_SECRETS, KubernetesSecrets
from plait.integration.handlers import IntegrationStore
from plait.integration.webhooks import Unverified, verify_github, verify_slack
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.kernel.kube import Kube as KubeCalls
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import ObjectRef, OperatorContext
from tests.fixtures.kube import Kube

PUSH = (Path(__file__).parent / "data" / "github_push.json").read_bytes()
GITHUB_SECRET = "gh-" + uuid.uuid4().hex
SLACK_SECRET = "sl-" + uuid.uuid4().hex
HOOK_SECRET = "hk-" + uuid.uuid4().hex
MAX_BYTES = 16384

# GitHub's documented test vector ("Validating webhook deliveries").
GITHUB_DOC_SECRET = b"It's a Secret to Everybody"
GITHUB_DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
# Slack's documented example ("Verifying requests from Slack").
SLACK_DOC_SECRET = b"8f742231b10e8888abcd99yyyzzz85a5"
SLACK_DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F39770"
    b"0885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d"
    b"2c447fce8b6703c"
)
SLACK_DOC_HEADERS = {
    "X-Slack-Request-Timestamp": "1531420618",
    "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
}


def test_github_documented_vector() -> None:
    verify_github(
        GITHUB_DOC_SECRET, {"X-Hub-Signature-256": GITHUB_DOC_SIGNATURE}, b"Hello, World!"
    )
    with pytest.raises(Unverified, match="does not match"):
        verify_github(GITHUB_DOC_SECRET, {"X-Hub-Signature-256": GITHUB_DOC_SIGNATURE}, b"Hello")
    with pytest.raises(Unverified, match="no X-Hub-Signature-256 header"):
        verify_github(GITHUB_DOC_SECRET, {"X-Hub-Signature": "sha1=00"}, b"Hello, World!")


def test_slack_documented_example_and_its_window() -> None:
    verify_slack(SLACK_DOC_SECRET, SLACK_DOC_HEADERS, SLACK_DOC_BODY, now=1531420618 + 299)
    with pytest.raises(Unverified, match="over 300 s from now"):
        verify_slack(SLACK_DOC_SECRET, SLACK_DOC_HEADERS, SLACK_DOC_BODY, now=1531420618 + 301)
    with pytest.raises(Unverified, match="does not match"):
        verify_slack(b"other", SLACK_DOC_HEADERS, SLACK_DOC_BODY, now=1531420618)


class Hooks:
    def __init__(self, client: TestClient, dsn: str, namespace: str) -> None:
        self.client = client
        self.dsn = dsn
        self.namespace = namespace

    async def post(self, integration: str, body: bytes, headers: dict[str, str]) -> Any:
        return await self.client.post(
            f"/v1/namespaces/{self.namespace}/webhooks/{integration}", data=body, headers=headers
        )

    async def events(self) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            cursor = await conn.execute(
                "SELECT source, event_id, type, subject, data, data_content_type "
                "FROM event_processing_service.event_instances ORDER BY received_at, id"
            )
            return await cursor.fetchall()


async def _apply(db: Database, namespace: str, name: str, spec: dict[str, Any]) -> None:
    ctx = OperatorContext(db, cast(KubeCalls, None))
    ref = ObjectRef(namespace, name, str(uuid.uuid4()), 1)
    applied = await IntegrationStore().apply(ctx, ref, IntegrationSpec.model_validate(spec))
    assert applied.condition_status == "True", applied.message


@pytest.fixture
async def hooks(
    migrated_database: str, component_dsns: dict[str, str], kube: Kube
) -> AsyncIterator[Hooks]:
    kube.core.create_namespaced_secret(
        kube.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="hooks"),
            string_data={
                "token": "not-used-here",
                "webhookSecret": GITHUB_SECRET,
                "slack-signing": SLACK_SECRET,
                "secret": HOOK_SECRET,
            },
        ),
    )
    settings = Settings(database_url=component_dsns["event_processing"], database_pool_min=1)
    database = await Database.open(
        settings,
        list(map(component_by_name, ("event_processing", "integration", "auth"))),
        environ={
            "PLAIT_DATABASE_URL_AUTH": component_dsns["auth"],
            "PLAIT_DATABASE_URL_INTEGRATION": component_dsns["integration"],
        },
    )
    ns = kube.namespace
    await _apply(database, ns, "repo", {"type": "github", "secretRef": {"name": "hooks"}})
    await _apply(
        database,
        ns,
        "chat",
        {
            "type": "slack",
            "secretRef": {"name": "hooks", "keys": {"signingSecret": "slack-signing"}},
        },
    )
    await _apply(
        database,
        ns,
        "shop",
        {
            "type": "webhook",
            "settings": {
                "signatureHeader": "X-Shop-Signature",
                "algorithm": "sha512",
                "signaturePrefix": "sha512=",
                "idHeader": "X-Request-Id",
                "eventType": "shop.order",
            },
            "secretRef": {"name": "hooks"},
        },
    )
    await _apply(database, ns, "bare", {"type": "github"})
    await _apply(database, ns, "lost", {"type": "github", "secretRef": {"name": "missing"}})
    await _apply(database, ns, "site", {"type": "http", "settings": {"baseUrl": "http://x"}})
    config = ApiConfig(tokens=TokenStore(["t"]), max_event_bytes=MAX_BYTES, max_attempts=1)
    app = build_app(database, config)
    secrets_reader = KubernetesSecrets(str(kube.kubeconfig))
    app[WEBHOOK_SECRETS] = secrets_reader
    try:
        async with TestClient(TestServer(app)) as test_client:
            yield Hooks(test_client, migrated_database, ns)
    finally:
        secrets_reader.close()
        await database.close()


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


async def test_a_github_push_becomes_one_event_and_a_redelivery_is_not_stored_again(
    hooks: Hooks,
) -> None:
    delivery = str(uuid.uuid4())
    first = await hooks.post("repo", PUSH, github_headers(PUSH, delivery))
    assert first.status == 202, await first.text()
    source = f"/namespaces/{hooks.namespace}/webhooks/repo"
    assert await first.json() == {
        "id": delivery, "source": source, "stored": True, "position": None, "partitionKey": None,
    }  # fmt: skip
    again = await hooks.post("repo", PUSH, github_headers(PUSH, delivery))
    assert again.status == 200
    assert (await again.json())["stored"] is False
    assert await hooks.events() == [
        (source, delivery, "com.github.push", "Codertocat/Hello-World", json.loads(PUSH),
         "application/json"),
    ]  # fmt: skip


async def test_unsigned_or_wrongly_signed_deliveries_get_401_and_store_nothing(
    hooks: Hooks,
) -> None:
    good = github_headers(PUSH, str(uuid.uuid4()))
    tampered = PUSH.replace(b"simple-tag", b"other-tag")
    cases = [
        ("repo", tampered, good),  # the body changed after signing
        ("repo", PUSH, {**good, "X-Hub-Signature-256": "sha256=" + "0" * 64}),
        ("repo", PUSH, {k: v for k, v in good.items() if k != "X-Hub-Signature-256"}),
        ("repo", PUSH, github_headers(PUSH, str(uuid.uuid4()), secret="guessed")),
        ("repo", PUSH, {**good, "X-Hub-Signature-256": good["X-Hub-Signature-256"][7:]}),
        ("nobody", PUSH, good),  # no such Integration
        ("bare", PUSH, good),  # no secretRef
        ("lost", PUSH, good),  # its Secret does not exist
        ("site", PUSH, good),  # type http receives no webhooks
    ]
    for name, body, headers in cases:
        answer = await hooks.post(name, body, headers)
        assert answer.status == 401, (name, await answer.text())
        problem = await answer.json()
        assert problem["title"] == "Unauthorized"
        assert GITHUB_SECRET not in json.dumps(problem)
    assert await hooks.events() == []


async def test_a_body_over_the_limit_is_refused_before_it_is_verified(hooks: Hooks) -> None:
    big = json.dumps({"padding": "x" * MAX_BYTES}).encode()
    answer = await hooks.post("repo", big, github_headers(big, str(uuid.uuid4())))
    assert answer.status == 413
    assert f"the limit is {MAX_BYTES} bytes" in (await answer.json())["detail"]
    assert await hooks.events() == []


def slack_headers(body: bytes, stamp: int, secret: str = SLACK_SECRET) -> dict[str, str]:
    base = b"v0:" + str(stamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": str(stamp),
        "X-Slack-Signature": f"v0={digest}",
    }


async def test_slack_verification_events_and_replays(hooks: Hooks) -> None:
    now = int(time.time())
    challenge = json.dumps(
        {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
         "type": "url_verification"}
    ).encode()  # fmt: skip
    answer = await hooks.post("chat", challenge, slack_headers(challenge, now))
    assert answer.status == 200
    assert await answer.json() == {
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    }
    callback = json.dumps(
        {"token": "x", "team_id": "T123ABC456", "api_app_id": "A123ABC456",
         "type": "event_callback",
         "event": {"type": "app_mention", "user": "U123ABC456", "text": "<@U0LAN0Z89> deploy",
                   "ts": "1515449522.000016", "channel": "C123ABC456"},
         "event_id": "Ev123ABC456", "event_time": 1515449522}
    ).encode()  # fmt: skip
    stored = await hooks.post("chat", callback, slack_headers(callback, now))
    assert stored.status == 202, await stored.text()
    retried = await hooks.post("chat", callback, slack_headers(callback, now + 1))
    assert retried.status == 200  # Slack's retry: same event_id, stored once
    stale = await hooks.post("chat", callback, slack_headers(callback, now - 600))
    assert stale.status == 401  # a replay of an old, validly signed request
    source = f"/namespaces/{hooks.namespace}/webhooks/chat"
    assert [e[:4] for e in await hooks.events()] == [
        (source, "Ev123ABC456", "com.slack.app_mention", "T123ABC456")
    ]


async def test_a_generic_hmac_webhook_with_its_own_header_algorithm_and_id(
    hooks: Hooks,
) -> None:
    body = b'{"order": 42}'
    digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha512).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Shop-Signature": f"sha512={digest}",
        "X-Request-Id": "req-1",
    }
    assert (await hooks.post("shop", body, headers)).status == 202
    assert (await hooks.post("shop", body, headers)).status == 200
    sha256 = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    wrong_algorithm = {**headers, "X-Shop-Signature": f"sha512={sha256}", "X-Request-Id": "r2"}
    assert (await hooks.post("shop", body, wrong_algorithm)).status == 401
    no_prefix = {**headers, "X-Shop-Signature": digest, "X-Request-Id": "r3"}
    assert (await hooks.post("shop", body, no_prefix)).status == 401
    source = f"/namespaces/{hooks.namespace}/webhooks/shop"
    assert await hooks.events() == [
        (source, "req-1", "shop.order", None, {"order": 42}, "application/json")
    ]
