"""Kubernetes ServiceAccount tokens, checked by the API server itself (TokenReview).

A review's answer is reused for a few seconds (keyed by a hash of the token, never the
token), so a busy sender costs the API server one review per token per interval, and a
deleted ServiceAccount or an expired token stops working within that interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from kubernetes import client, config

from plait.auth.settings import KubernetesAuth
from plait.errors import ConfigurationError

__all__ = ["KubernetesIdentity", "TokenReviewer", "looks_like_jwt"]

_MAX_CACHED = 10_000


def looks_like_jwt(presented: str) -> bool:
    """Three base64url parts separated by dots, the first starting as a JSON object does."""
    parts = presented.split(".")
    return len(parts) == 3 and presented.startswith("eyJ") and all(parts)


@dataclass(frozen=True, slots=True)
class KubernetesIdentity:
    username: str
    groups: frozenset[str]


class TokenReviewer:
    """Asks the API server who a token belongs to (None: not a valid token)."""

    def __init__(self, settings: KubernetesAuth) -> None:
        self._settings = settings
        self._api: client.ApiClient | None = None
        self._cache: OrderedDict[bytes, tuple[float, KubernetesIdentity | None]] = OrderedDict()

    def _client(self) -> client.ApiClient:
        if self._api is None:
            try:
                if self._settings.kubeconfig:
                    self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                        config_file=self._settings.kubeconfig
                    )
                else:
                    configuration = client.Configuration()
                    config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=configuration
                    )
                    self._api = client.ApiClient(configuration)
            except config.ConfigException as exc:
                raise ConfigurationError(
                    f"Kubernetes authentication is on but no API server is reachable: {exc}"
                ) from None
        return self._api

    def _review(self, token: str) -> KubernetesIdentity | None:
        spec = client.V1TokenReviewSpec(token=token)
        if self._settings.audiences:
            spec.audiences = list(self._settings.audiences)
        review = client.AuthenticationV1Api(self._client()).create_token_review(
            client.V1TokenReview(spec=spec), _request_timeout=10
        )
        status = review.status
        if status is None or not status.authenticated or status.user is None:
            return None
        if not status.user.username:
            return None
        return KubernetesIdentity(status.user.username, frozenset(status.user.groups or ()))

    async def review(self, token: str) -> KubernetesIdentity | None:
        """The token's identity, from the cache when reviewed within ``cache_seconds``.

        Raises :class:`ApiException` when the API server cannot answer (not cached).
        """
        key = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        identity = await asyncio.to_thread(self._review, token)
        self._cache[key] = (now + self._settings.cache_seconds, identity)
        self._cache.move_to_end(key)
        while len(self._cache) > _MAX_CACHED:
            self._cache.popitem(last=False)
        return identity

    def close(self) -> None:
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None
