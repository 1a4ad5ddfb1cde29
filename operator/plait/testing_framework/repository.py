"""SQL of the testing framework: versioned tests, idempotent runs and case results."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from plait.kernel import versions
from plait.kernel.database import Page, fetch_page
from plait.testing_framework.states import CaseOutcome, TestRunStatus

__all__ = [
    "TestCaseResult",
    "TestDefinition",
    "TestRun",
    "TestSummary",
    "begin_test_run",
    "delete_test_definition",
    "finish_test_run",
    "get_test_definition",
    "get_test_run",
    "in_case_order",
    "last_runs",
    "latest_test_definition",
    "record_case",
    "request_test_run",
    "results_of",
    "runs_of_test",
    "start_test_run",
    "stored_tests",
    "unfinished_test_runs",
    "upsert_test_definition",
    "workflow_following_tests",
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
    workflow_version: int | None = None
    requested_by: str = "cli"
    coverage: list[str] = field(default_factory=list)

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
    error: bool = False,
    message: str | None = None,
    coverage: list[str] | None = None,
) -> TestRun | None:
    """Close a running run with counts from its recorded cases; None if already final.

    The status follows the cases: Passed when none failed or errored, else Failed (Error
    when a case errored, or when ``error``: the run could not start), Cancelled when asked.
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
            "status = CASE WHEN %(cancelled)s THEN 'Cancelled' "
            " WHEN %(error)s OR c.errored > 0 THEN 'Error' "
            " WHEN c.failed > 0 THEN 'Failed' ELSE 'Passed' END, "
            "message = %(message)s, coverage = %(coverage)s, "
            "started_at = coalesce(r.started_at, now()), finished_at = now() "
            "FROM c WHERE r.id = %(id)s AND r.status <> ALL(%(finals)s) RETURNING r.*",
            {
                "id": test_run_id,
                "cancelled": cancelled,
                "error": error,
                "message": message,
                "coverage": Jsonb(list(coverage or [])),
                "finals": [s.value for s in _FINAL],
            },
        )
        return await cur.fetchone()


async def latest_test_definition(
    conn: AsyncConnection[Any], namespace: str, name: str
) -> TestDefinition | None:
    """The newest version of a WorkflowTest, None when it is not stored or deleted."""
    async with conn.cursor(row_factory=class_row(TestDefinition)) as cur:
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_definitions WHERE namespace = %s "
            "AND name = %s ORDER BY version DESC LIMIT 1",
            (namespace, name),
        )
        found = await cur.fetchone()
    return found if found is not None and found.deleted_at is None else None


async def get_test_definition(
    conn: AsyncConnection[Any], namespace: str, name: str, version: int
) -> TestDefinition | None:
    async with conn.cursor(row_factory=class_row(TestDefinition)) as cur:
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_definitions WHERE namespace = %s "
            "AND name = %s AND version = %s",
            (namespace, name, version),
        )
        return await cur.fetchone()


async def delete_test_definition(conn: AsyncConnection[Any], namespace: str, name: str) -> int:
    """Mark every version of the test deleted (its runs stay as history)."""
    cur = await conn.execute(
        "UPDATE testing_framework_service.test_definitions SET deleted_at = now() "
        "WHERE namespace = %s AND name = %s AND deleted_at IS NULL",
        (namespace, name),
    )
    return cur.rowcount


async def request_test_run(
    conn: AsyncConnection[Any],
    namespace: str,
    test_name: str,
    *,
    requested_by: str,
    workflow_version: int | None = None,
) -> TestRun | None:
    """A Pending run of the newest version of the test, for the operator to carry out.
    None when the test is not stored (or deleted), or (``definition-change``) when that
    workflow version already has its run. The status is the column's default (Pending),
    so a role granted INSERT on only these columns (the API's) can request runs and
    nothing else."""
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "INSERT INTO testing_framework_service.test_runs (namespace, test_name, "
            "test_version, requested_by, workflow_version) "
            "SELECT namespace, name, version, %s, %s "
            "FROM testing_framework_service.test_definitions WHERE namespace = %s AND name = %s "
            "AND deleted_at IS NULL ORDER BY version DESC LIMIT 1 "
            "ON CONFLICT DO NOTHING RETURNING *",
            (requested_by, workflow_version, namespace, test_name),
        )
        return await cur.fetchone()


async def get_test_run(conn: AsyncConnection[Any], id: uuid.UUID) -> TestRun | None:
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute("SELECT * FROM testing_framework_service.test_runs WHERE id = %s", (id,))
        return await cur.fetchone()


