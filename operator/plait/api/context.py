"""What every route of ``plait api`` shares: the database pools, the limits in force,
reading a body within them, and validating a request with a model."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from plait.api.auth import TokenStore
from plait.api.problems import Problem
from plait.auth.settings import AuthSettings
from plait.kernel.database import Database

__all__ = [
    "CONFIG",
    "DATABASE",
    "NAMESPACE_MAX_LENGTH",
    "NAMESPACE_PATTERN",
    "ApiConfig",
    "namespace_of",
    "read_capped",
    "validated",
]

NAMESPACE_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_MAX_LENGTH = 63
_DNS_LABEL = re.compile(NAMESPACE_PATTERN)
M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Settings of the API process (flags and ``PLAIT_API_*`` variables of ``plait api``)."""

    tokens: TokenStore = field(default_factory=TokenStore)
    # Without tokens every /v1 request is refused, unless this explicitly opens the API.
    allow_unauthenticated: bool = False
    # Users, tokens, sessions and Kubernetes identities (plait.auth).
    auth: AuthSettings = field(default_factory=AuthSettings)
    max_event_bytes: int = 256 * 1024
    max_batch_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 1000
    # Dispatch attempts of a stored event before it is dead-lettered.
    max_attempts: int = 5
    # Seconds a client has to send a whole request body (408 after that).
    body_timeout: float = 60.0
    # Seconds an idle connection (or one still sending its request headers) stays open.
    keepalive_timeout: float = 75.0


DATABASE = web.AppKey("database", Database)
CONFIG = web.AppKey("config", ApiConfig)


def namespace_of(request: web.Request) -> str:
    """The ``{namespace}`` of the path, checked as Kubernetes checks namespace names."""
    namespace = request.match_info["namespace"]
    if len(namespace) > NAMESPACE_MAX_LENGTH or not _DNS_LABEL.match(namespace):
        detail = (
            f"{namespace[:80]!r} is not a namespace name: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {NAMESPACE_MAX_LENGTH} "
            "characters"
        )
        raise Problem(
            400,
            "invalid-namespace",
            "Invalid namespace",
            detail,
            errors=[{"path": "namespace", "reason": detail}],
        )
    return namespace


async def read_capped(request: web.Request, limit: int, what: str, option: str) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes, with 408
    when it takes longer than the body timeout, and with 400 when it cannot be decoded
    (a ``Content-Encoding`` it does not match, broken chunked encoding)."""

    def too_large(size: str) -> Problem:
        return Problem(
            413,
            "payload-too-large",
            "Payload too large",
            f"the {what} is {size} bytes; the limit is {limit} bytes ({option})",
        )

    if request.content_length is not None and request.content_length > limit:
        raise too_large(str(request.content_length))
    timeout = request.app[CONFIG].body_timeout
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise too_large(f"more than {limit}")
    except TimeoutError:
        raise Problem(
            408,
            "request-timeout",
            "Request timeout",
            f"the {what} did not arrive within {timeout:g} s (--body-timeout)",
        ) from None
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
        message = cause.message if isinstance(cause, HttpProcessingError) else str(cause)
        encoding = request.headers.get("Content-Encoding")
        how = f"Content-Encoding: {encoding[:40]}" if encoding else "its transfer encoding"
        raise Problem(
            400,
            "unreadable-body",
            "Unreadable body",
            f"the body could not be decoded as {how} says: {message}",
            errors=[{"path": "", "reason": f"not valid {how}"}],
        ) from None
    return bytes(body)


def _reason(error: Any) -> str:
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return str(error["msg"])


def validated(model: type[M], data: Any, *, pointer: bool = True) -> M:
    """``data`` as ``model``, or a 400 listing every problem: at a JSON pointer into the body
    (``pointer``), else at the name of the query parameter."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False):
            if error["type"] == "none_required":
                continue  # the "or absent" branch of an optional field: not what was meant
            loc = [str(part) for part in error["loc"]]
            if error["type"] == "extra_forbidden":
                expected = " or ".join(
                    f.validation_alias if isinstance(f.validation_alias, str) else name
                    for name, f in model.model_fields.items()
                )
                reason = f"unknown field {loc[-1]!r}: expected {expected}"
            else:
                reason = _reason(error)
            if pointer:
                path = "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in loc)
            else:  # a query parameter (the rest of loc names a branch of its type)
                path = loc[0]
            errors.append({"path": path, "reason": reason})
        detail = "; ".join(f"{e['path'] or '/'}: {e['reason']}" for e in errors)
        raise Problem(400, "invalid-request", "Invalid request", detail, errors=errors) from None
