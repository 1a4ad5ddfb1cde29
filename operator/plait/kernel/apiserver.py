"""An asyncio HTTP connection to the Kubernetes API server, with the official client's credentials.

The official client is synchronous (a thread per call): it cannot hold watch streams open
on the event loop. Plait's own watches (``plait.kernel.watching``) read them through this
instead; the other calls stay with the official client (``plait.kernel.kube``).

The credentials are the client's default configuration (what Kopf's login loaded:
in-cluster service account, or KUBECONFIG), and the ``Authorization`` header is read from it
at every request, so a rotated service-account token (the client's refresh hook) is used.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes import client

__all__ = ["ApiServer"]

#: aiohttp's read buffer; the longest line it reads is twice this.
_READ_BUFFER_BYTES = 2**21


class ApiServer:
    """A lazily opened connection pool to the API server of the client's configuration;
    closed by ``close()``, or at the end of ``async with``."""

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
                # One watch event is one line holding a whole object (up to the API
                # server's ~1.5 MiB); aiohttp refuses a line over twice this.
                read_bufsize=_READ_BUFFER_BYTES,
            )
            self._configuration = configuration
        return self._session, self._configuration

    async def __aenter__(self) -> ApiServer:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def _headers(self, configuration: client.Configuration) -> dict[str, str]:
        headers = {"Accept": "application/json"}
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
            headers=self._headers(configuration),
            timeout=timeout or self._timeout,
            proxy=_proxy(configuration),
            proxy_headers=configuration.proxy_headers,
            server_hostname=configuration.tls_server_name or None,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _proxy(configuration: client.Configuration) -> str | None:
    """The kubeconfig's proxy-url, unless the API server's host is in its no-proxy list."""
    if not configuration.proxy:
        return None
    host = urlsplit(configuration.host).hostname or ""
    for entry in (configuration.no_proxy or "").split(","):
        entry = entry.strip().lstrip(".")
        if entry and (host == entry or host.endswith("." + entry) or entry == "*"):
            return None
    return str(configuration.proxy)


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    context = ssl.create_default_context(
        cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data or None
    )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl or configuration.assert_hostname is False:
        context.check_hostname = False
    if not configuration.verify_ssl:
        context.verify_mode = ssl.CERT_NONE
    return context
