"""JSON lines with context and span ids, and secrets redacted before anything sees them."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import kopf
import pytest
from opentelemetry.sdk.trace import TracerProvider

from plait.observability.logging import (
    REDACTED,
    ContextFilter,
    JsonFormatter,
    RedactionFilter,
    RoutineSuccessFilter,
    TextFormatter,
    component_of,
    log_context,
    redact,
    redact_text,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactionFilter())
    logger = logging.getLogger("plait.task_execution.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_context_and_span_ids(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer("test")
    uid = uuid.uuid4()
    with (
        log_context(namespace="ci", object="build-1", workflow_instance_id=uid),
        tracer.start_as_current_span("work") as span,
    ):
        logger.info("started %s", "job", extra={"attempt": 2})
    logger.warning("outside")
    inside, outside = lines(stream)
    ctx = span.get_span_context()
    assert inside["message"] == "started job"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "plait.task_execution.test"
    assert inside["component"] == "task_execution"
    assert (inside["namespace"], inside["object"]) == ("ci", "build-1")
    assert inside["workflow_instance_id"] == str(uid)
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert inside["attempt"] == 2
    assert str(inside["time"]).endswith("+00:00")
    assert "namespace" not in outside
    assert "trace_id" not in outside


def test_exception_text_is_included_and_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise RuntimeError("cannot connect to postgresql://plait:hunter2@db:5432/plait")
    except RuntimeError:
        logger.exception("connect failed")
    (doc,) = lines(stream)
    assert "RuntimeError" in str(doc["exc_info"])
    assert "hunter2" not in json.dumps(doc)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("headers {'Authorization': 'Bearer abc.def.ghi'}", "abc.def.ghi"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("calling with bearer eyJhbGciOi.payload.sig", "eyJhbGciOi.payload.sig"),
        ("dsn=postgresql://plait:s3cr3t@localhost/plait", "s3cr3t"),
        ("host=db user=plait password=s3cr3t dbname=x", "s3cr3t"),
        ('{"token": "tok_123", "name": "x"}', "tok_123"),
        ("api_key=AKIA123&x=1", "AKIA123"),
        ("client_secret: zzz", "zzz"),
    ],
)
def test_redact_text(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


def test_redact_keeps_harmless_text() -> None:
    text = "task build attempt 2 of workflow ci/release took 3.2s; password policy unchanged"
    assert redact_text(text) == text


def test_redact_structures_by_key() -> None:
    value = {
        "name": "x",
        "password": "p",
        "nested": {"api_token": "t", "list": ["password=q", 1]},
        "Authorization": "Bearer z",
    }
    assert redact(value) == {
        "name": "x",
        "password": REDACTED,
        "nested": {"api_token": REDACTED, "list": [f"password={REDACTED}", 1]},
        "Authorization": REDACTED,
    }


def test_extra_attributes_under_secret_keys_are_masked(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("login", extra={"token": "abc", "user": "ann", "headers": {"Cookie": "sid=1"}})
    (doc,) = lines(stream)
    assert doc["token"] == REDACTED
    assert doc["user"] == "ann"
    assert doc["headers"] == {"Cookie": REDACTED}


def test_component_comes_from_the_logger_or_the_context() -> None:
    assert component_of("plait.event_processing.ingest") == "event_processing"
    with log_context(component="observability"):
        assert component_of("kopf.objects") == "observability"


def test_text_format_shows_context() -> None:
    record = logging.LogRecord("plait.api.app", logging.INFO, __file__, 1, "hello", None, None)
    with log_context(namespace="ci", object="run-1"):
        ContextFilter().filter(record)
    assert "hello [ci/run-1]" in TextFormatter().format(record)


def test_a_bad_logging_setting_is_one_clear_error() -> None:
    env = {**os.environ, "PLAIT_LOG_FORMAT": "yaml"}
    done = subprocess.run(
        [sys.executable, "-m", "plait", "crds", "--help"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "error: PLAIT_LOG_FORMAT: Input should be 'json' or 'text'"


def test_kopfs_settings_are_not_copied_into_every_record(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("handled", extra={"settings": kopf.OperatorSettings(), "k8s_skip": False})
    (line,) = lines(stream)
    assert "settings" not in line
    assert line["k8s_skip"] is False


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_kopfs_routine_handler_successes_are_debug_lines(level: int) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"kopf.objects.test-{level}")
    logger.addHandler(handler)
    logger.addFilter(RoutineSuccessFilter())
    logger.setLevel(level)
    logger.propagate = False
    try:
        logger.info("Handler 'follow-plait-jobs' succeeded.")
        logger.info("Handler 'reconcile-workflowdefinitions' failed temporarily: not yet")
        logger.error("Handler 'follow-plait-jobs' failed with an exception. Will retry.")
    finally:
        logger.removeHandler(handler)
    seen = [(line["level"], line["message"]) for line in lines(stream)]
    expected = [
        ("INFO", "Handler 'reconcile-workflowdefinitions' failed temporarily: not yet"),
        ("ERROR", "Handler 'follow-plait-jobs' failed with an exception. Will retry."),
    ]
    if level == logging.DEBUG:
        expected.insert(0, ("DEBUG", "Handler 'follow-plait-jobs' succeeded."))
    assert seen == expected
