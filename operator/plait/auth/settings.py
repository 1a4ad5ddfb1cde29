"""How the API authenticates: the server key, session lifetimes, the login slowdown, and
which roles the shared token file, Kubernetes identities and OIDC groups map to."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from plait.auth.secrets import SecretKey
from plait.errors import ConfigurationError

__all__ = ["AuthSettings", "KubernetesAuth", "OidcSettings", "RoleMapping", "parse_mappings"]

_NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class RoleMapping(BaseModel):
    """One rule: an identity (a username, or a member of a group) gets ``role``, everywhere
    or only in ``namespaces``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    user: str | None = Field(default=None, min_length=1)
    group: str | None = Field(default=None, min_length=1)
    namespaces: tuple[str, ...] = Field(default=(), description="Empty: every namespace.")

    @pydantic.model_validator(mode="after")
    def _one_subject(self) -> RoleMapping:
        if (self.user is None) == (self.group is None):
            raise ValueError("a mapping names exactly one of user and group")
        for namespace in self.namespaces:
            if not re.fullmatch(_NAMESPACE, namespace) or len(namespace) > 63:
                raise ValueError(f"{namespace!r} is not a namespace name")
        return self

    def matches(self, username: str, groups: frozenset[str]) -> bool:
        return self.user == username or (self.group is not None and self.group in groups)


def parse_mappings(text: str, what: str) -> tuple[RoleMapping, ...]:
    """A JSON list of mappings (``[{"group": "...", "role": "...", "namespaces": [...]}]``)."""
    if not text.strip():
        return ()
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError("expected a JSON list of mappings")
        return tuple(RoleMapping.model_validate(item) for item in items)
    except (ValueError, pydantic.ValidationError) as exc:
        raise ConfigurationError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class KubernetesAuth:
    """Kubernetes ServiceAccount tokens, checked with TokenReview."""

    mappings: tuple[RoleMapping, ...] = ()
    #: Audiences the token must be valid for (empty: the API server's own).
    audiences: tuple[str, ...] = ()
    #: Seconds a review's answer (yes or no) is reused for the same token.
    cache_seconds: float = 10.0
    #: A kubeconfig to reach the API server with; None: the pod's in-cluster credentials.
    kubeconfig: str | None = None


@dataclass(frozen=True, slots=True, repr=False)
class OidcSettings:
    """Single sign-on with an OpenID Connect provider (authorization code flow with PKCE)."""

    #: The provider's issuer URL; its /.well-known/openid-configuration is read once.
    issuer: str
    client_id: str
    client_secret: str
    #: Where the provider sends people back: this API's /v1/auth/oidc/callback.
    redirect_uri: str
    mappings: tuple[RoleMapping, ...] = ()
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    #: The claim (ID token or userinfo) listing the person's groups.
    groups_claim: str = "groups"
    #: The claim that becomes the Plait username (lower-cased).
    username_claim: str = "preferred_username"

    def __repr__(self) -> str:
        return f"OidcSettings(issuer={self.issuer!r}, client_id={self.client_id!r})"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Everything the API needs to authenticate and authorise (see docs/auth.md)."""

    key: SecretKey | None = None
    #: Roles held everywhere by a caller presenting a token of the shared token file.
    token_file_roles: tuple[str, ...] = ("admin",)
    session_idle_seconds: float = 3600.0
    session_absolute_seconds: float = 12 * 3600.0
    #: The session cookie's Secure attribute (off only for plain-HTTP local testing).
    cookie_secure: bool = True
    #: Failed logins (per user, per client address) answered at full speed before the
    #: slowdown starts; then the wait doubles from ``throttle_base_seconds`` per failure.
    throttle_free_failures: int = 3
    throttle_base_seconds: float = 1.0
    throttle_max_seconds: float = 300.0
    kubernetes: KubernetesAuth | None = None
    oidc: OidcSettings | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        """From ``PLAIT_AUTH_*`` variables (docs/auth.md lists them)."""
        env = dict(os.environ) if environ is None else dict(environ)
        kubernetes = None
        if env.get("PLAIT_AUTH_KUBERNETES", "").lower() in ("1", "true", "yes"):
            kubernetes = KubernetesAuth(
                mappings=parse_mappings(
                    env.get("PLAIT_AUTH_KUBERNETES_ROLE_MAPPINGS", ""),
                    "PLAIT_AUTH_KUBERNETES_ROLE_MAPPINGS",
                ),
                audiences=tuple(
                    a for a in env.get("PLAIT_AUTH_KUBERNETES_AUDIENCES", "").split(",") if a
                ),
                cache_seconds=_number(env, "PLAIT_AUTH_KUBERNETES_CACHE_SECONDS", 10.0),
                kubeconfig=env.get("PLAIT_AUTH_KUBERNETES_KUBECONFIG") or None,
            )
        oidc = None
        if env.get("PLAIT_AUTH_OIDC_ISSUER"):
            oidc = OidcSettings(
                issuer=env["PLAIT_AUTH_OIDC_ISSUER"],
                client_id=_required(env, "PLAIT_AUTH_OIDC_CLIENT_ID"),
                client_secret=_secret(env, "PLAIT_AUTH_OIDC_CLIENT_SECRET"),
                redirect_uri=_required(env, "PLAIT_AUTH_OIDC_REDIRECT_URI"),
                mappings=parse_mappings(
                    env.get("PLAIT_AUTH_OIDC_ROLE_MAPPINGS", ""), "PLAIT_AUTH_OIDC_ROLE_MAPPINGS"
                ),
                scopes=tuple(env.get("PLAIT_AUTH_OIDC_SCOPES", "openid profile email").split()),
                groups_claim=env.get("PLAIT_AUTH_OIDC_GROUPS_CLAIM") or "groups",
                username_claim=env.get("PLAIT_AUTH_OIDC_USERNAME_CLAIM") or "preferred_username",
            )
        roles = env.get("PLAIT_AUTH_TOKEN_FILE_ROLES", "admin")
        return cls(
            key=SecretKey.from_environment(env),
            token_file_roles=tuple(r.strip() for r in roles.split(",") if r.strip()),
            session_idle_seconds=_number(env, "PLAIT_AUTH_SESSION_IDLE_SECONDS", 3600.0),
            session_absolute_seconds=_number(env, "PLAIT_AUTH_SESSION_MAX_SECONDS", 43200.0),
            cookie_secure=env.get("PLAIT_AUTH_COOKIE_SECURE", "true").lower()
            not in ("0", "false", "no"),
            kubernetes=kubernetes,
            oidc=oidc,
        )


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigurationError(f"{name} is required with PLAIT_AUTH_OIDC_ISSUER")
    return value


def _secret(env: Mapping[str, str], name: str) -> str:
    """``<name>_FILE`` (a mounted Secret) or ``<name>``."""
    path = env.get(f"{name}_FILE", "")
    if path:
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {name}_FILE {path}: {exc.strerror}") from None
    return _required(env, name)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "")
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name}: {value!r} is not a number") from None
    if number <= 0:
        raise ConfigurationError(f"{name}: must be greater than 0, got {value}")
    return number
