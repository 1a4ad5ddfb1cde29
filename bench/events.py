"""Event ingestion: events/s acknowledged durably by ``plait api`` against the raw ceiling.

Everything runs against one private PostgreSQL with durable commits (fsync, synchronous
commit and full-page writes switched on for this run), each measurement on a fresh
migrated database:

- raw ceiling: one process inserting the same rows (sequence upsert, ``event_instances``,
  ``event_queue_state``) with the same SQL shape, committing after every event (the single
  ceiling) or after every batch (the batch ceiling);
- Plait single: N concurrent HTTP clients POSTing one structured event each request;
- Plait batch: M concurrent clients POSTing ``application/cloudevents-batch+json`` batches.

The API is a real ``plait api`` process; a response is counted only when it is 202 (the
transaction committed), and the stored rows are counted afterwards to prove it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import REPO, say
from plait.kernel.components import COMPONENTS
from plait.kernel.migrations import migrate_database
from plait.testing import PostgresServer
from plait.testing._process import free_port, stop_process, wait_until

__all__ = ["run"]

TOKEN = "bench-" + uuid.uuid4().hex
NAMESPACE = "bench"
KEYS_PER_CLIENT = 10
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def make_events(run: str, clients: int, per_client: int) -> list[list[dict[str, Any]]]:
    """Events per client; each client has its own partition keys (as producers do)."""
    return [
        [
            {
                "specversion": "1.0",
                "id": f"{run}-{c}-{i}",
                "source": f"/bench/client-{c}",
                "type": "bench.order.created",
                "partitionkey": f"c{c}-k{i % KEYS_PER_CLIENT}",
                "time": "2024-05-01T12:00:00Z",
                "datacontenttype": "application/json",
                "data": {"order": i, "amount": 12.5, "currency": "EUR", "lines": [1, 2, 3]},
            }
            for i in range(per_client)
        ]
        for c in range(clients)
    ]


# -- raw ceiling ---------------------------------------------------------------------------
def raw_insert(dsn: str, events: list[dict[str, Any]], per_transaction: int) -> float:
    """Seconds one connection takes to store ``events``, committing every N events."""
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        for start in range(0, len(events), per_transaction):
            with conn.transaction():
                for e in events[start : start + per_transaction]:
                    seq = conn.execute(
                        "INSERT INTO event_processing_service.event_sequences "
                        "(namespace, event_type, partition_key, last_position) "
                        "VALUES (%s, %s, %s, 1) ON CONFLICT (namespace, event_type, "
                        "partition_key) DO UPDATE SET last_position = "
                        "event_sequences.last_position + 1, updated_at = now() "
                        "RETURNING id, last_position",
                        (NAMESPACE, e["type"], e["partitionkey"]),
                    ).fetchone()
                    assert seq is not None
                    row = conn.execute(
                        "INSERT INTO event_processing_service.event_instances (namespace, "
                        "source, event_id, type, subject, time, data_content_type, data_schema, "
                        "data, data_base64, extensions, partition_key, sequence_id, "
                        "sequence_position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                        "%s, %s, %s, %s) ON CONFLICT (namespace, source, event_id) "
                        "DO NOTHING RETURNING id",
                        (NAMESPACE, e["source"], e["id"], e["type"], None, e["time"],
                         e["datacontenttype"], None, Jsonb(e["data"]), None, Jsonb({}),
                         e["partitionkey"], seq[0], seq[1]),
                    ).fetchone()  # fmt: skip
                    assert row is not None
                    conn.execute(
                        "INSERT INTO event_processing_service.event_queue_state "
                        "(event_instance_id, max_attempts, sequence_id, sequence_position) "
                        "VALUES (%s, %s, %s, %s)",
                        (row[0], 5, seq[0], seq[1]),
                    )
        return time.perf_counter() - started


# -- through the API -----------------------------------------------------------------------
class Api:
    """A ``plait api`` child process on a database."""

    def __init__(self, dsn: str, log: Any) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_API_")}
        env.update(
            PLAIT_DATABASE_URL=dsn,
            PLAIT_API_TOKEN=TOKEN,
            PLAIT_DATABASE_POOL_MAX="20",
            PLAIT_LOG_LEVEL="WARNING",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port",
             str(self.port)],
            env=env, stdout=log, stderr=log, cwd=REPO,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/v1/namespaces/{NAMESPACE}/events"

        def ready() -> bool:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(r.status == 200)

        wait_until(ready, timeout=60, what="plait api")

    def stop(self) -> None:
        stop_process(self.proc)


async def _drive(
    url: str, per_client: list[list[dict[str, Any]]], batch_size: int
) -> tuple[float, list[float]]:
    """Wall seconds for every client to send its events; latencies (s) of each request."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if batch_size > 1:
        headers["Content-Type"] = "application/cloudevents-batch+json"
    else:
        headers["Content-Type"] = "application/cloudevents+json"
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=len(per_client) + 2)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client(events: list[dict[str, Any]]) -> None:
            for start in range(0, len(events), batch_size):
                chunk = events[start : start + batch_size]
                body = json.dumps(chunk if batch_size > 1 else chunk[0]).encode()
                sent = time.perf_counter()
                async with session.post(url, data=body) as resp:
                    text = await resp.read()
                    if resp.status != 202:
                        raise RuntimeError(f"HTTP {resp.status}: {text[:300]!r}")
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(client(events) for events in per_client))
        return time.perf_counter() - started, latencies


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM event_processing_service.event_instances i JOIN "
            "event_processing_service.event_queue_state q ON q.event_instance_id = i.id"
        ).fetchone()
        assert row is not None
        return int(row[0])


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def run(events: int = 20000, *, single_clients: int = 16, batch_clients: int = 4,
        batch_size: int = 100) -> dict[str, Any]:  # fmt: skip
    """Measure; ``events`` is the batched run's size, the single run sends a fifth of it."""
    results: dict[str, Any] = {
        "durability": ", ".join(f"{k}={v}" for k, v in DURABLE.items()),
        "batch_size": batch_size,
    }
    logs = REPO / "bench" / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    n_single = max(single_clients, events // 5)
    with PostgresServer() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            for name, value in DURABLE.items():
                conn.execute(f"ALTER SYSTEM SET {name} = {value}")
            conn.execute("SELECT pg_reload_conf()")
        counter = iter(range(100))

        def database() -> str:
            dsn = pg.create_database(f"events_{next(counter)}")
            migrate_database(dsn, COMPONENTS, owner_role=None)
            return dsn

        for mode, clients, total, size in (
            ("single", single_clients, n_single, 1),
            ("batch", batch_clients, events, batch_size),
        ):
            per_client = make_events(mode, clients, total // clients)
            flat = [e for client_events in per_client for e in client_events]
            say(f"events/{mode}: raw ceiling, {len(flat)} events, {size} per transaction")
            raw_dsn = database()
            raw_s = raw_insert(raw_dsn, flat, size)
            assert _count(raw_dsn) == len(flat)
            say(f"events/{mode}: through plait api, {clients} clients, {size} per request")
            api_dsn = database()
            with (logs / f"events-{mode}-api.log").open("w") as log:
                api = Api(api_dsn, log)
                try:
                    wall, latencies = asyncio.run(_drive(api.url, per_client, size))
                finally:
                    api.stop()
            stored = _count(api_dsn)
            assert stored == len(flat), f"acknowledged {len(flat)} but {stored} stored"
            raw_rate = len(flat) / raw_s
            api_rate = len(flat) / wall
            results[mode] = {
                "events": len(flat),
                "clients": clients,
                "events_per_request": size,
                "plait_events_per_s": round(api_rate),
                "raw_events_per_s": round(raw_rate),
                "ratio": round(api_rate / raw_rate, 2),
                "plait_wall_s": round(wall, 2),
                "raw_wall_s": round(raw_s, 2),
                "request_p50_ms": _ms(latencies, 0.5),
                "request_p99_ms": _ms(latencies, 0.99),
                "request_mean_ms": round(statistics.fmean(latencies) * 1000, 2),
            }
            say(f"events/{mode}: {results[mode]}")
    return results
