"""The allowed statuses and the moves between them are declared once in Python; the SQL
CHECKs and transition triggers must agree."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from plait.event_processing.states import DEAD_LETTERS, QUEUE, DeadLetterStatus, QueueState
from plait.kernel.transitions import InvalidTransition, StateMachine
from plait.observability.states import LogLevel, MetricKind, SpanKind, SpanStatus
from plait.task_execution.states import STATES, FailureCause, TaskState
from plait.testing_framework.states import CaseOutcome, TestRunStatus
from plait.web_application.states import UiComponentKind
from plait.workflow_orchestrator.states import (
    PHASES,
    SUBSCRIPTIONS,
    SubscriptionStatus,
    WorkflowPhase,
)

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
    (
        "task_execution_service.task_instances",
        "task_instances_failure_cause_known",
        FailureCause,
    ),
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


# -- transitions ---------------------------------------------------------------------------
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)
#: A run that the subscriptions' rows belong to (a real parent: inserts check keys).
PARENT_RUN = uuid.UUID(int=1)
PARENTS = [
    "INSERT INTO workflow_orchestrator_service.workflow_definitions "
    "(namespace, name, version, spec, spec_hash) VALUES ('ci', 'build', 1, '{}', repeat('0', 64))",
    "INSERT INTO workflow_orchestrator_service.workflow_instances "
    "(id, namespace, name, workflow_name, workflow_version) "
    f"VALUES ('{PARENT_RUN}', 'ci', 'parent', 'build', 1)",
]


@dataclass(frozen=True)
class Guarded:
    """A state column guarded by a transition trigger, and rows in any of its states."""

    table: str
    column: str
    key: str
    machine: StateMachine[Any]
    checks_insert: bool
    base: Callable[[uuid.UUID], dict[str, Any]]
    """The columns of a row that do not depend on its state."""
    columns: Callable[[Any], dict[str, Any]]
    """The columns that must go with a state for the table's CHECKs to hold."""

    @property
    def name(self) -> str:
        return self.table.rsplit(".", 1)[1]


GUARDED = [
    Guarded(
        "workflow_orchestrator_service.workflow_instances",
        "phase",
        "id",
        PHASES,
        True,
        lambda key: {
            "id": key,
            "namespace": "ci",
            "name": f"run-{key.hex[:8]}",
            "workflow_name": "build",
            "workflow_version": 1,
        },
        lambda phase: {
            "phase": phase.value,
            "started_at": None if phase is WorkflowPhase.PENDING else T0,
            "finished_at": T1 if phase.final else None,
        },
    ),
    Guarded(
        "workflow_orchestrator_service.workflow_event_subscriptions",
        "status",
        "id",
        SUBSCRIPTIONS,
        True,
        lambda key: {
            "id": key,
            "workflow_instance_id": PARENT_RUN,
            "task_name": f"approve-{key.hex[:8]}",
            "event_type": "approved",
        },
        lambda status: {
            "status": status.value,
            "matched_event_id": uuid.uuid4() if status is SubscriptionStatus.MATCHED else None,
            "outputs": Jsonb({}) if status is SubscriptionStatus.MATCHED else None,
            "resolved_at": None if status is SubscriptionStatus.WAITING else T1,
        },
    ),
    Guarded(
        "task_execution_service.task_instances",
        "state",
        "id",
        STATES,
        True,
        lambda key: {
            "id": key,
            "namespace": "ci",
            "workflow_instance_id": uuid.uuid4(),
            "task_name": "build",
            "attempt": 1,
            "job_name": f"job-{key.hex}",
        },
        lambda state: {
            "state": state.value,
            "started_at": None if state in (TaskState.PENDING, TaskState.SKIPPED) else T0,
            "finished_at": T1 if state.final else None,
        },
    ),
    Guarded(
        "event_processing_service.event_queue_state",
        "state",
        "event_instance_id",
        QUEUE,
        False,
        lambda key: {"event_instance_id": key},
        lambda state: {
            "state": state.value,
            "leased_by": "worker" if state is QueueState.LEASED else None,
            "lease_expires_at": T1 if state is QueueState.LEASED else None,
        },
    ),
    Guarded(
        "event_processing_service.dead_letter_queue",
        "status",
        "id",
        DEAD_LETTERS,
        False,
        lambda key: {
            "id": key,
            "namespace": "ci",
            "source": "/test",
            "event_id": key.hex,
            "type": "t",
            "payload": Jsonb({}),
            "reason": "failed",
        },
        lambda status: {
            "status": status.value,
            "resolved_at": None if status is DeadLetterStatus.OPEN else T1,
        },
    ),
]


