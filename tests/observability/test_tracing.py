"""Spans of a run: fixed ids, parent links, written in batches and read back as a tree."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.trace import ReadableSpan

from plait.errors import ValidationError
from plait.observability import repository as repo
from plait.observability import tracing
from plait.observability.batching import DsnConnections
from plait.observability.cli import render_span_tree, span_tree, traces_command
from plait.observability.settings import ObservabilitySettings
from plait.observability.states import SpanStatus

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
async def active(connections: DsnConnections) -> AsyncIterator[tracing.Tracing]:
    t = tracing.Tracing(ObservabilitySettings(span_flush_interval_ms=50), connections, "operator")
    t.start()
    tracing.activate(t)
    yield t
    tracing.activate(None)
    await t.stop()


def test_traceparent_round_trip_and_errors() -> None:
    value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = tracing.parse_traceparent(value)
    assert (ctx.trace_id, ctx.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert tracing.traceparent(ctx) == value
    for bad in (
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    ):
        with pytest.raises(ValidationError, match="traceparent"):
            tracing.parse_traceparent(bad)


def test_run_ids_are_deterministic_and_join_the_event_trace() -> None:
    uid = uuid.uuid4()
    own = tracing.run_trace(uid)
    assert own == tracing.run_trace(str(uid))
    assert own.trace_id == uid.int
    assert own.parent is None
    event = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    joined = tracing.run_trace(uid, {tracing.TRACEPARENT_ANNOTATION: event})
    assert joined.trace_id_hex == "0af7651916cd43dd8448eb211c80319c"
    assert joined.root_span_id == own.root_span_id
    assert joined.parent is not None
    assert joined.parent.span_id == 0xB7AD6B7169203331
    broken = tracing.run_trace(uid, {tracing.TRACEPARENT_ANNOTATION: "garbage"})
    assert broken == own
    tp = tracing.task_traceparent(own, "build", 2)
    assert tp == tracing.task_traceparent(tracing.run_trace(uid), "build", 2)
    assert tp != tracing.task_traceparent(own, "build", 3)
    assert tp.startswith(f"00-{own.trace_id_hex}-")


async def record_run(
    uid: uuid.UUID, annotations: dict[str, str] | None = None, t0: dt.datetime = T0
) -> tracing.RunTrace:
    """What the runtime will do: a reconcile while running, attempts, the root at the end."""
    run = tracing.run_trace(uid, annotations)
    common = {"namespace": "ci", "instance": "release-7", "workflow": "release"}
    with tracing.reconcile_span("WorkflowInstance", "ci", "release-7", run=run):
        pass
    tracing.task_attempt_span(
        run,
        **common,
        task="build",
        attempt=1,
        start=t0 + dt.timedelta(seconds=1),
        end=t0 + dt.timedelta(seconds=4),
        outcome="failed",
        error="exit code 1",
        job_name="release-7-build-1",
        queue_wait_seconds=0.5,
        run_seconds=2.0,
    )
    tracing.task_attempt_span(
        run,
        **common,
        task="build",
        attempt=2,
        start=t0 + dt.timedelta(seconds=5),
        end=t0 + dt.timedelta(seconds=9),
        outcome="succeeded",
        queue_wait_seconds=0.5,
        run_seconds=3.0,
    )
    tracing.workflow_span(
        run, **common, start=t0, end=t0 + dt.timedelta(seconds=10), outcome="succeeded"
    )
    return run


async def test_spans_are_written_with_parent_links_and_read_back_as_a_tree(
    active: tracing.Tracing, obs_conn: psycopg.AsyncConnection
) -> None:
    uid = uuid.uuid4()
    run = await record_run(uid)
    await active.writer.flush()
    spans = await repo.spans_of_trace(obs_conn, run.trace_id_hex)
    assert len(spans) == 4
    (root,) = span_tree(spans)
    assert root.span.name == tracing.WORKFLOW_SPAN
    assert root.span.span_id == f"{run.root_span_id:016x}"
    assert root.span.parent_span_id is None
    assert root.span.workflow_instance_id == uid
    assert root.seconds == 10.0
    names = [(c.span.name, c.span.attributes.get("plait.attempt")) for c in root.children]
    assert (tracing.TASK_SPAN, 1) in names
    assert (tracing.TASK_SPAN, 2) in names
    assert (tracing.RECONCILE_SPAN, None) in names
    failed = next(c.span for c in root.children if c.span.attributes.get("plait.attempt") == 1)
    assert failed.status_code is SpanStatus.ERROR
    assert failed.status_message == "exit code 1"
    assert failed.span_id == f"{tracing.attempt_span_id(run, 'build', 1):016x}"
    assert tracing.task_traceparent(run, "build", 1).split("-")[2] == failed.span_id
    lines = render_span_tree(span_tree(spans))
    assert lines[0].startswith("workflow release release-7  10.000s")
    assert any("task build attempt 1  3.000s  (+1.000s)  failed ERROR" in line for line in lines)


async def test_a_run_started_by_an_event_is_part_of_its_trace(
    active: tracing.Tracing, obs_conn: psycopg.AsyncConnection
) -> None:
    with tracing.event_span(namespace="ci", source="git", type="push", event_id="e-1") as span:
        annotation = tracing.current_traceparent()
    assert annotation is not None
    run = await record_run(uuid.uuid4(), {tracing.TRACEPARENT_ANNOTATION: annotation})
    await active.writer.flush()
    spans = await repo.spans_of_trace(obs_conn, run.trace_id_hex)
    (event_root,) = span_tree(spans)
    assert event_root.span.name == tracing.EVENT_SPAN
    assert event_root.span.span_id == f"{span.get_span_context().span_id:016x}"
    (workflow,) = event_root.children
    assert workflow.span.name == tracing.WORKFLOW_SPAN
    assert len(workflow.children) == 3


async def test_views_answer_the_common_questions(
    active: tracing.Tracing, obs_conn: psycopg.AsyncConnection
) -> None:
    # The views look at the last days: record relative to now.
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    await record_run(uuid.uuid4(), t0=t0)
    failed_run = tracing.run_trace(uuid.uuid4())
    tracing.workflow_span(
        failed_run,
        namespace="ci",
        instance="release-8",
        workflow="release",
        start=t0,
        end=t0 + dt.timedelta(seconds=3),
        outcome="failed",
    )
    await active.writer.flush()
    cur = await obs_conn.execute(
        "SELECT workflow, runs, succeeded, failed, failure_rate "
        "FROM observability_service.workflow_failure_rates"
    )
    assert await cur.fetchall() == [("release", 2, 1, 1, pytest.approx(0.5))]
    cur = await obs_conn.execute(
        "SELECT task, attempts, max_seconds FROM observability_service.slowest_tasks"
    )
    assert await cur.fetchall() == [("build", 2, 4.0)]
    cur = await obs_conn.execute(
        "SELECT task, attempts, unsuccessful FROM observability_service.task_failure_rates"
    )
    assert await cur.fetchall() == [("build", 2, 1)]
    cur = await obs_conn.execute(
        "SELECT attempts, queue_wait_seconds, run_seconds, overhead_seconds, overhead_share "
        "FROM observability_service.task_overhead"
    )
    # Attempts recorded without Plait's overhead add none (the runtime's real values are
    # checked from a real run in test_operator.py).
    assert await cur.fetchall() == [(2, 1.0, 5.0, None, None)]
    cur = await obs_conn.execute(
        "SELECT attempt, duration_seconds FROM observability_service.slowest_task_attempts"
    )
    assert await cur.fetchall() == [(2, 4.0), (1, 3.0)]


async def test_traces_show_prints_the_tree(
    active: tracing.Tracing, obs_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await record_run(uuid.uuid4())
    await active.writer.flush()
    monkeypatch.setenv("PLAIT_DATABASE_URL_OBSERVABILITY", obs_dsn)
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, traces_command, ["show", "release-7", "-n", "ci"]
    )
    assert result.exit_code == 0, result.output
    assert f"trace {run.trace_id_hex}" in result.output
    assert "└─ task build attempt 2  4.000s  (+5.000s)  succeeded" in result.output
    missing = await asyncio.to_thread(runner.invoke, traces_command, ["show", "nope", "-n", "ci"])
    assert missing.exit_code != 0
    assert "no spans recorded for run 'nope' in namespace ci" in str(missing.exception)
    listing = await asyncio.to_thread(runner.invoke, traces_command, ["list", "--since", "3650d"])
    assert listing.exit_code == 0, listing.output
    assert "ci/release-7" in listing.output


async def test_a_batch_of_events_gets_a_span_each_recorded_directly(
    active: tracing.Tracing, obs_conn: psycopg.AsyncConnection
) -> None:
    sender = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    spans = tracing.EventSpans(
        [
            ("ci", "git", "push", "e-1", sender),
            ("ci", "git", "push", "e-2", None),
            ("ci", "git", "push", "e-3", "not-a-traceparent"),
        ]
    )
    parents = spans.traceparents
    assert all(p is not None for p in parents)
    contexts = [tracing.parse_traceparent(p or "") for p in parents]
    assert len({c.span_id for c in contexts}) == 3
    assert f"{contexts[0].trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert len({c.trace_id for c in contexts}) == 3  # the others start traces of their own
    spans.end("refused: no such type")
    await active.writer.flush()
    for event_id, context in zip(("e-1", "e-2", "e-3"), contexts, strict=True):
        (stored,) = await repo.spans_of_trace(obs_conn, f"{context.trace_id:032x}")
        assert stored.name == tracing.EVENT_SPAN
        assert stored.span_id == f"{context.span_id:016x}"
        assert stored.component == "operator"
        assert stored.kind.value == "SERVER"
        assert stored.status_code is SpanStatus.ERROR
        assert stored.status_message == "refused: no such type"
        assert stored.attributes["plait.event.id"] == event_id
        assert stored.end_time >= stored.start_time
    first = await repo.spans_of_trace(obs_conn, "0af7651916cd43dd8448eb211c80319c")
    assert first[0].parent_span_id == "b7ad6b7169203331"


async def test_event_spans_go_through_the_sdk_when_also_exported_elsewhere(
    connections: DsnConnections,
) -> None:
    seen: list[str] = []

    class Recorder(tracing.DatabaseSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            seen.append(span.name)

    t = tracing.Tracing(ObservabilitySettings(span_flush_interval_ms=50), connections, "api")
    t.exports_elsewhere = True  # as with an otlp_endpoint: every processor must see them
    t.provider.add_span_processor(Recorder(t.buffer, "api"))
    tracing.activate(t)
    try:
        spans = tracing.EventSpans([("ci", "git", "push", "e-1", None)])
        spans.end()
    finally:
        tracing.activate(None)
        t.provider.shutdown()
    assert seen == [tracing.EVENT_SPAN]
    assert spans.traceparents[0] is not None
