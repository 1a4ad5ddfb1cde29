"""``POST /v1/namespaces/{namespace}/webhooks/{integration}``: signed deliveries from GitHub,
Slack or any HMAC-signing sender, each stored as a CloudEvent in the event queue.

The route is public: the signature is the credential. The body is read (capped at
``--max-event-bytes``) before anything else, then the Integration is looked up, its signing
secret read from its Kubernetes Secret (:class:`KubernetesSecrets`, ``get`` on that one
Secret, cached for :data:`SECRET_CACHE_SECONDS` in memory only), the signature checked, and
only then the event stored through event_processing's ingestion (the same insert as
``POST .../events``: a delivery stored before, same source and id, is acknowledged again and
not stored twice). Anything that fails verification is answered 401 and stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Mapping

import psycopg
from aiohttp import web
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel

from plait.api.context import CONFIG, DATABASE, namespace_of, read_capped
from plait.api.models import Acknowledgement
from plait.api.problems import Problem
from plait.event_processing import repository
from plait.event_processing.repository import EventReceipt, NewEvent
from plait.integration.webhooks import (
    BadDelivery,
    Delivery,
    SecretReader,
    Unverified,
    receive,
    resolve,
)
from plait.observability.metrics import event_ingested
from plait.observability.tracing import start_event_span, traceparent

__all__ = [
    "SECRET_CACHE_SECONDS",
    "WEBHOOK_SECRETS",
    "KubernetesSecrets",
    "UrlVerification",
    "post_webhook",
]

logger = logging.getLogger(__name__)

#: How long a Secret read for a delivery is reused (a rotated secret applies after that).
SECRET_CACHE_SECONDS = 10.0
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_RETRIES = 3


class UrlVerification(BaseModel):
    """The answer to Slack's URL verification request: its challenge, sent back."""

    challenge: str


