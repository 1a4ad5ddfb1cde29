"""Inbound webhooks: a delivery's signature checked with its Integration's signing secret,
and what CloudEvent it becomes.

Signatures are HMACs of the exact bytes received, compared in constant time. A delivery
that is unsigned, wrongly signed, outside Slack's timestamp window, or addressed to an
Integration that cannot verify it (none, no webhooks for its type, no Secret) raises
:class:`Unverified`; its message names the cause for the log, while the sender gets one
answer for all of them, so a stranger learns nothing about which Integrations exist.

The signing secret is read by the caller (``plait api`` reads the Secret from Kubernetes,
see :mod:`plait.api.webhooks`) through :data:`SecretReader`; it is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plait.integration import repository
from plait.kernel.database import Database
from plait.resources.integration import IntegrationSpec

__all__ = [
    "SLACK_WINDOW_SECONDS",
    "BadDelivery",
    "Delivery",
    "SecretReader",
    "Unverified",
    "WebhookIntegration",
    "github_delivery",
    "hmac_delivery",
    "receive",
    "resolve",
    "slack_delivery",
    "verify_github",
    "verify_hmac",
    "verify_slack",
]

COMPONENT = "integration"
#: How far a Slack request's timestamp may be from now (Slack's own recommendation).
SLACK_WINDOW_SECONDS = 300
_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}

#: (namespace, Secret name) -> the Secret's data, decoded; None when it does not exist.
SecretReader = Callable[[str, str], Awaitable[Mapping[str, str] | None]]


class Unverified(Exception):
    """The delivery cannot be accepted as coming from the Integration's sender."""


class BadDelivery(Exception):
    """A verified delivery whose content cannot become an event (the message says why)."""


@dataclass(frozen=True)
class WebhookIntegration:
    """An Integration that receives webhooks: its type, settings and signing secret."""

    name: str
    type: str
    settings: Mapping[str, Any]
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Delivery:
    """What a verified delivery becomes: a CloudEvent's attributes, or only an answer."""

    id: str
    type: str
    data: Any = None
    data_content_type: str | None = "application/json"
    subject: str | None = None
    reply: Mapping[str, Any] | None = None
    """Answered to the sender instead of storing an event (Slack's URL verification)."""


async def resolve(
    db: Database, namespace: str, name: str, read_secret: SecretReader
) -> WebhookIntegration:
    """The current version of the Integration and its signing secret.

    Raises :class:`Unverified` when there is none to verify a delivery with."""
    async with db.connection(COMPONENT) as conn:
        row = await repository.latest_integration(conn, namespace, name)
        if row is None or row.deleted_at is not None:
            raise Unverified(f"no Integration {namespace}/{name}")
        catalog_type = await repository.get_integration_type(conn, row.integration_type)
    key = catalog_type.webhook_secret_key if catalog_type is not None else None
    if key is None:
        raise Unverified(
            f"Integration {namespace}/{name}: type {row.integration_type!r} receives no webhooks"
        )
    if row.secret_name is None:
        raise Unverified(f"Integration {namespace}/{name} has no secretRef")
    spec = IntegrationSpec.model_validate(row.spec)
    secret_key = ((spec.secret_ref.keys if spec.secret_ref else None) or {}).get(key, key)
    data = await read_secret(namespace, row.secret_name)
    if data is None:
        raise Unverified(f"Integration {namespace}/{name}: Secret {row.secret_name!r} not found")
    value = data.get(secret_key)
    if not value:
        raise Unverified(
            f"Integration {namespace}/{name}: Secret {row.secret_name!r} has no key "
            f"{secret_key!r} (the {key} of type {row.integration_type!r})"
        )
    return WebhookIntegration(name, row.integration_type, dict(row.settings), value.encode())


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise Unverified(f"no {name} header")
    return value


def _matches(secret: bytes, message: bytes, presented: str, algorithm: str = "sha256") -> bool:
    expected = hmac.new(secret, message, _ALGORITHMS[algorithm]).hexdigest()
    return hmac.compare_digest(expected.encode(), presented.strip().lower().encode())


