"""Event ingestion: events/s acknowledged durably by ``plait api`` against the raw ceiling.

Everything runs against one private PostgreSQL with durable commits (fsync, synchronous
commit and full-page writes switched on for this run), each measurement on a fresh
migrated database:

- raw ceiling: one process storing the same rows (``event_sequences``, ``event_instances``,
  ``event_queue_state``) the fastest ways found, committing after every event (the single
  ceiling) or after every batch (the batch ceiling): one statement per transaction that
  advances each sequence once and inserts all events and queue rows, and a multi-row
  sequence upsert followed by one COPY per table; the faster of the two is the ceiling;
- Plait single: N concurrent HTTP clients POSTing one structured event each request;
- Plait batch: M concurrent clients POSTing ``application/cloudevents-batch+json`` batches.

Each Plait run is made twice: as deployed (a tracing span per event, recorded in
PostgreSQL) and with ``PLAIT_OBSERVABILITY_ENABLED=false``, to show what tracing costs; the
API process's CPU per event is reported for both.

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
from collections import Counter
from typing import Any

import aiohttp
import psycopg
from psycopg.types.json import Jsonb

from bench.harness import REPO, MachineCpu, process_cpu_seconds, say
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
# The fastest durable ways found to store the rows Plait stores, with no API, no duplicate
# check and no validation: the benchmark knows every event is new. Both keep the tables,
# indexes and constraints as they are and commit every N events; the faster is the ceiling.

_RAW_STATEMENT = """
WITH input AS (
    SELECT * FROM unnest(%(source)s::text[], %(event_id)s::text[], %(type)s::text[],
        %(time)s::timestamptz[], %(content_type)s::text[], %(data)s::jsonb[], %(key)s::text[])
        WITH ORDINALITY AS i(source, event_id, type, time, content_type, data, key, ord)
), sequences AS (
    INSERT INTO event_processing_service.event_sequences AS s
        (namespace, event_type, partition_key, last_position)
    SELECT %(namespace)s, type, key, count(*) FROM input GROUP BY type, key ORDER BY type, key
    ON CONFLICT (namespace, event_type, partition_key) DO UPDATE SET
        last_position = s.last_position + excluded.last_position, updated_at = now()
    RETURNING id, event_type, partition_key, last_position
), created AS (
    INSERT INTO event_processing_service.event_instances (namespace, source, event_id, type,
        time, data_content_type, data, partition_key, sequence_id, sequence_position)
    SELECT %(namespace)s, i.source, i.event_id, i.type, i.time, i.content_type, i.data,
        i.key, s.id, s.last_position - count(*) OVER w + row_number() OVER (w ORDER BY i.ord)
    FROM input i JOIN sequences s ON s.event_type = i.type AND s.partition_key = i.key
    WINDOW w AS (PARTITION BY i.type, i.key)
    RETURNING id, sequence_id, sequence_position
)
INSERT INTO event_processing_service.event_queue_state
    (event_instance_id, max_attempts, sequence_id, sequence_position)
