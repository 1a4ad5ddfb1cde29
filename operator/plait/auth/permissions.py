"""Who is asking and what they may do: :class:`Principal` and the permission algebra.

Permissions are ``resource:action``; ``resource:*`` holds every action on the resource
and ``admin:*`` holds everything. A principal holds some permissions everywhere (roles of
``users.roles``, mapped cluster-wide roles) and some in named namespaces only (grants); a
token's scope, when set, further limits what its owner's permissions allow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ANY_NAMESPACE", "Principal", "grants"]

#: The namespace source of a route that needs the permission in at least one namespace
#: (self-service routes such as one's own tokens).
ANY_NAMESPACE = "*"
ADMIN = "admin:*"

PrincipalKind = Literal["user", "token-file", "kubernetes", "anonymous"]
Method = Literal["token", "session", "token-file", "kubernetes", "none"]


def grants(held: Iterable[str], needed: str) -> bool:
    """True when the permissions ``held`` include ``needed`` (wildcards included)."""
    resource = needed.split(":", 1)[0]
    return any(permission in (needed, ADMIN, f"{resource}:*") for permission in held)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller and the permissions it holds, where."""

    name: str
    kind: PrincipalKind
    method: Method
    everywhere: frozenset[str] = frozenset()
    by_namespace: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: A token's scope; None when unscoped.
    scopes: frozenset[str] | None = None
    user_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None

    def allows(self, permission: str, namespace: str | None) -> bool:
        """May this principal use ``permission`` in ``namespace`` (None: cluster-wide;
        :data:`ANY_NAMESPACE`: in at least one namespace)?"""
        if self.scopes is not None and not grants(self.scopes, permission):
            return False
        if grants(self.everywhere, permission):
            return True
        if namespace == ANY_NAMESPACE:
            return any(grants(held, permission) for held in self.by_namespace.values())
        if namespace is None:
            return False
        return grants(self.by_namespace.get(namespace, frozenset()), permission)

    def all_permissions(self) -> frozenset[str]:
        """Everything held anywhere (what a new token's scope must stay within)."""
        found = set(self.everywhere)
        for held in self.by_namespace.values():
            found |= held
        return frozenset(found)
