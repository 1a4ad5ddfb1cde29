"""``plait events send`` and ``plait dlq`` against a real ``plait api`` process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from plait.event_processing import repository
from plait.testing._process import free_port, stop_process, wait_until

TOKEN = "cli-test-token"


@dataclass
class Api:
    url: str
    dsn: str

    def plait(
        self, *args: str, input: str | None = None, token: str = TOKEN
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PLAIT_API_URL": self.url, "PLAIT_API_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "plait", *args],
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def count(self, table: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM event_processing_service.{table}").fetchone()
            assert row is not None
            return int(row[0])


@pytest.fixture
def api(migrated_database: str, tmp_path: Path) -> Iterator[Api]:
    port = free_port()
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAIT_API_")}
    env.update(PLAIT_DATABASE_URL=migrated_database, PLAIT_API_TOKEN_FILE=str(token_file))
    proc = subprocess.Popen(
        [sys.executable, "-m", "plait", "api", "--host", "127.0.0.1", "--port", str(port),
         "--max-attempts", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
            return bool(resp.status == 200)

    wait_until(ready, timeout=30, what="plait api")
    yield Api(url, migrated_database)
    stop_process(proc)
    assert proc.returncode == 0


def test_events_send_from_flags_file_and_stdin(api: Api, tmp_path: Path) -> None:
    sent = api.plait("events", "send", "-n", "shop", "--type", "order.created", "--source",
                     "/shop", "--id", "o-1", "--partition-key", "k",
                     "--data", '{"amount": 3}')  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == "stored: /shop o-1 position 1 of key 'k'\n"
    again = api.plait("events", "send", "-n", "shop", "--type", "order.created", "--source",
                      "/shop", "--id", "o-1", "--partition-key", "k")  # fmt: skip
    assert again.returncode == 0
    assert again.stdout == "duplicate (already stored): /shop o-1 position 1 of key 'k'\n"

    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([
        {"specversion": "1.0", "id": "o-2", "source": "/shop", "type": "order.created",
         "partitionkey": "k"},
        {"specversion": "1.0", "id": "o-3", "source": "/shop", "type": "order.created"},
    ]))  # fmt: skip
    out = api.plait("events", "send", "-n", "shop", "-f", str(batch))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "stored: /shop o-2 position 2 of key 'k'",
        "stored: /shop o-3",
    ]
    one = {"specversion": "1.0", "id": "o-4", "source": "/shop", "type": "order.created"}
    piped = api.plait("events", "send", "-n", "shop", "-f", "-", "-o", "json",
                      input=json.dumps(one))  # fmt: skip
    assert piped.returncode == 0
    assert json.loads(piped.stdout)["stored"] is True
    generated = api.plait("events", "send", "--type", "t", "--source", "/s")
    assert generated.returncode == 0
    uuid.UUID(generated.stdout.split()[-1])  # the default id is a UUID
    assert api.count("event_instances") == 5


def test_events_send_errors_are_one_line_and_exit_non_zero(api: Api, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"specversion": "1.0", "id": "x", "source": "/s"}))
    out = api.plait("events", "send", "-f", str(bad))
    assert out.returncode == 1
    assert out.stderr == (
        "error: HTTP 400 Invalid CloudEvent: /type: required attribute is missing\n"
    )
    wrong = api.plait("events", "send", "--type", "t", "--source", "/s", token="nope")
    assert wrong.returncode == 1
    assert "HTTP 401 Unauthorized" in wrong.stderr
    assert "nope" not in wrong.stderr
    usage = api.plait("events", "send", "--type", "t")
    assert usage.returncode == 2
    assert "missing --source" in usage.stderr
    env_url = {**os.environ, "PLAIT_API_URL": f"http://127.0.0.1:{free_port()}"}
    down = subprocess.run(
        [sys.executable, "-m", "plait", "events", "send", "--type", "t", "--source", "/s"],
        env=env_url, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert down.returncode == 1
    assert "cannot reach the Plait API" in down.stderr
    assert api.count("event_instances") == 0


def test_dlq_list_show_replay_purge(api: Api) -> None:
    for event_id in ("d-1", "d-2"):
        sent = api.plait("events", "send", "-n", "shop", "--type", "t", "--source", "/s",
                         "--id", event_id, "--data", '{"n": 1}')  # fmt: skip
        assert sent.returncode == 0, sent.stderr

    async def dead_letter_all() -> None:
        async with await psycopg.AsyncConnection.connect(api.dsn, autocommit=True) as conn:
            for item in await repository.lease(conn, "w", limit=10):
                await repository.fail(conn, item.event_instance_id, "w", "handler exploded",
                                      retry_in=timedelta(0))  # fmt: skip

    asyncio.run(dead_letter_all())
    listed = api.plait("dlq", "list", "-n", "shop", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert sorted(i["eventId"] for i in items) == ["d-1", "d-2"]
    first = next(i["id"] for i in items if i["eventId"] == "d-1")
    second = next(i["id"] for i in items if i["eventId"] == "d-2")
    table = api.plait("dlq", "list", "-n", "shop")
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "TYPE"]
    assert "handler exploded" in table.stdout

    shown = api.plait("dlq", "show", "-n", "shop", first)
    assert json.loads(shown.stdout)["payload"]["data"] == {"n": 1}

    replayed = api.plait("dlq", "replay", "-n", "shop", first)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == f"replayed: {first} (/s d-1)\n"
    twice = api.plait("dlq", "replay", "-n", "shop", first)
    assert twice.returncode == 1
    assert "HTTP 409" in twice.stderr
    with psycopg.connect(api.dsn) as conn:
        state = conn.execute(
            "SELECT q.state FROM event_processing_service.event_queue_state q JOIN "
            "event_processing_service.event_instances e ON e.id = q.event_instance_id "
            "WHERE e.event_id = 'd-1'"
        ).fetchone()
    assert state == ("Pending",)

    assert api.plait("dlq", "show", "-n", "shop", "not-a-uuid").returncode == 2
    purged = api.plait("dlq", "purge", "-n", "shop", second)
    assert purged.stdout == "purged: 1\n"
    rest = api.plait("dlq", "purge", "-n", "shop", "--older-than", "0s")
    assert rest.stdout == "purged: 1\n"
    assert api.count("dead_letter_queue") == 0
    assert api.plait("dlq", "purge", "-n", "shop").returncode == 2
