"""Health checks of Integrations, opt-in per object (``spec.healthCheck``).

Each catalog type's check makes a real connection with the Integration's own settings and
credentials (:func:`check`): an HTTP GET of ``baseUrl``; GitHub's ``GET /rate_limit`` and
Slack's ``auth.test`` with the token; ``SELECT 1`` on PostgreSQL; a HEAD of the S3 bucket.
The whole check is bounded by the Integration's timeout. Its result goes three places: the
object's status (``Healthy`` condition, ``lastCheckedTime``, ``health``), the Integration's
current row in ``integration_instances``, and the metrics.

Reading the credentials is the one time the operator reads an Integration's Secret, and only
for an Integration that asks to be checked (its author needed ``get`` on that Secret). An
error message never carries a secret value: every value of the Secret is masked in it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
import psycopg
from kubernetes.client.exceptions import ApiException

from plait import API_GROUP, API_VERSION
from plait.integration import repository
from plait.integration.guard import InternalAddress, check_url, connector
from plait.kernel.conditions import Condition, merge_conditions
from plait.observability.metrics import integration_checked
from plait.resources.integration import IntegrationSpec
from plait.resources.stores import OperatorContext, Sharing

__all__ = [
    "HEALTH_TICK_SECONDS",
    "CheckResult",
    "check",
    "check_integration",
    "register_health_checks",
    "status_patch",
]

logger = logging.getLogger(__name__)

COMPONENT = "integration"
#: How often the operator looks for Integrations whose check is due.
HEALTH_TICK_SECONDS = 5.0
#: Longest error message kept (status, table, log).
MAX_ERROR = 512


@dataclass(frozen=True)
class CheckResult:
    """One check: healthy or not, how long it took, and why not (no secret in it)."""

    healthy: bool
    latency_seconds: float
    error: str | None
    checked_at: dt.datetime
    reason: str = "CheckSucceeded"


class _Unhealthy(Exception):
    def __init__(self, message: str, reason: str = "CheckFailed") -> None:
        super().__init__(message)
        self.reason = reason


def _mask(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every secret value replaced, cut to :data:`MAX_ERROR` characters."""
    for value in sorted(secrets.values(), key=len, reverse=True):
        if value:
            text = text.replace(value, "***")
    return text[:MAX_ERROR]


async def _http_get(
    settings: Mapping[str, Any], method: str, url: str, headers: Mapping[str, str]
) -> tuple[int, bytes]:
    """One request through the guard (internal addresses refused unless allowInternal)."""
    allow = bool(settings.get("allowInternal"))
    check_url(url, allow)
    async with (
        aiohttp.ClientSession(connector=connector(allow)) as session,
        session.request(method, url, headers=dict(headers), allow_redirects=False) as r,
    ):
        return r.status, await r.content.read(64 * 1024)


