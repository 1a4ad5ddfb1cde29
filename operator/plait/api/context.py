"""What every route of ``plait api`` shares: the database pools and the limits in force."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from plait.api.auth import TokenStore
from plait.api.problems import Problem
from plait.kernel.database import Database

__all__ = ["CONFIG", "DATABASE", "ApiConfig", "namespace_of"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Settings of the API process (flags and ``PLAIT_API_*`` variables of ``plait api``)."""

    tokens: TokenStore = field(default_factory=TokenStore)
    # Without tokens every /v1 request is refused, unless this explicitly opens the API.
    allow_unauthenticated: bool = False
    max_event_bytes: int = 256 * 1024
    max_batch_bytes: int = 4 * 1024 * 1024
    max_batch_events: int = 1000
    # Dispatch attempts of a stored event before it is dead-lettered.
    max_attempts: int = 5


DATABASE = web.AppKey("database", Database)
CONFIG = web.AppKey("config", ApiConfig)


def namespace_of(request: web.Request) -> str:
    """The ``{namespace}`` of the path, checked as Kubernetes checks namespace names."""
    namespace = request.match_info["namespace"]
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise Problem(
            400,
            "invalid-namespace",
            "Invalid namespace",
            f"{namespace[:80]!r} is not a namespace name: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters",
        )
    return namespace