async def unfinished_test_runs(
    conn: AsyncConnection[Any], namespaces: Sequence[str] | None = None
) -> list[TestRun]:
    """Pending and Running runs (of these namespaces; None: all), oldest first."""
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "SELECT * FROM testing_framework_service.test_runs "
            "WHERE status IN ('Pending', 'Running') "
            "AND (%(all)s OR namespace = ANY(%(namespaces)s)) ORDER BY created_at",
            {"all": namespaces is None, "namespaces": list(namespaces or [])},
        )
        return await cur.fetchall()


async def begin_test_run(
    conn: AsyncConnection[Any], id: uuid.UUID, *, workflow_version: int, total_cases: int
) -> TestRun | None:
    """Pending -> Running, pinned to the workflow version its cases run; None when it is
    not Pending any more."""
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "UPDATE testing_framework_service.test_runs SET status = 'Running', "
            "started_at = now(), workflow_version = %s, total_cases = %s "
            "WHERE id = %s AND status = 'Pending' RETURNING *",
            (workflow_version, total_cases, id),
        )
        return await cur.fetchone()


async def workflow_following_tests(
    conn: AsyncConnection[Any], namespaces: Sequence[str] | None = None
) -> list[TestDefinition]:
    """The newest version of every test that is not deleted and sets
    ``runOnDefinitionChange``."""
    async with conn.cursor(row_factory=class_row(TestDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (namespace, name) * "
            "FROM testing_framework_service.test_definitions "
            "WHERE (%(all)s OR namespace = ANY(%(namespaces)s)) "
            "ORDER BY namespace, name, version DESC",
            {"all": namespaces is None, "namespaces": list(namespaces or [])},
        )
        rows = await cur.fetchall()
    return [r for r in rows if r.deleted_at is None and r.spec.get("runOnDefinitionChange") is True]


@dataclass(frozen=True, slots=True)
class TestSummary:
    """A stored WorkflowTest (its newest version) and its newest run, for listings."""

    __test__ = False

    definition: TestDefinition
    last_run: TestRun | None

    @property
    def cases(self) -> int:
        return len(self.definition.spec.get("cases") or ())


async def last_runs(
    conn: AsyncConnection[Any], tests: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], TestRun]:
    """(namespace, test name) -> its newest run, for the tests that have one; one index
    probe per test (test_runs_keyset), however many runs each has."""
    if not tests:
        return {}
    async with conn.cursor(row_factory=class_row(TestRun)) as cur:
        await cur.execute(
            "SELECT r.* FROM unnest(%s::text[], %s::text[]) AS t(namespace, name) "
            "CROSS JOIN LATERAL (SELECT * FROM testing_framework_service.test_runs r "
            " WHERE r.namespace = t.namespace AND r.test_name = t.name "
            " ORDER BY r.created_at DESC, r.id DESC LIMIT 1) r",
            ([ns for ns, _ in tests], [name for _, name in tests]),
        )
        rows = await cur.fetchall()
    return {(r.namespace, r.test_name): r for r in rows}


async def stored_tests(
    conn: AsyncConnection[Any], namespaces: Sequence[str], *, workflow: str | None = None
) -> list[TestSummary]:
    """The WorkflowTests stored in ``namespaces`` (those of ``workflow`` only, when given),
    not deleted, by namespace and name, each with its newest run."""
    async with conn.cursor(row_factory=class_row(TestDefinition)) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (namespace, name) * "
            "FROM testing_framework_service.test_definitions "
            "WHERE namespace = ANY(%(namespaces)s) "
            "AND (%(workflow)s::text IS NULL OR workflow_name = %(workflow)s) "
            "ORDER BY namespace, name, version DESC",
            {"namespaces": list(namespaces), "workflow": workflow},
        )
        found = [d for d in await cur.fetchall() if d.deleted_at is None]
    runs = await last_runs(conn, [(d.namespace, d.name) for d in found])
    return [TestSummary(d, runs.get((d.namespace, d.name))) for d in found]


async def runs_of_test(
    conn: AsyncConnection[Any],
    namespace: str,
    test_name: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[TestRun]:
    """A test's runs, newest first, a keyset page at a time (test_runs_keyset)."""
    return await fetch_page(
        conn,
        TestRun,
        sql.Identifier(SCHEMA, "test_runs"),
        {"namespace": namespace, "test_name": test_name},
        limit=limit,
        cursor=cursor,
    )


def in_case_order(
    definition: TestDefinition | None, results: Sequence[TestCaseResult]
) -> list[tuple[int | None, TestCaseResult]]:
    """The results in the order of the test's cases, each with its case's index (which
    names its WorkflowInstance), given the version of the test the run ran."""
    cases = (definition.spec.get("cases") if definition else None) or ()
    order = {c.get("name"): i for i, c in enumerate(cases) if isinstance(c, Mapping)}
    ranked = sorted(results, key=lambda r: (order.get(r.case_name, len(order)), r.case_name))
    return [(order.get(r.case_name), r) for r in ranked]
