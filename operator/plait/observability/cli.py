"""``plait logs`` and ``plait traces``: read Plait's own logs and spans from PostgreSQL.

Both connect as the observability component (``PLAIT_DATABASE_URL_OBSERVABILITY`` or
``PLAIT_DATABASE_URL``) and need no cluster access: runs are found by the names recorded
in their spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import click
import psycopg

from plait.errors import NotFoundError
from plait.kernel.components import component_by_name
from plait.kernel.config import Settings
from plait.observability import repository as repo
from plait.observability.states import LogLevel, SpanStatus

__all__ = [
    "SpanNode",
    "logs_command",
    "parse_since",
    "render_span_tree",
    "span_tree",
    "traces_command",
]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """``10m``, ``2h``, ``1d``, ``30s`` ago, or an ISO 8601 time (UTC if no zone)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _DURATION.match(value.strip())
    if match:
        return now - dt.timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (30s, 10m, 2h, 7d) nor an ISO 8601 time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


async def _connect() -> psycopg.AsyncConnection[Any]:
    dsn = Settings().database_url_for(component_by_name("observability"))
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10)


# --- logs -----------------------------------------------------------------------------------


def _format_log(r: repo.LogRecord, output: str) -> str:
    if output == "json":
        doc: dict[str, Any] = {
            "time": r.time.isoformat(),
            "level": r.level.value,
            "component": r.component,
            "logger": r.logger,
            "message": r.message,
            "namespace": r.namespace,
            "workflow_instance_id": str(r.workflow_instance_id) if r.workflow_instance_id else None,
            "trace_id": r.trace_id,
            "span_id": r.span_id,
            **dict(r.attributes),
        }
        return json.dumps({k: v for k, v in doc.items() if v is not None}, default=str)
    where = "/".join(x for x in (r.namespace, r.attributes.get("object")) if x)
    if r.component == "task" and r.attributes.get("task"):
        where += f" {r.attributes['task']}#{r.attributes.get('attempt', '?')}"
    line = (
        f"{r.time.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S.%f}"[:-3]
        + f"Z {r.level.value:<8} {r.component:<21} "
        + (f"[{where}] " if where else "")
        + r.message
    )
    exc = r.attributes.get("exc_info")
    return f"{line}\n{exc}" if exc else line


async def _instance_filters(
    conn: psycopg.AsyncConnection[Any], namespace: str | None, instance: str
) -> tuple[list[str], list[uuid.UUID]]:
    found = await repo.find_traces(conn, namespace, instance)
    return [t for t, _ in found], [u for _, u in found if u is not None]


async def _logs(
    query: repo.LogQuery, instance: str | None, follow: bool, output: str, poll: float = 1.0
) -> None:
    conn = await _connect()
    try:
        if instance:
            traces, uids = await _instance_filters(conn, query.namespace, instance)
            with_uid = _maybe_uuid(instance)
            if with_uid is not None:
                uids.append(with_uid)
            query = replace(
                query, trace_ids=traces, workflow_instance_ids=uids, object_name=instance
            )
        records = await repo.search_logs(conn, query)
        for r in records:
            click.echo(_format_log(r, output))
        last = records[-1].time if records else dt.datetime.now(dt.UTC)
        while follow:
            await asyncio.sleep(poll)
            for r in await repo.search_logs(conn, replace(query, since=None, after=last)):
                click.echo(_format_log(r, output))
                last = r.time
    finally:
        await conn.close()


def _maybe_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


_output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json (one object per line) for tools.",
)


@click.command("logs")
@click.option("--instance", help="Only records about this run (name, uid or trace id).")
@click.option("-n", "--namespace", help="Namespace of the run, or of the records.")
@click.option("--task", help="Only records of this task (its containers' output: component task).")
@click.option("--component", help="Only this component (e.g. task_execution, task).")
@click.option(
    "--level",
    type=click.Choice([lv.value for lv in LogLevel], case_sensitive=False),
    help="Only records at this level or above.",
)
@click.option(
    "--since",
    help="30s, 10m, 2h, 7d or a time. Default: 1h, or no limit with --instance or --trace-id.",
)
@click.option("--trace-id", help="Only records of this trace (32 hex digits).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new records.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@_output_option
def logs_command(
    instance: str | None,
    task: str | None,
    namespace: str | None,
    component: str | None,
    level: str | None,
    since: str | None,
    trace_id: str | None,
    follow: bool,
    limit: int,
    output: str,
) -> None:
    """Print Plait's log records from PostgreSQL, oldest first."""
    if trace_id is not None and not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        raise click.BadParameter("a trace id is 32 lowercase hex digits", param_hint="--trace-id")
    if since is None and not (instance or trace_id):
        since = "1h"
    query = repo.LogQuery(
        since=parse_since(since) if since is not None else None,
        task=task,
        component=component,
        min_level=LogLevel(level.upper()) if level else None,
        namespace=namespace,
        trace_ids=[trace_id] if trace_id else [],
        limit=limit,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_logs(query, instance, follow, output))


# --- traces ---------------------------------------------------------------------------------


@dataclass
class SpanNode:
    span: repo.Span
    children: list[SpanNode] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.span.end_time - self.span.start_time).total_seconds()