def verify_github(secret: bytes, headers: Mapping[str, str], body: bytes) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, required (the SHA-1
    ``X-Hub-Signature`` is not accepted)."""
    signature = _header(headers, "X-Hub-Signature-256")
    scheme, _, digest = signature.partition("=")
    if scheme != "sha256" or not _matches(secret, body, digest):
        raise Unverified("X-Hub-Signature-256 does not match the body")


def verify_slack(
    secret: bytes, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> None:
    """``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`` with
    ``X-Slack-Request-Timestamp`` within :data:`SLACK_WINDOW_SECONDS` of now."""
    stamp = _header(headers, "X-Slack-Request-Timestamp")
    signature = _header(headers, "X-Slack-Signature")
    try:
        sent = int(stamp)
    except ValueError:
        raise Unverified("X-Slack-Request-Timestamp is not a number") from None
    if abs((time.time() if now is None else now) - sent) > SLACK_WINDOW_SECONDS:
        raise Unverified(f"X-Slack-Request-Timestamp is over {SLACK_WINDOW_SECONDS} s from now")
    version, _, digest = signature.partition("=")
    if version != "v0" or not _matches(secret, b"v0:" + stamp.encode() + b":" + body, digest):
        raise Unverified("X-Slack-Signature does not match the body")


def verify_hmac(
    secret: bytes, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes
) -> None:
    """``<signatureHeader>: <signaturePrefix><hex HMAC of the body>`` with ``algorithm``."""
    header = settings.get("signatureHeader", "X-Signature")
    prefix = settings.get("signaturePrefix", "")
    signature = _header(headers, header).strip()
    if not signature.startswith(prefix):
        raise Unverified(f"{header} does not start with {prefix!r}")
    if not _matches(secret, body, signature[len(prefix) :], settings.get("algorithm", "sha256")):
        raise Unverified(f"{header} does not match the body")


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadDelivery(f"{what} is not JSON: {exc}") from None


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise BadDelivery("the form body is not UTF-8") from None


def _is_form(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def github_delivery(headers: Mapping[str, str], content_type: str, body: bytes) -> Delivery:
    """``com.github.<X-GitHub-Event>``, id the ``X-GitHub-Delivery`` GUID (a redelivery has
    the same, so it is stored once), subject the repository's ``full_name``."""
    event = headers.get("X-GitHub-Event", "")
    delivery = headers.get("X-GitHub-Delivery", "")
    if not event or not delivery:
        raise BadDelivery("a GitHub delivery has X-GitHub-Event and X-GitHub-Delivery headers")
    if _is_form(content_type):
        payload = _json(_form(body).get("payload", "").encode(), "the form's payload field")
    else:
        payload = _json(body, "the body")
    repository_ = payload.get("repository") if isinstance(payload, dict) else None
    subject = repository_.get("full_name") if isinstance(repository_, dict) else None
    return Delivery(
        id=delivery,
        type=f"com.github.{event}",
        data=payload,
        subject=subject if isinstance(subject, str) else None,
    )


def slack_delivery(headers: Mapping[str, str], content_type: str, body: bytes) -> Delivery:
    """An Events API callback (``com.slack.<event type>``, id its ``event_id``: Slack's
    retries carry the same), a URL verification (answered with its challenge, nothing
    stored), or a form post: a slash command (``com.slack.command``) or an interaction's
    ``payload`` (``com.slack.interaction``), id its ``trigger_id``."""
    stamp = headers.get("X-Slack-Request-Timestamp", "")
    if _is_form(content_type):
        form = _form(body)
        if "payload" in form:
            payload = _json(form["payload"].encode(), "the form's payload field")
            trigger = payload.get("trigger_id") if isinstance(payload, dict) else None
            kind, data = "com.slack.interaction", payload
        else:
            trigger = form.get("trigger_id")
            kind, data = "com.slack.command", form
        ident = trigger or hashlib.sha256(stamp.encode() + b":" + body).hexdigest()
        return Delivery(id=str(ident), type=kind, data=data)
    payload = _json(body, "the body")
    if not isinstance(payload, dict):
        raise BadDelivery("a Slack Events API request is a JSON object")
    if payload.get("type") == "url_verification":
        return Delivery(id="", type="", reply={"challenge": payload.get("challenge", "")})
    event = payload.get("event")
    event_type = event.get("type") if isinstance(event, dict) else None
    event_id = payload.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise BadDelivery("a Slack event_callback has an event_id")
    return Delivery(
        id=event_id,
        type=f"com.slack.{event_type or payload.get('type', 'event')}",
        data=payload,
        subject=payload.get("team_id") if isinstance(payload.get("team_id"), str) else None,
    )


def hmac_delivery(
    settings: Mapping[str, Any], headers: Mapping[str, str], content_type: str, body: bytes
) -> Delivery:
    """``eventType`` (``dev.plait.webhook``), id the ``idHeader``'s value when the sender
    sends one, else the body's SHA-256 (an identical body is stored once); the body as
    JSON when it is, else as text (``data_content_type`` the request's)."""
    id_header = settings.get("idHeader")
    ident = headers.get(id_header) if id_header else None
    if not ident:
        ident = hashlib.sha256(body).hexdigest()
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        data: Any = _json(body, "the body")
        media = "application/json"
    else:
        try:
            data = body.decode()
        except UnicodeDecodeError:
            raise BadDelivery("the body is neither JSON nor UTF-8 text") from None
        media = media or "text/plain"
    return Delivery(
        id=ident, type=settings.get("eventType", "dev.plait.webhook"), data=data,
        data_content_type=media,
    )  # fmt: skip


def receive(
    integration: WebhookIntegration,
    headers: Mapping[str, str],
    content_type: str,
    body: bytes,
    now: float | None = None,
) -> Delivery:
    """Verify the delivery, then map it (raises :class:`Unverified` or :class:`BadDelivery`)."""
    secret, settings = integration.secret, integration.settings
    if integration.type == "github":
        verify_github(secret, headers, body)
        return github_delivery(headers, content_type, body)
    if integration.type == "slack":
        verify_slack(secret, headers, body, now)
        return slack_delivery(headers, content_type, body)
    if integration.type == "webhook":
        verify_hmac(secret, settings, headers, body)
        return hmac_delivery(settings, headers, content_type, body)
    raise Unverified(f"type {integration.type!r} has no webhook verification")
