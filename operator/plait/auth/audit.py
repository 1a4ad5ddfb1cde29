"""The audit trail: every authentication failure and every change to users, roles and
tokens, as a log record of ``plait.auth.audit`` (so it lands in the observability logs
with the rest) and as counters in ``/metrics``. Records name who, what and from where,
never a password or a token."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

__all__ = [
    "AUTHENTICATIONS",
    "CHANGES",
    "DENIALS",
    "THROTTLED",
    "change",
    "denied",
    "failure",
    "success",
]

logger = logging.getLogger("plait.auth.audit")

AUTHENTICATIONS = Counter(
    "plait_auth_authentications_total",
    "Authentication attempts of plait api, by method and outcome (ok or the failure reason).",
    ["method", "outcome"],
)
CHANGES = Counter(
    "plait_auth_changes_total",
    "Changes to users, roles, grants, tokens and sessions, by action.",
    ["action"],
)
DENIALS = Counter(
    "plait_auth_denials_total",
    "Authenticated requests refused (403) for want of a permission, by permission.",
    ["permission"],
)
THROTTLED = Counter(
    "plait_auth_login_throttled_total",
    "Logins refused because of earlier failures (per user or per client address).",
)


def failure(method: str, reason: str, detail: str, *, client: str | None, **who: Any) -> None:
    """An authentication that failed: why, how, from where (never the secret)."""
    AUTHENTICATIONS.labels(method, reason).inc()
    logger.warning(
        "authentication failed (%s): %s",
        method,
        detail,
        extra={
            "audit": "authentication",
            "outcome": reason,
            "method": method,
            "client": client,
            **who,
        },
    )


def success(method: str) -> None:
    AUTHENTICATIONS.labels(method, "ok").inc()


def change(action: str, actor: str, target: str, *, client: str | None, **details: Any) -> None:
    """A change to users, roles, grants, tokens or sessions."""
    CHANGES.labels(action).inc()
    logger.info(
        "%s by %s: %s",
        action,
        actor,
        target,
        extra={"audit": action, "actor": actor, "target": target, "client": client, **details},
    )


def denied(principal: str, permission: str, where: str, *, client: str | None) -> None:
    """A request refused for want of ``permission``."""
    DENIALS.labels(permission).inc()
    logger.warning(
        "%s was refused: lacks %s %s",
        principal,
        permission,
        where,
        extra={
            "audit": "authorization",
            "outcome": "forbidden",
            "actor": principal,
            "permission": permission,
            "client": client,
        },
    )