def span_tree(spans: Sequence[repo.Span]) -> list[SpanNode]:
    """The spans as trees (children by start time); spans whose parent is missing are roots."""
    nodes = {s.span_id: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for node in sorted(nodes.values(), key=lambda n: n.span.start_time):
        parent = nodes.get(node.span.parent_span_id or "")
        (parent.children if parent is not None else roots).append(node)
    return roots


def _label(s: repo.Span) -> str:
    a = s.attributes
    if s.name == "plait.workflow":
        return f"workflow {a.get('plait.workflow.name', '')} {a.get('plait.instance', '')}"
    if s.name == "plait.task":
        return f"task {a.get('plait.task.name', '')} attempt {a.get('plait.attempt', '')}"
    if s.name == "plait.reconcile":
        return f"reconcile {a.get('plait.kind', '')} {a.get('plait.object', '')}"
    if s.name == "plait.event":
        return f"event {a.get('plait.event.type', '')} {a.get('plait.event.id', '')}"
    return s.name


def render_span_tree(roots: Sequence[SpanNode]) -> list[str]:
    """Lines of the tree: label, duration, offset from the trace's start, status/outcome."""
    if not roots:
        return []
    t0 = min(r.span.start_time for r in roots)
    lines: list[str] = []

    def walk(node: SpanNode, prefix: str, last: bool, top: bool) -> None:
        s = node.span
        branch = "" if top else ("└─ " if last else "├─ ")
        outcome = s.attributes.get("plait.outcome")
        status = "ERROR" if s.status_code is SpanStatus.ERROR else ""
        tail = " ".join(str(x) for x in (outcome, status, s.status_message) if x)
        offset = (s.start_time - t0).total_seconds()
        lines.append(
            f"{prefix}{branch}{_label(s)}  {node.seconds:.3f}s  (+{offset:.3f}s)"
            + (f"  {tail}" if tail else "")
        )
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(node.children):
            walk(child, child_prefix, i == len(node.children) - 1, False)

    for root in roots:
        if root.span.parent_span_id and root.span.name != "plait.workflow":
            lines.append(f"(parent span {root.span.parent_span_id} not recorded yet)")
        walk(root, "", True, True)
    return lines


async def _show(instance: str, namespace: str | None, output: str) -> None:
    conn = await _connect()
    try:
        found = await repo.find_traces(conn, namespace, instance)
        if not found:
            where = f" in namespace {namespace}" if namespace else ""
            raise NotFoundError(
                f"no spans recorded for run {instance!r}{where} (runs are found by name, uid or "
                "trace id; spans are kept for PLAIT_RETENTION_TRACES_DAYS days)"
            )
        trace_id, uid = found[0]
        spans = await repo.spans_of_trace(conn, trace_id)
    finally:
        await conn.close()
    if output == "json":
        for s in spans:
            click.echo(
                json.dumps(
                    {
                        "trace_id": s.trace_id,
                        "span_id": s.span_id,
                        "parent_span_id": s.parent_span_id,
                        "name": s.name,
                        "start_time": s.start_time.isoformat(),
                        "end_time": s.end_time.isoformat(),
                        "duration_seconds": (s.end_time - s.start_time).total_seconds(),
                        "status_code": s.status_code.value,
                        "attributes": dict(s.attributes),
                    },
                    default=str,
                )
            )
        return
    click.echo(f"trace {trace_id}" + (f"  instance uid {uid}" if uid else ""))
    if len(found) > 1:
        click.echo(f"({len(found) - 1} older run(s) with that name; pass a uid or trace id)")
    for line in render_span_tree(span_tree(spans)):
        click.echo(line)


async def _list(namespace: str | None, since: dt.datetime, limit: int) -> None:
    conn = await _connect()
    try:
        traces = await repo.list_traces(conn, since=since, namespace=namespace, limit=limit)
    finally:
        await conn.close()
    click.echo(f"{'STARTED':<20} {'NAMESPACE/INSTANCE':<40} {'WORKFLOW':<20} SPANS ERRORS  TRACE")
    for t in traces:
        started = f"{t.start_time.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S}"
        name = f"{t.namespace or '-'}/{t.instance or '-'}"
        state = "" if t.finished else " (running)"
        click.echo(
            f"{started:<20} {name:<40} {t.workflow or '-':<20} {t.spans:>5} {t.errors:>6}  "
            f"{t.trace_id}{state}"
        )


@click.group("traces")
def traces_command() -> None:
    """Show the span trees of workflow runs recorded in PostgreSQL."""


@traces_command.command("show")
@click.argument("instance")
@click.option("-n", "--namespace", help="Namespace of the run (default: any).")
@_output_option
def show(instance: str, namespace: str | None, output: str) -> None:
    """The span tree of a run (by name, uid or trace id), with durations."""
    asyncio.run(_show(instance, namespace, output))


@traces_command.command("list")
@click.option("-n", "--namespace", help="Only runs of this namespace.")
@click.option("--since", default="1d", show_default=True, help="30s, 10m, 2h, 7d or a time.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def list_(namespace: str | None, since: str, limit: int) -> None:
    """Recent runs with a recorded trace, newest first."""
    asyncio.run(_list(namespace, parse_since(since), limit))