SELECT id, 5, sequence_id, sequence_position FROM created
"""

_RAW_SEQUENCES = (
    "INSERT INTO event_processing_service.event_sequences AS s "
    "(namespace, event_type, partition_key, last_position) "
    "SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
    "ON CONFLICT (namespace, event_type, partition_key) DO UPDATE SET "
    "last_position = s.last_position + excluded.last_position, updated_at = now() "
    "RETURNING event_type, partition_key, id, last_position"
)


def _raw_statement(conn: psycopg.Connection[Any], events: list[dict[str, Any]]) -> None:
    """One statement per transaction (autocommit): sequences, events and queue rows."""
    conn.execute(
        _RAW_STATEMENT,
        {
            "namespace": NAMESPACE,
            "source": [e["source"] for e in events],
            "event_id": [e["id"] for e in events],
            "type": [e["type"] for e in events],
            "time": [e["time"] for e in events],
            "content_type": [e["datacontenttype"] for e in events],
            "data": [Jsonb(e["data"]) for e in events],
            "key": [e["partitionkey"] for e in events],
        },
    )


def _raw_copy(conn: psycopg.Connection[Any], events: list[dict[str, Any]]) -> None:
    """One multi-row upsert of the sequences, then COPY of the events and of the queue rows
    (ids made here, so nothing needs to be read back)."""
    counts = Counter((e["type"], e["partitionkey"]) for e in events)
    keys = sorted(counts)
    with conn.transaction():
        rows = conn.execute(
            _RAW_SEQUENCES,
            (NAMESPACE, [k[0] for k in keys], [k[1] for k in keys], [counts[k] for k in keys]),
        ).fetchall()
        following = {(t, k): [sid, last - counts[(t, k)]] for t, k, sid, last in rows}
        ids, positions = [], []
        for e in events:
            sequence = following[(e["type"], e["partitionkey"])]
            sequence[1] += 1
            ids.append(uuid.uuid4())
            positions.append((sequence[0], sequence[1]))
        with conn.cursor() as cur:
            with cur.copy(
                "COPY event_processing_service.event_instances (id, namespace, source, "
                "event_id, type, time, data_content_type, data, partition_key, sequence_id, "
                "sequence_position) FROM STDIN"
            ) as copy:
                for id, e, (sid, position) in zip(ids, events, positions, strict=True):
                    copy.write_row((id, NAMESPACE, e["source"], e["id"], e["type"], e["time"],
                                    e["datacontenttype"], Jsonb(e["data"]), e["partitionkey"],
                                    sid, position))  # fmt: skip
            with cur.copy(
                "COPY event_processing_service.event_queue_state (event_instance_id, "
                "max_attempts, sequence_id, sequence_position) FROM STDIN"
            ) as copy:
                for id, (sid, position) in zip(ids, positions, strict=True):
                    copy.write_row((id, 5, sid, position))


RAW_METHODS = {"statement": _raw_statement, "copy": _raw_copy}


def raw_insert(dsn: str, events: list[dict[str, Any]], per_transaction: int, method: str) -> float:
    """Seconds one connection takes to store ``events`` with ``method``, committing every N
    events."""
    store = RAW_METHODS[method]
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.perf_counter()
        for start in range(0, len(events), per_transaction):
            store(conn, events[start : start + per_transaction])
        return time.perf_counter() - started


# -- through the API -----------------------------------------------------------------------
class Api:
    """A ``plait api`` child process on a database."""

    def __init__(self, dsn: str, log: Any, *, traced: bool = True) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_API_")}
        env.update(
            PLAIT_DATABASE_URL=dsn,
            PLAIT_API_TOKEN=TOKEN,
            PLAIT_DATABASE_POOL_MAX="20",
            PLAIT_LOG_LEVEL="WARNING",
            PLAIT_OBSERVABILITY_ENABLED="true" if traced else "false",
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

    def cpu_seconds(self) -> float:
        """User and system CPU the API process used so far."""
        return process_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)


def _per_event(machine: MachineCpu, events: int) -> dict[str, Any]:
    """The machine's CPU per event in microseconds, by process, and the events per second
    it bounds on this machine's cores."""
    per_thousand = machine.per_item(events / 1000)  # milliseconds per 1,000 events
    us = per_thousand["machine_cpu_ms"]
    return {
        "machine_cpu_us": us,
        "bound_events_per_s": round(per_thousand["cores"] * 1e6 / us) if us else None,
        "by_process_us": per_thousand["by_process_ms"],
    }


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
            raw_rates = {}
            raw_cpu: dict[str, dict[str, Any]] = {}
            for method in RAW_METHODS:
                say(f"events/{mode}: raw ceiling ({method}), {len(flat)} events, "
                    f"{size} per transaction")  # fmt: skip
                raw_dsn = database()
                machine = MachineCpu()
                seconds = raw_insert(raw_dsn, flat, size, method)
                raw_cpu[method] = _per_event(machine, len(flat))
                assert _count(raw_dsn) == len(flat)
                raw_rates[method] = len(flat) / seconds
            raw_method = max(raw_rates, key=lambda m: raw_rates[m])
            raw_rate = raw_rates[raw_method]
            measured = {}
            for traced in (True, False):
                say(f"events/{mode}: through plait api, {clients} clients, {size} per request"
                    f"{'' if traced else ', observability off'}")  # fmt: skip
                api_dsn = database()
                name = f"events-{mode}-api{'' if traced else '-untraced'}.log"
                with (logs / name).open("w") as log:
                    api = Api(api_dsn, log, traced=traced)
                    try:
                        before = api.cpu_seconds()
                        machine = MachineCpu({api.proc.pid: "plait api", os.getpid(): "clients"})
                        wall, latencies = asyncio.run(_drive(api.url, per_client, size))
                        cpu = api.cpu_seconds() - before
                        if traced:
                            api_machine = _per_event(machine, len(flat))
                    finally:
                        api.stop()
                stored = _count(api_dsn)
                assert stored == len(flat), f"acknowledged {len(flat)} but {stored} stored"
                measured[traced] = (wall, latencies, cpu)
            wall, latencies, cpu = measured[True]
            untraced_wall, _, untraced_cpu = measured[False]
            api_rate = len(flat) / wall
            results[mode] = {
                "events": len(flat),
                "clients": clients,
                "events_per_request": size,
                "plait_events_per_s": round(api_rate),
                "raw_events_per_s": round(raw_rate),
                "raw_method": raw_method,
                "raw_events_per_s_by_method": {m: round(r) for m, r in raw_rates.items()},
                "ratio": round(api_rate / raw_rate, 2),
                "plait_wall_s": round(wall, 2),
                "raw_wall_s": round(len(flat) / raw_rate, 2),
                "request_p50_ms": _ms(latencies, 0.5),
                "request_p99_ms": _ms(latencies, 0.99),
                "request_mean_ms": round(statistics.fmean(latencies) * 1000, 2),
                "api_cpu_us_per_event": round(cpu / len(flat) * 1e6),
                # The same run with PLAIT_OBSERVABILITY_ENABLED=false: no span per event.
                "untraced_plait_events_per_s": round(len(flat) / untraced_wall),
                "untraced_ratio": round(len(flat) / untraced_wall / raw_rate, 2),
                "untraced_api_cpu_us_per_event": round(untraced_cpu / len(flat) * 1e6),
                # The whole machine's CPU per event (all processes), and the rate it bounds.
                "machine": {"plait": api_machine, "raw": raw_cpu[raw_method]},
            }
            say(f"events/{mode}: {results[mode]}")
    return results
