"""``plait api`` as a process: health, readiness that follows the database, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from plait.testing._process import free_port, stop_process, wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def start_api() -> Iterator[Callable[[str], int]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(dsn: str) -> int:
        port = free_port()
        env = {
            **os.environ,
            "PLAIT_DATABASE_URL": dsn,
            "PLAIT_API_PORT": str(port),
            "PLAIT_API_TOKEN": "t0ken",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        wait_until(lambda: get(port, "/healthz")[0] == 200, timeout=30, what="plait api")
        return port

    yield start
    for proc in procs:
        stop_process(proc)
        assert proc.returncode == 0, "SIGTERM must stop plait api cleanly"


def test_ready_with_a_database_and_serving_metrics(
    start_api: Callable[[str], int], migrated_database: str
) -> None:
    port = start_api(migrated_database)
    assert get(port, "/readyz") == (200, "ok\n")
    code, body = get(port, "/metrics")
    assert code == 200
    assert "process_resident_memory_bytes" in body


def test_not_ready_while_the_database_is_unreachable(start_api: Callable[[str], int]) -> None:
    port = start_api(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none")
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz") == (503, "database unreachable\n")


def test_refuses_to_start_without_a_token(migrated_database: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_API_")}
    env["PLAIT_DATABASE_URL"] = migrated_database
    run = subprocess.run(
        [sys.executable, "-m", "plait", "api", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "no bearer token to accept" in run.stderr
    assert "--allow-unauthenticated" in run.stderr