class KubernetesSecrets:
    """Reads a Secret by name with the API process's own Kubernetes credentials (in-cluster
    ServiceAccount, else ``kubeconfig``/``KUBECONFIG``); answers are kept in memory for
    :data:`SECRET_CACHE_SECONDS`. Only ``get`` of a named Secret is used, never list or
    watch, so the permission can be granted per Secret (``resourceNames``)."""

    def __init__(self, kubeconfig: str | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._api: client.ApiClient | None = None
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, str] | None]] = {}

    def _client(self) -> client.ApiClient:
        if self._api is None:
            if self._kubeconfig is None:
                try:
                    configuration = client.Configuration()
                    config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    self._api = client.ApiClient(configuration)
                    return self._api
                except config.ConfigException:
                    pass
            self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=self._kubeconfig
            )
        assert self._api is not None
        return self._api

    def _read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            secret = client.CoreV1Api(self._client()).read_namespaced_secret(
                name, namespace, _request_timeout=10
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {
            key: base64.b64decode(value).decode(errors="replace")
            for key, value in (secret.data or {}).items()
        }

    async def __call__(self, namespace: str, name: str) -> Mapping[str, str] | None:
        now = time.monotonic()
        cached = self._cache.get((namespace, name))
        if cached is not None and cached[0] > now:
            return cached[1]
        data = await asyncio.to_thread(self._read, namespace, name)
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[(namespace, name)] = (now + SECRET_CACHE_SECONDS, data)
        return data

    def close(self) -> None:
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None


#: Where the route reads signing secrets from; unset: :data:`_DEFAULT_SECRETS` (tests set
#: a reader of their own cluster).
WEBHOOK_SECRETS: web.AppKey[SecretReader] = web.AppKey("webhook_secrets")
_DEFAULT_SECRETS = KubernetesSecrets()  # connects on the first delivery

_UNVERIFIED = (
    "the delivery is not signed with the signing secret of an Integration that receives "
    "webhooks here (see docs/integrations.md); nothing was stored"
)


async def post_webhook(request: web.Request) -> web.Response:
    namespace = namespace_of(request)
    name = request.match_info["integration"]
    config_ = request.app[CONFIG]
    body = await read_capped(request, config_.max_event_bytes, "delivery", "--max-event-bytes")
    if len(name) > 253 or not _NAME.match(name):
        raise Problem(404, "not-found", "Not found", f"{name[:80]!r} is not an Integration name")
    delivery = await _verified_delivery(request, namespace, name, body)
    if delivery.reply is not None:
        reply = UrlVerification.model_validate(delivery.reply)
        return web.json_response(reply.model_dump(mode="json"))
    stored, created = await _store(request, namespace, name, delivery)
    event_ingested("stored" if created else "duplicate")
    answer = Acknowledgement(
        id=stored.event_id,
        source=stored.source,
        stored=created,
        position=stored.sequence_position,
        partition_key=stored.partition_key,
    )
    return web.json_response(
        answer.model_dump(mode="json", by_alias=True), status=202 if created else 200
    )


async def _verified_delivery(
    request: web.Request, namespace: str, name: str, body: bytes
) -> Delivery:
    """The delivery, once its signature is verified with the Integration's secret; every
    way of not being verified is the same 401 to the sender (the log says which)."""
    try:
        integration = await resolve(
            request.app[DATABASE],
            namespace,
            name,
            request.app.get(WEBHOOK_SECRETS, _DEFAULT_SECRETS),
        )
        return receive(integration, request.headers, request.content_type, body)
    except Unverified as exc:
        logger.warning("webhook delivery to %s/%s refused: %s", namespace, name, exc)
        event_ingested("rejected")
        raise Problem(401, "unauthorized", "Unauthorized", _UNVERIFIED) from None
    except config.ConfigException as exc:
        logger.warning("webhook delivery to %s/%s: no Kubernetes API to read its Secret (%s)",
                       namespace, name, exc)  # fmt: skip
        event_ingested("rejected")
        raise Problem(401, "unauthorized", "Unauthorized", _UNVERIFIED) from None
    except ApiException as exc:
        logger.warning(
            "webhook delivery to %s/%s: its Secret cannot be read (%s %s)",
            namespace, name, exc.status, exc.reason,
        )  # fmt: skip
        event_ingested("rejected")
        raise Problem(401, "unauthorized", "Unauthorized", _UNVERIFIED) from None
    except BadDelivery as exc:
        event_ingested("rejected")
        raise Problem(400, "invalid-delivery", "Invalid delivery", str(exc)) from None


async def _store(
    request: web.Request, namespace: str, name: str, delivery: Delivery
) -> tuple[EventReceipt, bool]:
    """Store the delivery as a CloudEvent in the queue (a redelivery is a duplicate);
    returns the stored event and whether this request created it."""
    source = f"/namespaces/{namespace}/webhooks/{name}"
    span = start_event_span(
        namespace=namespace, source=source, type=delivery.type, event_id=delivery.id
    )
    context = span.get_span_context()
    event = NewEvent(
        namespace=namespace,
        source=source,
        id=delivery.id,
        type=delivery.type,
        subject=delivery.subject,
        data_content_type=delivery.data_content_type,
        data=delivery.data,
        extensions={"traceparent": traceparent(context)} if context.is_valid else None,
    )
    try:
        async with request.app[DATABASE].connection("event_processing") as conn:
            for attempt in range(_RETRIES):
                try:
                    async with conn.transaction():
                        [(stored, created)] = await repository.insert_events(
                            conn, [event], max_attempts=request.app[CONFIG].max_attempts
                        )
                        if created:
                            await repository.notify_new_events(conn)
                    return stored, created
                except (
                    psycopg.errors.DeadlockDetected,
                    psycopg.errors.SerializationFailure,
                    repository.ConcurrentDuplicateError,
                ):
                    if attempt == _RETRIES - 1:
                        raise
    finally:
        span.end()
    raise AssertionError("unreachable: the last attempt returns or raises")
