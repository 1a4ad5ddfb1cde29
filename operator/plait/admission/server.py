"""The webhook's HTTPS server: AdmissionReview in, verdict out; health and metrics.

Stateless: every request reads what it needs from the API server (the referenced objects,
a SubjectAccessReview per permission), so any number of replicas serve the same verdicts.
On a development cluster (``manage``) it also registers itself: a self-signed certificate
and a ValidatingWebhookConfiguration pointing at it, removed again when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION
from plait.admission.access import Need, UserInfo, subject_access_review
from plait.admission.review import review
from plait.kernel.certificates import write_self_signed_certificate
from plait.observability.endpoints import health_app
from plait.observability.metrics import ADMISSION_REVIEWS
from plait.resources import KINDS_BY_NAME

__all__ = ["CONFIGURATION_NAME", "WebhookOptions", "run_webhook"]

logger = logging.getLogger(__name__)

#: Name of the ValidatingWebhookConfiguration a managed webhook registers.
CONFIGURATION_NAME = "plait.dev"

#: The verdict label of ``plait_admission_reviews_total`` for a refusal's status code.
_REFUSALS = {422: "invalid", 403: "forbidden"}


def _verdict(response: Mapping[str, Any]) -> str:
    if response["allowed"]:
        return "warned" if response.get("warnings") else "allowed"
    return _REFUSALS.get(response["status"]["code"], "error")


@dataclass(frozen=True)
class WebhookOptions:
    """Options of ``plait webhook`` (each is also a ``PLAIT_WEBHOOK_*`` variable)."""

    address: str = "0.0.0.0"
    port: int = 9443
    cert_dir: Path | None = None
    """Folder with ``tls.crt`` and ``tls.key``; a self-signed pair when unset."""
    health_port: int = 8080
    """``/healthz`` and ``/metrics`` over plain HTTP; 0 turns it off."""
    manage: bool = False
    """Register a ValidatingWebhookConfiguration for this process (development clusters)."""
    host: str = "127.0.0.1"
    """Address the API server dials, with ``manage``."""
    namespaces: tuple[str, ...] = ()
    """With ``manage``: only objects in these namespaces are sent here (all when empty)."""


#: How often a mounted certificate is checked for renewal (cert-manager rotates it in place).
CERT_CHECK_SECONDS = 30.0


async def _reload_certificate(
    tls: ssl.SSLContext, crt: Path, key: Path, stop: asyncio.Event
) -> None:
    """Load a renewed certificate into the live TLS context: new handshakes use it, so a
    rotated certificate needs no restart."""

    def stamp() -> tuple[float, float]:
        return crt.stat().st_mtime, key.stat().st_mtime

    seen = stamp()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CERT_CHECK_SECONDS)
        try:
            current = stamp()
            if current != seen:
                tls.load_cert_chain(str(crt), str(key))
                seen = current
                logger.info("reloaded the webhook certificate from %s", crt.parent)
        except (OSError, ssl.SSLError) as exc:  # half-written during a rotation: next round
            logger.warning("could not reload the webhook certificate: %s", exc)


def _api() -> client.ApiClient:
    return client.ApiClient(client.Configuration.get_default_copy())


def _read(
    api: client.ApiClient, namespace: str, wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The specs of the referenced objects that exist, read live from the API server."""
    custom = client.CustomObjectsApi(api)
    found: dict[tuple[str, str], Mapping[str, Any]] = {}
    for kind, name in sorted(wanted):
        try:
            obj = cast(
                dict[str, Any],
                custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, KINDS_BY_NAME[kind].plural, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        found[(kind, name)] = obj.get("spec") or {}
    return found


def _authorize(api: client.ApiClient, user: UserInfo, namespace: str, need: Need) -> bool:
    authorization: Any = client.AuthorizationV1Api(api)  # takes the manifest as a dict
    result = authorization.create_subject_access_review(
        subject_access_review(user, namespace, need)
    )
    return bool(result.status and result.status.allowed)


def build_app(api: client.ApiClient) -> web.Application:
    """The admission routes: ``/validate-<plural>`` for every kind, and ``/validate``."""

    async def read(namespace: str, wanted: set[tuple[str, str]]) -> Any:
        return await asyncio.to_thread(_read, api, namespace, wanted)

    async def authorize(user: UserInfo, namespace: str, need: Need) -> bool:
        return await asyncio.to_thread(_authorize, api, user, namespace, need)

    async def validate(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            admission = body["request"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "expected an AdmissionReview"}, status=400)
        kind = str((admission.get("kind") or {}).get("kind") or "")
        try:
            response = await review(admission, read, authorize)
        except ApiException as exc:
            # Fail closed: without the API server's answer nothing is vouched for.
            response = {
                "uid": admission.get("uid", ""),
                "allowed": False,
                "status": {"code": 503, "message": f"admission could not ask the API server: "
                           f"{exc.status} {exc.reason}"},
            }  # fmt: skip
        ADMISSION_REVIEWS.labels(kind, _verdict(response)).inc()
        return web.json_response(
            {"apiVersion": body.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
             "response": response}
        )  # fmt: skip

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/validate", validate)
    for info in KINDS_BY_NAME.values():
        app.router.add_post(f"/validate-{info.plural}", validate)
    return app


def configuration(options: WebhookOptions, ca_bundle: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration of a managed webhook: one webhook per kind."""
    import base64

    webhooks = []
    for info in KINDS_BY_NAME.values():
        hook: dict[str, Any] = {
            "name": f"validate-{info.plural}.plait.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "matchPolicy": "Equivalent",
            "clientConfig": {
                "url": f"https://{options.host}:{options.port}/validate-{info.plural}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
            "rules": [
                {
                    "apiGroups": [API_GROUP],
                    "apiVersions": [API_VERSION],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [info.plural],
                    "scope": "Namespaced",
                }
            ],
        }
        if options.namespaces:
            hook["namespaceSelector"] = {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": list(options.namespaces),
                    }
                ]
            }
        webhooks.append(hook)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION_NAME, "labels": {"app.kubernetes.io/name": "plait"}},
        "webhooks": webhooks,
    }


def _register(api: client.ApiClient, body: dict[str, Any]) -> None:
    admission: Any = client.AdmissionregistrationV1Api(api)  # takes manifests as dicts
    try:
        current = admission.read_validating_webhook_configuration(CONFIGURATION_NAME)
    except ApiException as exc:
        if exc.status != 404:
            raise
        admission.create_validating_webhook_configuration(body)
        return
    body["metadata"]["resourceVersion"] = current.metadata.resource_version
    admission.replace_validating_webhook_configuration(CONFIGURATION_NAME, body)


def _unregister(api: client.ApiClient, ca_bundle: str) -> None:
    """Remove the configuration if it still points at this process (another may own it)."""
    admission = client.AdmissionregistrationV1Api(api)
    try:
        current = admission.read_validating_webhook_configuration(CONFIGURATION_NAME)
        if all(w.client_config.ca_bundle == ca_bundle for w in current.webhooks or ()):
            admission.delete_validating_webhook_configuration(CONFIGURATION_NAME)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def run_webhook(options: WebhookOptions, stop: asyncio.Event) -> None:
    """Serve admission until ``stop`` is set."""
    from kubernetes import config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    # A certificate made here lives as long as this process: its folder (and private key)
    # is removed at stop.
    made: Path | None = None
    if options.cert_dir is not None:
        crt, key = options.cert_dir / "tls.crt", options.cert_dir / "tls.key"
    else:
        made = Path(tempfile.mkdtemp(prefix="plait-webhook-"))
        crt, key = write_self_signed_certificate(made, [options.host, "localhost"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(crt), str(key))
    api = _api()
    ready = asyncio.Event()
    runners: list[web.AppRunner] = []
    try:
        runner = web.AppRunner(build_app(api), access_log=None)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, options.address, options.port, ssl_context=tls).start()
        if options.health_port:
            health = web.AppRunner(health_app(ready), access_log=None)
            await health.setup()
            runners.append(health)
            await web.TCPSite(health, options.address, options.health_port).start()
        body = configuration(options, crt.read_bytes())
        if options.manage:
            await asyncio.to_thread(_register, api, body)
        ready.set()
        logger.info("admission webhook serving on %s:%d", options.address, options.port)
        await _reload_certificate(tls, crt, key, stop)
    finally:
        if options.manage and ready.is_set():
            bundle = body["webhooks"][0]["clientConfig"]["caBundle"]
            await asyncio.to_thread(_unregister, api, bundle)
        for runner in reversed(runners):
            await runner.cleanup()
        api.close()  # type: ignore[no-untyped-call]
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
