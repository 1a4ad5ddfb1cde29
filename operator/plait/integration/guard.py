"""The guard of outgoing HTTP requests made with an Integration (http tasks, health checks):
internal addresses are refused unless the Integration sets ``allowInternal: true``.

Refused: loopback, link-local (cloud metadata at 169.254.169.254 included), unspecified,
multicast and reserved addresses, and ``fd00:ec2::254``. The check runs in the
connector's own resolver, so the address checked is the address connected to (no window
for DNS rebinding); an address written as the URL's host is checked before connecting.
Private ranges are allowed: in-cluster services live there. Callers do not follow redirects.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["InternalAddress", "check_url", "connector", "internal_reason"]


class InternalAddress(Exception):
    """The request would reach an internal address the Integration does not allow."""


def internal_reason(address: str) -> str | None:
    """Why ``address`` may not be called without ``allowInternal``; None when it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, words in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata lives there)"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
    ):
        if test:
            return words
    if ip == ipaddress.ip_address("fd00:ec2::254"):
        return "a cloud metadata address"
    return None


_ADVICE = "the Integration does not allow internal addresses (allowInternal)"


class _GuardedResolver(AbstractResolver):
    """The default resolver, refusing internal addresses."""

    def __init__(self) -> None:
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for result in found:
            why = internal_reason(result["host"])
            if why is not None:
                raise InternalAddress(f"{host} resolves to {result['host']}, {why}; {_ADVICE}")
        return found

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str, allow_internal: bool) -> None:
    """Refuse a URL whose host is an internal address written out (raises InternalAddress);
    a name is checked when it is resolved (:func:`connector`)."""
    if allow_internal:
        return
    host = (urlsplit(url).hostname or "").strip("[]")
    try:
        why = internal_reason(host)
    except ValueError:
        return
    if why is not None:
        raise InternalAddress(f"{host} is {why}; {_ADVICE}")


def connector(allow_internal: bool) -> aiohttp.TCPConnector:
    """A connector whose resolver refuses internal addresses, unless they are allowed."""
    return aiohttp.TCPConnector(
        resolver=aiohttp.DefaultResolver() if allow_internal else _GuardedResolver()
    )
