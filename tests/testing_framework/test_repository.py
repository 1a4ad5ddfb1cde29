"""Testing framework repository against the real schema, connected as its own role."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from plait.testing_framework import repository as repo
from plait.testing_framework.states import CaseOutcome, TestRunStatus
from tests.fixtures.database import ConnectAs


@pytest.fixture
async def conn(connect_as: ConnectAs) -> psycopg.AsyncConnection:
    return await connect_as("testing_framework")


async def _run(conn: psycopg.AsyncConnection) -> repo.TestRun:
    definition, _ = await repo.upsert_test_definition(
        conn, "ci", "build-test", workflow_name="build", spec={"cases": [{"name": "a"}]}
    )
    run, created = await repo.start_test_run(
        conn,
        id=uuid.uuid4(),
        namespace="ci",
        test_name="build-test",
        test_version=definition.version,
        total_cases=2,
    )
    assert created
    assert run.status is TestRunStatus.RUNNING
    return run


async def test_run_with_a_failed_case_fails_and_cases_are_recorded_once(
    conn: psycopg.AsyncConnection,
) -> None:
    run = await _run(conn)
    again, created = await repo.start_test_run(
        conn, id=run.id, namespace="ci", test_name="build-test", test_version=1, total_cases=2
    )
    assert (again, created) == (run, False)
    first, created = await repo.record_case(conn, run.id, "a", CaseOutcome.PASSED)
    assert created
    same, created = await repo.record_case(conn, run.id, "a", CaseOutcome.FAILED)
    assert (same.id, same.outcome, created) == (first.id, CaseOutcome.PASSED, False)
    await repo.record_case(conn, run.id, "b", CaseOutcome.FAILED, details={"expected": 1})
    done = await repo.finish_test_run(conn, run.id)
    assert done is not None
    assert (done.status, done.passed_cases, done.failed_cases) == (TestRunStatus.FAILED, 1, 1)
    assert [r.case_name for r in await repo.results_of(conn, run.id)] == ["a", "b"]
    assert await repo.finish_test_run(conn, run.id) is None


async def test_passed_with_failures_is_rejected(conn: psycopg.AsyncConnection) -> None:
    run = await _run(conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="passed_means_no_failures"):
        await conn.execute(
            "UPDATE testing_framework_service.test_runs SET status = 'Passed', failed_cases = 1, "
            "finished_at = now() WHERE id = %s",
            (run.id,),
        )
