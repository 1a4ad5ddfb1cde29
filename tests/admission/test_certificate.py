"""A renewed certificate (cert-manager rotates the mounted Secret) is served without a restart."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from plait.admission import server
from plait.kernel.certificates import write_self_signed_certificate


async def _served_name(port: int) -> str:
    """The common name of the certificate a TLS handshake on ``port`` presents."""
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.rfc4514_string())


async def test_a_rotated_certificate_is_served_by_the_running_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "CERT_CHECK_SECONDS", 0.1)
    crt, key = write_self_signed_certificate(tmp_path, ["first.example"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(crt), str(key))
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    reloader = asyncio.create_task(server._reload_certificate(tls, crt, key, stop))
    try:
        assert await _served_name(port) == "CN=first.example"
        rotated = tmp_path / "rotated"
        write_self_signed_certificate(rotated, ["second.example"])
        for name in ("tls.crt", "tls.key"):
            os.replace(rotated / name, tmp_path / name)
        os.utime(crt, (1, 1))  # a new mtime even within the clock's resolution
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await _served_name(port) == "CN=second.example":
                break
        assert await _served_name(port) == "CN=second.example"
    finally:
        stop.set()
        await reloader
        listener.close()
        await listener.wait_closed()
