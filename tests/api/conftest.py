"""Shared pieces of the API tests: the in-process application on a migrated database."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from plait.api import build_app
from plait.api.auth import TokenStore
from plait.api.context import ApiConfig
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.kernel.database import Database
from plait.testing._process import free_port, stop_process, wait_until

TOKEN = "s3cret-token"
PROCESS_TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = "/v1/namespaces/shop/events"
STRUCTURED = {"Content-Type": "application/cloudevents+json", **AUTH}
BATCH = {"Content-Type": "application/cloudevents-batch+json", **AUTH}


def ce(id: str, **kw: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": id, "source": "/shop", "type": "order.created", **kw}


class Api:
    def __init__(self, client: TestClient, dsn: str) -> None:
        self.client = client
        self.dsn = dsn

    async def snapshot(self) -> tuple[Any, ...]:
        """Everything ingestion may write: a refused request must leave it equal."""
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            row = await (
                await conn.execute(
                    "SELECT (SELECT count(*) FROM event_processing_service.event_instances),"
                    " (SELECT count(*) FROM event_processing_service.event_queue_state),"
                    " (SELECT coalesce(sum(last_position), 0) "
                    "  FROM event_processing_service.event_sequences)"
                )
            ).fetchone()
            assert row is not None
            return tuple(row)

    async def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            return await (await conn.execute(query, args)).fetchall()


@contextlib.asynccontextmanager
async def serve_in_process(
    migrated_database: str, component_dsns: dict[str, str], config: ApiConfig
) -> AsyncIterator[Api]:
    """The application in this process, connected as the event_processing and auth roles."""
    settings = Settings(database_url=component_dsns["event_processing"], database_pool_min=1)
    database = await Database.open(
        settings,
        [component_by_name("event_processing"), component_by_name("auth")],
        environ={"PLAIT_DATABASE_URL_AUTH": component_dsns["auth"]},
    )
    try:
        async with TestClient(TestServer(build_app(database, config))) as client:
            yield Api(client, migrated_database)
    finally:
        await database.close()


@pytest.fixture
async def api(migrated_database: str, component_dsns: dict[str, str]) -> AsyncIterator[Api]:
    """Small limits, so that the tests can cross them cheaply; one dispatch attempt."""
    config = ApiConfig(
        tokens=TokenStore([TOKEN]),
        max_event_bytes=2048,
        max_batch_bytes=16384,
        max_batch_events=5,
        max_attempts=1,
    )
    async with serve_in_process(migrated_database, component_dsns, config) as api:
        yield api


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def start_api() -> Iterator[Callable[..., int]]:
    """``start_api(dsn, *flags)``: a real ``plait api`` process (token ``PROCESS_TOKEN``);
    its port. Each is stopped with SIGTERM at the end and must exit cleanly."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(dsn: str, *flags: str) -> int:
        port = free_port()
        env = {
            **os.environ,
            "PLAIT_DATABASE_URL": dsn,
            "PLAIT_API_PORT": str(port),
            "PLAIT_API_TOKEN": PROCESS_TOKEN,
            # Plait's own tokens and sessions work too (the fuzzer reaches /v1/auth).
            "PLAIT_AUTH_TOKEN_KEY": "k" * 32 + PROCESS_TOKEN,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", *flags],
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
