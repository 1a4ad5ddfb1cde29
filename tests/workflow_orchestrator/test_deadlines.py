"""Deadlines wake a run by themselves, and a finished run leaves no task unfinished.

The task outlives the workflow's ``timeoutSeconds`` (kwok keeps its pod Running for
``sim.plait.dev/duration``): nothing but the deadline can end the run, so the run ending
on time shows the deadline fired by itself, with one operator, after a restart, and with
two operators of which one dies.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import (
    FINAL,
    attempts,
    jobs,
    submit,
    task,
    wait_phase,
)

pytestmark = pytest.mark.e2e

#: How late after its deadline a run may end: the operator's reaction, not a poll interval.
LATENESS = 3.0
FINAL_COUNTS = ("succeeded", "failed", "skipped", "cancelled")


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def run_times(dsn: str, name: str) -> tuple[dt.datetime, dt.datetime]:
    """(started_at, finished_at) of a run, by the database's clock."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT started_at, finished_at FROM workflow_orchestrator_service.workflow_instances "
            "WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None
    started, finished = row
    assert started is not None
    assert finished is not None
    return started, finished


def wait_ended(dsn: str, name: str, timeout: float) -> None:
    """The run's final phase in PostgreSQL (the system of record), once it has one."""
    phase: list[str] = []

    def ended() -> bool:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT phase, wake_at FROM workflow_orchestrator_service.workflow_instances "
                "WHERE name = %s",
                (name,),
            ).fetchone()
        phase[:] = [f"{row}"]
        return row is not None and row[0] in FINAL

    try:
        wait_until(ended, timeout=timeout, what=f"{name} to end")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last (phase, wake_at): {phase}") from None


def wait_running(dsn: str, name: str) -> None:
    wait_until(
        lambda: any(r[2] == "Running" for r in attempts(dsn, name)),
        timeout=60,
        what=f"a task of {name} to run",
    )


def assert_ended_on_time(dsn: str, name: str, timeout: int) -> None:
    started, finished = run_times(dsn, name)
    late = (finished - started).total_seconds() - timeout
    assert 0 <= late <= LATENESS, f"{name} ended {late:.1f}s after its deadline"


def assert_nothing_left(final: dict[str, Any]) -> None:
    """Every task of a finished run is in a final state, and the counts add up."""
    counts = final["counts"]
    assert (counts["pending"], counts["running"]) == (0, 0), counts
    assert counts["total"] == sum(counts[k] for k in FINAL_COUNTS), counts
    done, total = final["progress"].split("/")
    assert done == total == str(counts["total"])


def slow_workflow(kube: Kube, name: str, timeout: int) -> None:
    """A task that runs far longer than the workflow may, a task after it, an exit task."""
    submit(
        kube,
        name,
        [task("slow", duration="120s"), task("after", deps=["slow"])],
        timeoutSeconds=timeout,
        onExit=task("report"),
    )


def test_the_workflow_timeout_ends_a_run_whose_task_is_still_running(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    slow_workflow(cluster, "late", timeout=5)
    wait_ended(migrated_database, "late-run", timeout=30)
    final = wait_phase(cluster, "late-run", timeout=30)
    assert final["phase"] == "Failed"
    assert final["failure"]["message"] == "the workflow timed out after 5s"
    assert_ended_on_time(migrated_database, "late-run", 5)
    assert [(r[0], r[2]) for r in attempts(migrated_database, "late-run")] == [
        ("after", "Skipped"),
        ("report", "Skipped"),
        ("slow", "Cancelled"),
    ]
    assert_nothing_left(final)
    assert (final["counts"]["cancelled"], final["counts"]["skipped"]) == (1, 2)
    wait_until(lambda: not jobs(cluster), timeout=30, what="the running Job to be deleted")


def test_the_timeout_fires_after_the_operator_restarts_while_waiting(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operator = start_operator()
    slow_workflow(cluster, "restarted", timeout=20)
    wait_running(migrated_database, "restarted-run")
    operator.kill()
    start_operator()
    with psycopg.connect(migrated_database) as conn:
        left = conn.execute(
            "SELECT extract(epoch FROM started_at + interval '20 seconds' - now())::float8 "
            "FROM workflow_orchestrator_service.workflow_instances"
        ).fetchone()
    assert left is not None
    assert left[0] > 2, "the new operator must be up before the deadline for this to test it"
    wait_ended(migrated_database, "restarted-run", timeout=50)
    final = wait_phase(cluster, "restarted-run", timeout=30)
    assert final["phase"] == "Failed"
    assert_ended_on_time(migrated_database, "restarted-run", 20)
    assert_nothing_left(final)


def test_the_timeout_fires_once_with_two_operators_when_one_dies(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    first = start_operator()
    start_operator()
    slow_workflow(cluster, "replicas", timeout=10)
    wait_running(migrated_database, "replicas-run")
    first.kill()
    wait_ended(migrated_database, "replicas-run", timeout=40)
    final = wait_phase(cluster, "replicas-run", timeout=30)
    assert final["phase"] == "Failed"
    assert_ended_on_time(migrated_database, "replicas-run", 10)
    assert_nothing_left(final)
    with psycopg.connect(migrated_database) as conn:
        wake = conn.execute(
            "SELECT wake_at FROM workflow_orchestrator_service.workflow_instances"
        ).fetchone()
    assert wake == (None,), "a finished run has no deadline left"


def test_a_retry_backoff_is_a_recorded_deadline_that_survives_a_restart(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operator = start_operator()
    submit(
        cluster,
        "backoff",
        [task("flaky", exit_code=1, retries={"limit": 1, "backoff": {"initialSeconds": 25}})],
    )
    wait_until(
        lambda: (1, "Failed") in {(r[1], r[2]) for r in attempts(migrated_database, "backoff-run")},
        timeout=90,
        what="the first attempt to fail",
    )
    with psycopg.connect(migrated_database) as conn:

        def recorded() -> tuple[Any, ...] | None:
            return conn.execute(
                "SELECT i.wake_at, t.finished_at FROM workflow_orchestrator_service"
                ".workflow_instances i JOIN task_execution_service.task_instances t "
                "ON t.workflow_instance_id = i.id WHERE i.wake_at IS NOT NULL"
            ).fetchone()

        wait_until(lambda: recorded() is not None, timeout=10, what="the retry's deadline")
        row = recorded()
    assert row is not None
    wake, failed_at = row
    assert wake - failed_at == dt.timedelta(seconds=25), "the deadline is the backoff's end"
    operator.kill()
    start_operator()
    assert dt.datetime.now(dt.UTC) < wake - dt.timedelta(seconds=2), (
        "the new operator must be up before the backoff ends for this to test it"
    )
    wait_until(
        lambda: len(attempts(migrated_database, "backoff-run")) == 2,
        timeout=40,
        what="the retry",
    )
    with psycopg.connect(migrated_database) as conn:
        retried = conn.execute(
            "SELECT created_at FROM task_execution_service.task_instances WHERE attempt = 2"
        ).fetchone()
    assert retried is not None
    late = (retried[0] - wake).total_seconds()
    assert 0 <= late <= LATENESS, f"the retry started {late:.1f}s after its backoff ended"
