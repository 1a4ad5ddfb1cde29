"""SQL of the testing framework: versioned tests, idempotent runs and case results."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.kernel import versions
from plait.testing_framework.states import CaseOutcome, TestRunStatus

__all__ = [
    "TestCaseResult",
    "TestDefinition",
    "TestRun",
    "finish_test_run",
    "record_case",
    "results_of",
    "start_test_run",
    "upsert_test_definition",
]

SCHEMA = "testing_framework_service"
_FINAL = (TestRunStatus.PASSED, TestRunStatus.FAILED, TestRunStatus.ERROR, TestRunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class TestDefinition:
    __test__ = False

    id: uuid.UUID
    namespace: str
    name: str
    version: int
    workflow_name: str
    spec: dict[str, Any]
    spec_hash: str
    k8s_uid: uuid.UUID | None
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class TestRun:
    __test__ = False

    id: uuid.UUID
    namespace: str
    test_name: str
    test_version: int
    status: TestRunStatus
    total_cases: int
    passed_cases: int
    failed_cases: int
    message: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", TestRunStatus(self.status))


@dataclass(frozen=True, slots=True)
class TestCaseResult:
    __test__ = False

    id: uuid.UUID
    test_run_id: uuid.UUID
    case_name: str
    outcome: CaseOutcome
    message: str | None
    details: dict[str, Any]
    workflow_instance_id: uuid.UUID | None
    duration_ms: int | None
    created_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "outcome", CaseOutcome(self.outcome))


async def upsert_test_definition(
    conn: AsyncConnection[Any],
    namespace: str,
    name: str,
    *,
    workflow_name: str,
    spec: Mapping[str, Any],
    k8s_uid: uuid.UUID | None = None,
) -> tuple[TestDefinition, bool]:
    return await versions.upsert_version(
        conn,
        TestDefinition,
        SCHEMA,
        "test_definitions",
        {"namespace": namespace, "name": name},
        spec,
        {"workflow_name": workflow_name, "k8s_uid": k8s_uid},
    )


async def start_test_run(
    conn: AsyncConnection[Any],
    *,
    id: uuid.UUID,
    namespace: str,
    test_name: str,
    test_version: int,
    total_cases: int,
) -> tuple[TestRun, bool]:
    """Create run ``id`` in Running unless it exists; (run, created)."""
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "INSERT INTO testing_framework_service.test_runs (id, namespace, test_name, "
            "test_version, status, total_cases, started_at) "
            "VALUES (%s, %s, %s, %s, 'Running', %s, now()) ON CONFLICT (id) DO NOTHING RETURNING *",
            (id, namespace, test_name, test_version, total_cases),
        )
        created = await cur.fetchone()
        if created is not None:
            return created, True
        await cur.execute("SELECT * FROM testing_framework_service.test_runs WHERE id = %s", (id,))
        existing = await cur.fetchone()
    assert existing is not None
    return existing, False


async def record_case(
    conn: AsyncConnection[Any],
    test_run_id: uuid.UUID,
    case_name: str,
    outcome: CaseOutcome,
    *,
    message: str | None = None,
    details: Mapping[str, Any] | None = None,
    workflow_instance_id: uuid.UUID | None = None,
    duration_ms: int | None = None,
) -> tuple[TestCaseResult, bool]:
    """Record a case's result once; a repeated report returns the first one."""
    async with conn.cursor(row_factory=class_row(TestCaseResult)) as cur:
        await cur.execute(
            "INSERT INTO testing_framework_service.test_case_results (test_run_id, case_name, "
            "outcome, message, details, workflow_instance_id, duration_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (test_run_id, case_name) DO NOTHING RETURNING *",
            (
                test_run_id,
                case_name,
                outcome.value,
                message,
                Jsonb(dict(details or {})),
                workflow_instance_id,
                duration_ms,
            ),
        )
        created = await cur.fetchone()
        if created is not None:
            return created, True
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_case_results "
            "WHERE test_run_id = %s AND case_name = %s",
            (test_run_id, case_name),
        )
        existing = await cur.fetchone()
    assert existing is not None
    return existing, False


async def results_of(conn: AsyncConnection[Any], test_run_id: uuid.UUID) -> list[TestCaseResult]:
    async with conn.cursor(row_factory=class_row(TestCaseResult)) as cur:
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_case_results WHERE test_run_id = %s "
            "ORDER BY case_name",
            (test_run_id,),
        )
        return await cur.fetchall()


async def finish_test_run(
    conn: AsyncConnection[Any],
    test_run_id: uuid.UUID,
    *,
    cancelled: bool = False,
    message: str | None = None,
) -> TestRun | None:
    """Close a running run with counts from its recorded cases; None if already final.

    The status follows the cases: Passed when none failed or errored, else Failed (Error
    when a case errored), Cancelled when asked.
    """
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "WITH c AS (SELECT count(*) FILTER (WHERE outcome = 'Passed') AS passed, "
            " count(*) FILTER (WHERE outcome = 'Failed') AS failed, "
            " count(*) FILTER (WHERE outcome = 'Error') AS errored "
            " FROM testing_framework_service.test_case_results WHERE test_run_id = %(id)s) "
            "UPDATE testing_framework_service.test_runs r SET "
            "passed_cases = c.passed, failed_cases = c.failed + c.errored, "
            "total_cases = greatest(r.total_cases, c.passed + c.failed + c.errored), "
            "status = CASE WHEN %(cancelled)s THEN 'Cancelled' WHEN c.errored > 0 THEN 'Error' "
            " WHEN c.failed > 0 THEN 'Failed' ELSE 'Passed' END, "
            "message = %(message)s, finished_at = now() "
            "FROM c WHERE r.id = %(id)s AND r.status <> ALL(%(finals)s) RETURNING r.*",
            {
                "id": test_run_id,
                "cancelled": cancelled,
                "message": message,
                "finals": [s.value for s in _FINAL],
            },
        )
        return await cur.fetchone()