def _refusal(conn: psycopg.Connection[Any], statement: sql.Composed, params: list[Any]) -> str:
    """Run a statement; "" when PostgreSQL accepts it, else "<constraint>: <message>"."""
    try:
        conn.execute(statement, params)
    except psycopg.errors.CheckViolation as exc:
        return f"{exc.diag.constraint_name}: {exc.diag.message_primary}"
    return ""


def _insert_statement(guarded: Guarded, row: dict[str, Any]) -> sql.Composed:
    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.SQL(guarded.table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )


@pytest.mark.parametrize("guarded", GUARDED, ids=lambda g: g.name)
def test_each_transition_trigger_carries_its_state_machine(
    migrated_template_dsn: str, guarded: Guarded
) -> None:
    """The trigger's arguments are the table declared in Python, generated from it."""
    expected = {f"{guarded.name}_{guarded.column}_transition"}
    if guarded.checks_insert:
        expected.add(f"{guarded.name}_{guarded.column}_initial")
    with psycopg.connect(migrated_template_dsn) as conn:
        rows = conn.execute(
            "SELECT tgname, tgargs FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE %s",
            (guarded.table, f"{guarded.name}_{guarded.column}_%"),
        ).fetchall()
    assert {r[0] for r in rows} == expected
    for _, args in rows:
        assert bytes(args).decode().split("\0")[:-1] == guarded.machine.trigger_arguments()


@pytest.mark.parametrize("guarded", GUARDED, ids=lambda g: g.name)
def test_postgres_accepts_exactly_the_declared_transitions(
    migrated_database: str, guarded: Guarded
) -> None:
    """Every (old, new) pair tried for real: refused iff the table does not list it."""
    states = list(guarded.machine.transitions)
    wrong: list[str] = []
    with psycopg.connect(migrated_database, autocommit=True) as conn:
        for statement in PARENTS:
            conn.execute(statement)
        for old in states:
            for new in states:
                if old == new:
                    continue
                key = uuid.uuid4()
                # Set up the row in ``old`` as a restore would: triggers and keys off.
                row = {**guarded.base(key), **guarded.columns(old)}
                conn.execute("SET session_replication_role = replica")
                conn.execute(_insert_statement(guarded, row), list(row.values()))
                conn.execute("SET session_replication_role = origin")
                change = guarded.columns(new)
                refusal = _refusal(
                    conn,
                    sql.SQL("UPDATE {} SET ({}) = ROW({}) WHERE {} = %s").format(
                        sql.SQL(guarded.table),
                        sql.SQL(", ").join(map(sql.Identifier, change)),
                        sql.SQL(", ").join(sql.Placeholder() * len(change)),
                        sql.Identifier(guarded.key),
                    ),
                    [*change.values(), key],
                )
                expected = (
                    ""
                    if guarded.machine.allows(old, new)
                    else f"{guarded.name}_{guarded.column}_transition: {guarded.table}: "
                    f"{guarded.column} {old.value} -> {new.value} is not an allowed transition"
                )
                if refusal != expected:
                    wrong.append(f"{old.value} -> {new.value}: {refusal or 'accepted'}")
        if guarded.checks_insert:
            for state in states:
                row = {**guarded.base(uuid.uuid4()), **guarded.columns(state)}
                refusal = _refusal(conn, _insert_statement(guarded, row), list(row.values()))
                allowed = state in guarded.machine.initial
                if refusal.startswith(f"{guarded.name}_{guarded.column}_initial: ") == allowed:
                    wrong.append(f"insert {state.value}: {refusal or 'accepted'}")
    assert wrong == []


def test_a_machine_must_list_every_state_and_no_self_loop() -> None:
    with pytest.raises(ValueError, match="no transitions declared for"):
        StateMachine(QueueState, initial={QueueState.PENDING}, transitions={})
    with pytest.raises(ValueError, match="following itself"):
        StateMachine(
            DeadLetterStatus,
            initial={DeadLetterStatus.OPEN},
            transitions={s: {s} for s in DeadLetterStatus},
        )
    assert PHASES.sources(WorkflowPhase.RUNNING) == {
        WorkflowPhase.PENDING,
        WorkflowPhase.SUSPENDED,
        WorkflowPhase.FAILED,
        WorkflowPhase.ERROR,
    }
    assert STATES.sources_sql(TaskState.SKIPPED) == ["Pending"]
    with pytest.raises(InvalidTransition, match="TaskState Running -> Pending"):
        STATES.check(TaskState.RUNNING, TaskState.PENDING)
