"""``plait events send`` and ``plait dlq``: the ingestion API from a shell or a script.

Both talk to ``plait api`` over HTTP (``--url``/``PLAIT_API_URL``, ``--token``/
``PLAIT_API_TOKEN``), never to the database, so they work wherever the API is reachable and
obey the same authentication. Errors are one line with the server's own explanation, and
the exit status is non-zero whenever anything was refused.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from plait.errors import PlaitError
from plait.event_processing.cloudevents import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE

__all__ = ["dlq_command", "events_command"]

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(PlaitError):
    """The API refused a request or could not be reached."""


class Client:
    """A tiny JSON-over-HTTP client of ``plait api`` (standard library only)."""

    def __init__(self, url: str, token: str | None, namespace: str, timeout: float = 30) -> None:
        self.base = url.rstrip("/")
        self.token = token
        self.namespace = namespace
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = f"{self.base}/v1/namespaces/{urllib.parse.quote(self.namespace)}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise ApiError(_describe(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(
                f"cannot reach the Plait API at {self.base}: {reason} (set --url or PLAIT_API_URL)"
            ) from None


def _describe(exc: urllib.error.HTTPError) -> str:
    """One line from a problem+json answer: status, title, detail (the server's words)."""
    try:
        problem = json.loads(exc.read())
    except (ValueError, OSError):
        return f"HTTP {exc.code} {exc.reason}"
    if not isinstance(problem, dict):
        return f"HTTP {exc.code} {exc.reason}"
    title = problem.get("title") or exc.reason
    detail = problem.get("detail") or ""
    hint = ""
    if exc.code == 401:
        hint = " (pass --token or set PLAIT_API_TOKEN)"
    return f"HTTP {exc.code} {title}: {detail}{hint}"


def _client_options(f: Any) -> Any:
    f = click.option(
        "-n", "--namespace", default="default", show_default=True, help="Namespace of the events."
    )(f)
    f = click.option(
        "--token",
        envvar="PLAIT_API_TOKEN",
        help="Bearer token of the API (default: $PLAIT_API_TOKEN).",
    )(f)
    f = click.option(
        "--url",
        envvar="PLAIT_API_URL",
        default=DEFAULT_URL,
        show_default=True,
        help="Base URL of plait api.",
    )(f)
    return f


def _ack_line(ack: dict[str, Any]) -> str:
    where = ""
    if ack.get("partitionKey") is not None:
        where = f" position {ack['position']} of key {ack['partitionKey']!r}"
    verdict = "stored" if ack["stored"] else "duplicate (already stored)"
    return f"{verdict}: {ack['source']} {ack['id']}{where}"


# -- events --------------------------------------------------------------------------------
@click.group("events")
def events_command() -> None:
    """Send CloudEvents to Plait."""


@events_command.command("send")
@_client_options
@click.option(
    "-f",
    "--file",
    "file",
    type=click.File("rb"),
    help="A CloudEvent in JSON (structured mode), or a JSON array of them (a batch); - reads "
    "standard input. Without it, the flags below build one event.",
)
@click.option("--type", "event_type", help="CloudEvents type.")
@click.option("--source", help="CloudEvents source (a URI reference).")
@click.option("--subject", help="CloudEvents subject (also the partition key, unless one is set).")
@click.option("--id", "event_id", help="CloudEvents id (default: a new UUID).")
@click.option("--data", help="Event data as JSON.")
@click.option("--partition-key", help="partitionkey extension: events that share it are ordered.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")  # fmt: skip
def send_command(
    url: str,
    token: str | None,
    namespace: str,
    file: Any,
    event_type: str | None,
    source: str | None,
    subject: str | None,
    event_id: str | None,
    data: str | None,
    partition_key: str | None,
    output: str,
) -> None:
    """Send one event (flags or -f FILE) or a batch (-f with a JSON array)."""
    flags = {"--type": event_type, "--source": source, "--subject": subject, "--id": event_id,
             "--data": data, "--partition-key": partition_key}  # fmt: skip
    if file is not None:
        used = [name for name, value in flags.items() if value is not None]
        if used:
            raise click.UsageError(f"-f/--file cannot be combined with {', '.join(used)}")
        body = file.read()
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise click.UsageError(f"{file.name} is not JSON: {exc}") from None
        content_type = BATCH_CONTENT_TYPE if isinstance(parsed, list) else STRUCTURED_CONTENT_TYPE
    else:
        missing = [name for name, value in (("--type", event_type), ("--source", source))
                   if not value]  # fmt: skip
        if missing:
            raise click.UsageError(f"missing {' and '.join(missing)} (or give -f FILE)")
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": source,
            "type": event_type,
        }
        if subject is not None:
            event["subject"] = subject
        if partition_key is not None:
            event["partitionkey"] = partition_key
        if data is not None:
            try:
                event["data"] = json.loads(data)
            except json.JSONDecodeError as exc:
                raise click.UsageError(f"--data is not JSON: {exc}") from None
            event["datacontenttype"] = "application/json"
        body = json.dumps(event).encode()
        content_type = STRUCTURED_CONTENT_TYPE
    client = Client(url, token, namespace)
    _, answer = client.request("POST", "/events", body=body, content_type=content_type)
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    for ack in answer.get("events", [answer]):
        click.echo(_ack_line(ack))


