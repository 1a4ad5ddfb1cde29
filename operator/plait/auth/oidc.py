"""Single sign-on with OpenID Connect: the authorization code flow with PKCE.

authlib's OAuth2 client builds the authorization request (state, nonce, S256 code
challenge) and redeems the code; joserfc checks the ID token's signature against the
provider's keys and its issuer, audience, expiry and nonce. What the flow must remember
between the redirect and the callback travels in a short-lived cookie sealed with the
server key (:func:`seal`), so any API replica can finish a flow another one started.
The calls are synchronous HTTP; callers run them in a thread.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from plait.auth.secrets import SecretKey
from plait.auth.settings import OidcSettings

__all__ = [
    "FLOW_SECONDS",
    "OidcError",
    "OidcIdentity",
    "OidcUnavailable",
    "Provider",
    "seal",
    "unseal",
]

#: How long a person has between leaving for the provider and coming back.
FLOW_SECONDS = 600
_TIMEOUT = 10


class OidcError(ValueError):
    """The provider's answer cannot be trusted or used (a 401)."""


class OidcUnavailable(OSError):
    """The provider cannot be reached (a 503)."""


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    issuer: str
    subject: str
    username: str
    email: str | None
    name: str
    groups: frozenset[str]


def seal(key: SecretKey, data: dict[str, Any]) -> str:
    """``data`` as a cookie value that only this key could have made."""
    payload = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    mac = base64.urlsafe_b64encode(key.digest("oidc-flow:" + payload)).decode().rstrip("=")
    return f"{payload}.{mac}"


def unseal(key: SecretKey, value: str) -> dict[str, Any]:
    """The data of a :func:`seal` value; ValueError when altered, foreign or expired."""
    payload, _, mac = value.partition(".")
    expected = base64.urlsafe_b64encode(key.digest("oidc-flow:" + payload)).decode().rstrip("=")
    if not hmac.compare_digest(mac, expected):
        raise ValueError("the sign-in cookie was not made by this server")
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if data.get("exp", 0) < time.time():
        raise ValueError(f"the sign-in took longer than {FLOW_SECONDS} s; start again")
    return data


class Provider:
    """One OpenID provider: its metadata and keys (read once, keys again on rotation)."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.RLock()

    def _get(self, url: str) -> dict[str, Any]:
        try:
            response = requests.get(url, timeout=_TIMEOUT)
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data
        except (requests.RequestException, ValueError) as exc:
            raise OidcUnavailable(f"the identity provider at {url} did not answer: {exc}") from None

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
                metadata = self._get(url)
                if metadata.get("issuer") != self.settings.issuer:
                    raise OidcError(
                        f"the provider calls itself {metadata.get('issuer')!r}, "
                        f"not {self.settings.issuer!r}"
                    )
                self._metadata = metadata
            return self._metadata

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is None or refresh:
                self._keys = KeySet.import_key_set(self._get(self.metadata()["jwks_uri"]))  # type: ignore[arg-type]
            return self._keys

    def _session(self) -> OAuth2Session:
        return OAuth2Session(
            self.settings.client_id,
            self.settings.client_secret,
            scope=" ".join(self.settings.scopes),
            redirect_uri=self.settings.redirect_uri,
            code_challenge_method="S256",
        )

    def start(self) -> tuple[str, dict[str, Any]]:
        """The provider's authorization URL, and what the callback must check."""
        verifier = secrets.token_urlsafe(48)
        nonce = secrets.token_urlsafe(24)
        url, state = self._session().create_authorization_url(
            self.metadata()["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        flow = {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "exp": time.time() + FLOW_SECONDS,
        }
        return url, flow

    def finish(self, code: str, flow: dict[str, Any]) -> OidcIdentity:
        """Redeem ``code`` (with the PKCE verifier) and check the ID token."""
        metadata = self.metadata()
        session = self._session()
        try:
            token = session.fetch_token(
                metadata["token_endpoint"], code=code, code_verifier=flow["verifier"]
            )
        except OAuth2Error as exc:
            raise OidcError(f"the provider refused the code: {exc.error}") from None
        except requests.RequestException as exc:
            raise OidcUnavailable(f"the provider's token endpoint did not answer: {exc}") from None
        id_token = token.get("id_token")
        if not id_token:
            raise OidcError("the provider sent no ID token (is 'openid' among the scopes?)")
        claims = self._verify(id_token, flow["nonce"])
        userinfo: dict[str, Any] = {}
        if metadata.get("userinfo_endpoint"):
            try:
                answer = session.get(metadata["userinfo_endpoint"], timeout=_TIMEOUT)
                answer.raise_for_status()
                userinfo = answer.json()
            except (requests.RequestException, ValueError) as exc:
                raise OidcUnavailable(f"the provider's userinfo did not answer: {exc}") from None
            if userinfo.get("sub") != claims["sub"]:
                raise OidcError("userinfo is about another subject than the ID token")
        merged = {**userinfo, **claims}
        groups = merged.get(self.settings.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        username = merged.get(self.settings.username_claim) or merged.get("email") or ""
        return OidcIdentity(
            issuer=self.settings.issuer,
            subject=str(claims["sub"]),
            username=str(username).lower(),
            email=merged.get("email"),
            name=str(merged.get("name") or ""),
            groups=frozenset(str(g) for g in groups),
        )

    def _verify(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            try:
                decoded = jwt.decode(id_token, self._key_set())
            except JoseError:  # perhaps a rotated key: read the keys once more
                decoded = jwt.decode(id_token, self._key_set(refresh=True))
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
        return dict(decoded.claims)