def _bearer(secrets: Mapping[str, str]) -> dict[str, str]:
    token = secrets.get("token")
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _check_http(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    headers = {**settings.get("headers", {}), **_bearer(secrets)}
    status, _ = await _http_get(settings, "GET", settings["baseUrl"], headers)
    if status >= 400:
        raise _Unhealthy(f"GET {settings['baseUrl']} answered HTTP {status}")


async def _check_github(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    url = settings.get("apiUrl", "https://api.github.com").rstrip("/") + "/rate_limit"
    headers = {"Accept": "application/vnd.github+json", **_bearer(secrets)}
    status, _ = await _http_get(settings, "GET", url, headers)
    if status != 200:
        raise _Unhealthy(f"GET {url} answered HTTP {status}")


async def _check_slack(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    url = settings.get("apiUrl", "https://slack.com/api").rstrip("/") + "/auth.test"
    status, body = await _http_get(settings, "POST", url, _bearer(secrets))
    if status != 200:
        raise _Unhealthy(f"POST {url} answered HTTP {status}")
    try:
        answer = json.loads(body)
    except ValueError:
        raise _Unhealthy(f"POST {url} answered no JSON") from None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise _Unhealthy(f"Slack auth.test: ok is false ({error or 'no error given'})")


async def _check_postgres(settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
    params: dict[str, Any] = {
        "host": settings["host"],
        "port": settings.get("port", 5432),
        "dbname": settings["database"],
    }
    if settings.get("user"):
        params["user"] = settings["user"]
    if settings.get("sslmode"):
        params["sslmode"] = settings["sslmode"]
    if secrets.get("password"):
        params["password"] = secrets["password"]
    try:
        async with await psycopg.AsyncConnection.connect(**params) as conn:
            await conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise _Unhealthy(f"PostgreSQL: {str(exc).strip()}") from None


def _check_s3_blocking(
    settings: Mapping[str, Any], secrets: Mapping[str, str], timeout: float
) -> None:
    # Imported here: an operator with no s3 Integration never loads boto3 (about 7 MiB).
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint = settings.get("endpoint")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=settings.get("region", "us-east-1"),
        aws_access_key_id=secrets.get("accessKeyId"),
        aws_secret_access_key=secrets.get("secretAccessKey"),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint else "auto"},
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        ),
    )
    try:
        client.head_bucket(Bucket=settings["bucket"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise _Unhealthy(f"S3 HeadBucket {settings['bucket']!r}: {code}") from None
    except BotoCoreError as exc:
        raise _Unhealthy(f"S3 HeadBucket {settings['bucket']!r}: {exc}") from None


async def check(
    type_: str, settings: Mapping[str, Any], secrets: Mapping[str, str], limit_seconds: float
) -> CheckResult:
    """Run the type's check within ``limit_seconds``; never raises for a failed check."""
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)
    try:
        async with asyncio.timeout(limit_seconds):
            if type_ == "http":
                await _check_http(settings, secrets)
            elif type_ == "github":
                await _check_github(settings, secrets)
            elif type_ == "slack":
                await _check_slack(settings, secrets)
            elif type_ == "postgres":
                await _check_postgres(settings, secrets)
            elif type_ == "s3":
                await asyncio.to_thread(_check_s3_blocking, settings, secrets, limit_seconds)
            else:
                raise _Unhealthy(f"type {type_!r} has no health check", "NoCheck")
    except _Unhealthy as exc:
        error, reason = str(exc), exc.reason
    except InternalAddress as exc:
        error, reason = f"refused: {exc}", "InternalAddress"
    except TimeoutError:
        error, reason = f"no answer within {limit_seconds:g} s", "Timeout"
    except (aiohttp.ClientError, OSError) as exc:
        error, reason = f"{type(exc).__name__}: {exc}", "CheckFailed"
    else:
        return CheckResult(True, time.monotonic() - started, None, now)
    return CheckResult(False, time.monotonic() - started, _mask(error, secrets), now, reason)


async def check_integration(
    ctx: OperatorContext, namespace: str, name: str, spec: IntegrationSpec
) -> CheckResult:
    """Read the Integration's credentials, run its check, record it in its current row and
    in the metrics. A missing Secret or key is a failed check with a reason of its own."""
    timeout = float(spec.health_check.timeout_seconds if spec.health_check else 10)
    secrets: Mapping[str, str] = {}
    result: CheckResult | None = None
    if spec.secret_ref is not None:
        try:
            data = await ctx.kube.read_secret(namespace, spec.secret_ref.name)
        except ApiException as exc:
            data, result = (
                None,
                _failed(
                    "SecretUnreadable",
                    f"Secret {spec.secret_ref.name!r} cannot be read: {exc.status} {exc.reason}",
                ),
            )
        if result is None and data is None:
            result = _failed("SecretNotFound", f"Secret {spec.secret_ref.name!r} does not exist")
        elif data is not None:
            secrets, missing = _type_secrets(spec, data)
            if missing:
                result = _failed(
                    "SecretKeyMissing",
                    f"Secret {spec.secret_ref.name!r} has no key {missing!r}",
                )
    if result is None:
        result = await check(spec.type, spec.settings or {}, secrets, timeout)
    async with ctx.db.connection(COMPONENT) as conn:
        await repository.record_health(
            conn,
            namespace,
            name,
            checked_at=result.checked_at,
            healthy=result.healthy,
            latency_seconds=result.latency_seconds,
            error=result.error,
        )
    integration_checked(spec.type, result.healthy, result.latency_seconds)
    level = logging.DEBUG if result.healthy else logging.WARNING
    logger.log(level, "Integration %s/%s health: %s", namespace, name, result.error or "ok")
    return result


def _failed(reason: str, message: str) -> CheckResult:
    return CheckResult(False, 0.0, message, dt.datetime.now(dt.UTC), reason)


def _type_secrets(spec: IntegrationSpec, data: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The type's secret keys read from the Secret's (renamed) keys; the first Secret key
    that is missing, or ''."""
    from plait.integration.catalog import BUILTIN_TYPES

    kind = BUILTIN_TYPES.get(spec.type)
    renamed = (spec.secret_ref.keys if spec.secret_ref else None) or {}
    found: dict[str, str] = {}
    for key in kind.secret_keys if kind else ():
        secret_key = renamed.get(key, key)
        if secret_key not in data:
            return found, secret_key
        found[key] = data[secret_key]
    return found, ""


def status_patch(status: Mapping[str, Any], generation: int, result: CheckResult) -> dict[str, Any]:
    """The status fields a check sets: the ``Healthy`` condition, ``lastCheckedTime`` and
    ``health`` (latency, error)."""
    condition = Condition(
        "Healthy",
        "True" if result.healthy else "Unknown" if result.reason == "NoCheck" else "False",
        result.reason,
        result.error or f"checked in {result.latency_seconds * 1000:.0f} ms",
        generation,
    )
    return {
        "conditions": merge_conditions(status.get("conditions"), [condition]),
        "lastCheckedTime": result.checked_at.isoformat().replace("+00:00", "Z"),
        "health": {
            "latencySeconds": round(result.latency_seconds, 6),
            **({"error": result.error} if result.error else {}),
        },
    }


def _due(status: Mapping[str, Any], interval: float, now: dt.datetime) -> bool:
    last = status.get("lastCheckedTime")
    if not isinstance(last, str):
        return True
    try:
        when = dt.datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return True
    return (now - when).total_seconds() >= interval


def register_health_checks(
    registry: kopf.OperatorRegistry, ctx: OperatorContext, sharing: Sharing | None = None
) -> None:
    """A timer on Integrations with ``spec.healthCheck``: every :data:`HEALTH_TICK_SECONDS`
    it runs the check of each one whose interval has passed since ``lastCheckedTime`` and
    patches the status (one write per check; a timer writes nothing else). With
    ``sharing`` (operator replicas sharing the work), only the replica that owns an
    Integration checks it."""

    async def tick(
        spec: kopf.Spec,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
        **_: Any,
    ) -> None:
        if sharing is not None and not sharing.owns(str(meta["uid"])):
            return
        parsed = IntegrationSpec.model_validate(dict(spec))
        if parsed.health_check is None:
            return
        if not _due(status, parsed.health_check.interval_seconds, dt.datetime.now(dt.UTC)):
            return
        ready = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
        if ready.get("Ready") != "True":
            return  # not stored (refused, or not reconciled yet): nothing to check
        result = await check_integration(ctx, meta["namespace"], meta["name"], parsed)
        generation = int(meta.get("generation") or 0)
        for key, value in status_patch(status, generation, result).items():
            patch.status[key] = value

    kopf.timer(
        API_GROUP,
        API_VERSION,
        "integrations",
        id="integration-health",
        interval=HEALTH_TICK_SECONDS,
        when=lambda spec, **_: bool(spec.get("healthCheck")),
        registry=registry,
    )(tick)
