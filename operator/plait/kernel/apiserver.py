"""An asyncio HTTP client of the Kubernetes API server, with the official client's credentials.

The official client is synchronous: each call takes a thread of a pool, and checks its
arguments with pydantic on the way in. That is fine for Plait's occasional calls, and
costly for the few made for every task (the Job's create, the run's status writes) and for
watch streams. Those go through this client instead: one aiohttp connection pool per
process, JSON in and out.

The credentials are the client's default configuration (what Kopf's login loaded:
in-cluster service account, or KUBECONFIG), and the ``Authorization`` header is read from it
at every request, so a rotated service-account token (the client's refresh hook) is used.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = ["ApiServer"]


class ApiServer:
    """A lazily opened connection pool to the API server of the client's configuration."""

    def __init__(self, *, connections: int = 32, timeout_seconds: float = 30) -> None:
        self._connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._configuration: client.Configuration | None = None

    def _open(self) -> tuple[aiohttp.ClientSession, client.Configuration]:
        if self._session is None or self._configuration is None:
            configuration = client.Configuration.get_default_copy()
            auth = (
                aiohttp.BasicAuth(configuration.username, configuration.password)
                if configuration.username and configuration.password
                else None
            )
            self._session = aiohttp.ClientSession(
                auth=auth,
                connector=aiohttp.TCPConnector(
                    ssl=_ssl_context(configuration), limit=self._connections
                ),
                timeout=self._timeout,
                json_serialize=json.dumps,
            )
            self._configuration = configuration
        return self._session, self._configuration

    def _headers(
        self, configuration: client.Configuration, content_type: str | None
    ) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        # The client's own reading of its credentials (a bearer token, refreshed by its hook).
        settings: Mapping[str, Mapping[str, Any]] = configuration.auth_settings()  # type: ignore[assignment]
        for setting in settings.values():
            if setting.get("in") == "header" and setting.get("value"):
                headers[str(setting["key"]).title()] = str(setting["value"])
        return headers

    def get(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> Any:
        """A GET whose response is read by the caller (``async with``): a list, a watch."""
        session, configuration = self._open()
        return session.get(
            configuration.host.rstrip("/") + path,
            params=params,
            headers=self._headers(configuration, None),
            timeout=timeout or self._timeout,
        )

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """One request with a JSON body; the answer's JSON. An error status raises the
        official client's :class:`ApiException` (with ``status`` and ``body``), so callers
        handle both clients' errors alike."""
        session, configuration = self._open()
        async with session.request(
            method,
            configuration.host.rstrip("/") + path,
            data=None if body is None else json.dumps(body, default=str),
            headers=self._headers(configuration, None if body is None else content_type),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                error = ApiException(status=response.status, reason=response.reason)
                error.body = text
                raise error
            answer: dict[str, Any] = json.loads(text) if text else {}
            return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