# -- dead letters --------------------------------------------------------------------------
@click.group("dlq")
def dlq_command() -> None:
    """Inspect, replay and purge dead letters (events whose dispatch failed for good)."""


def _age(created_at: str) -> str:
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


@dlq_command.command("list")
@_client_options
@click.option("--status", type=click.Choice(["Open", "Replayed", "Discarded"]),
              help="Only dead letters in this status.")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", help="Continue after a previous page (printed at its end).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)  # fmt: skip
def dlq_list(
    url: str, token: str | None, namespace: str, status: str | None, limit: int,
    cursor: str | None, output: str,
) -> None:  # fmt: skip
    """List dead letters, newest first."""
    query = {"limit": str(limit)}
    if status:
        query["status"] = status
    if cursor:
        query["cursor"] = cursor
    _, page = Client(url, token, namespace).request("GET", "/deadletters", query=query)
    if output == "json":
        click.echo(json.dumps(page, indent=2))
        return
    rows = [("ID", "STATUS", "TYPE", "SOURCE", "EVENT ID", "ATTEMPTS", "AGE", "REASON")]
    rows += [
        (d["id"], d["status"], d["type"], d["source"], d["eventId"], str(d["attempts"]),
         _age(d["createdAt"]), d["reason"].splitlines()[0][:60] if d["reason"] else "")
        for d in page["items"]
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    if page.get("nextCursor"):
        click.echo(f"more: --cursor {page['nextCursor']}")


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a dead letter id (a UUID)") from None


@dlq_command.command("show")
@_client_options
@click.argument("letter_id")
def dlq_show(url: str, token: str | None, namespace: str, letter_id: str) -> None:
    """Show one dead letter with its full event, as JSON."""
    _, letter = Client(url, token, namespace).request("GET", f"/deadletters/{_uuid(letter_id)}")
    click.echo(json.dumps(letter, indent=2))


@dlq_command.command("replay")
@_client_options
@click.argument("letter_ids", nargs=-1, required=True)
def dlq_replay(url: str, token: str | None, namespace: str, letter_ids: tuple[str, ...]) -> None:
    """Send dead-lettered events through dispatch again."""
    client = Client(url, token, namespace)
    failed = 0
    for raw in letter_ids:
        letter_id = _uuid(raw)
        try:
            _, letter = client.request("POST", f"/deadletters/{letter_id}/replay")
        except ApiError as exc:
            failed += 1
            click.echo(f"error: {letter_id}: {exc}", err=True)
            continue
        click.echo(f"replayed: {letter_id} ({letter['source']} {letter['eventId']})")
    if failed:
        sys.exit(1)


def _older_than(value: str) -> str:
    """A duration (30s, 15m, 12h, 7d) before now, or an RFC 3339 timestamp, as RFC 3339."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        cutoff = datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
        return cutoff.isoformat()
    return value


@dlq_command.command("purge")
@_client_options
@click.argument("letter_ids", nargs=-1)
@click.option("--older-than", help="Delete those created before this: a duration (7d, 12h, "
              "30m) ago, or an RFC 3339 time.")  # fmt: skip
def dlq_purge(
    url: str, token: str | None, namespace: str, letter_ids: tuple[str, ...],
    older_than: str | None,
) -> None:  # fmt: skip
    """Delete dead letters for good: the given ids and/or those older than --older-than."""
    if not letter_ids and not older_than:
        raise click.UsageError("give dead letter ids, --older-than, or both")
    body: dict[str, Any] = {}
    if letter_ids:
        body["ids"] = [_uuid(i) for i in letter_ids]
    if older_than:
        body["olderThan"] = _older_than(older_than)
    _, answer = Client(url, token, namespace).request(
        "POST", "/deadletters/purge", body=json.dumps(body).encode()
    )
    click.echo(f"purged: {answer['purged']}")
