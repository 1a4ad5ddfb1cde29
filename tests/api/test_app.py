"""``plait api`` as a process: health, readiness that follows the database, metrics, and
the timeouts that cut slow or idle clients off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import psycopg
import pytest

from plait.testing._process import free_port
from tests.api.conftest import PROCESS_TOKEN, get


def test_ready_with_a_database_and_serving_metrics(
    start_api: Callable[..., int], migrated_database: str
) -> None:
    port = start_api(migrated_database)
    assert get(port, "/readyz") == (200, "ok\n")
    code, body = get(port, "/metrics")
    assert code == 200
    assert "process_resident_memory_bytes" in body


def test_not_ready_while_the_database_is_unreachable(start_api: Callable[..., int]) -> None:
    port = start_api(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none")
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz") == (503, "database unreachable\n")


def test_refuses_to_start_without_a_token(migrated_database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLAIT_API_", "PLAIT_AUTH_"))}
    env["PLAIT_DATABASE_URL"] = migrated_database
    run = subprocess.run(
        [sys.executable, "-m", "plait", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "no way to authenticate anyone" in run.stderr
    assert "PLAIT_AUTH_TOKEN_KEY_FILE" in run.stderr
    assert "--allow-unauthenticated" in run.stderr


def _read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection; and how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and sends nothing
        b"POST /v1/namespaces/shop/events HTTP/1.1\r\nHost: plait\r\n",  # half a request head
    ],
)
def test_idle_and_slow_header_connections_are_closed(
    start_api: Callable[..., int], migrated_database: str, sent: bytes
) -> None:
    port = start_api(migrated_database, "--keepalive-timeout", "1")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        received, took = _read_until_closed(sock, within=10)
    assert received == b""
    assert took < 5


def test_a_body_slower_than_the_body_timeout_gets_408(
    start_api: Callable[..., int], migrated_database: str
) -> None:
    port = start_api(migrated_database, "--body-timeout", "1")
    body = json.dumps({"specversion": "1.0", "id": "slow", "source": "/s", "type": "t"}).encode()
    head = (
        "POST /v1/namespaces/shop/events HTTP/1.1\r\nHost: plait\r\n"
        f"Authorization: Bearer {PROCESS_TOKEN}\r\n"
        "Content-Type: application/cloudevents+json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body[:10])  # and the rest never comes
        received, took = _read_until_closed(sock, within=10)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b"/problems/request-timeout" in received
    assert b"--body-timeout" in received
    assert took < 5
    with psycopg.connect(migrated_database) as conn:
        row = conn.execute("SELECT count(*) FROM event_processing_service.event_instances")
        assert row.fetchone() == (0,)
