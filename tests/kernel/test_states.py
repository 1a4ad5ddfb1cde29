"""The allowed statuses are declared once in Python; the SQL CHECKs must list the same."""

from __future__ import annotations

import re
from enum import StrEnum

import psycopg
import pytest

from plait.event_processing.states import DeadLetterStatus, QueueState
from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus
from plait.task_execution.states import TaskState
from plait.testing_framework.states import CaseOutcome, TestRunStatus
from plait.web_application.states import UiComponentKind
from plait.workflow_orchestrator.states import SubscriptionStatus, WorkflowPhase

CHECKS: list[tuple[str, str, type[StrEnum]]] = [
    (
        "workflow_orchestrator_service.workflow_instances",
        "workflow_instances_phase_known",
        WorkflowPhase,
    ),
    (
        "workflow_orchestrator_service.workflow_event_subscriptions",
        "workflow_event_subscriptions_status_known",
        SubscriptionStatus,
    ),
    ("event_processing_service.event_queue_state", "event_queue_state_state_known", QueueState),
    (
        "event_processing_service.dead_letter_queue",
        "dead_letter_queue_status_known",
        DeadLetterStatus,
    ),
    ("task_execution_service.task_instances", "task_instances_state_known", TaskState),
    ("testing_framework_service.test_runs", "test_runs_status_known", TestRunStatus),
    ("testing_framework_service.test_case_results", "test_case_results_outcome_known", CaseOutcome),
    ("web_application_service.ui_components", "ui_components_kind_known", UiComponentKind),
    ("observability_service.observability_logs", "observability_logs_level_known", LogLevel),
    ("observability_service.observability_metrics", "observability_metrics_kind_known", MetricKind),
    ("observability_service.observability_traces", "observability_traces_kind_known", SpanKind),
    ("observability_service.observability_traces", "observability_traces_status_known", SpanStatus),
]


@pytest.mark.parametrize(
    ("table", "constraint", "enum"), CHECKS, ids=lambda v: getattr(v, "__name__", "")
)
def test_check_constraint_lists_the_enum(
    migrated_template_dsn: str, table: str, constraint: str, enum: type[StrEnum]
) -> None:
    with psycopg.connect(migrated_template_dsn) as conn:
        row = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND conname = %s",
            (table, constraint),
        ).fetchone()
    assert row is not None, f"{table} has no constraint {constraint}"
    assert set(re.findall(r"'([^']*)'::text", row[0])) == {e.value for e in enum}
