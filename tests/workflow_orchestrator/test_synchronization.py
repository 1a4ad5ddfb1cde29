"""Locks across runs run by the real operator on the local control plane (tasks
simulated by kwok): two runs queued on one mutex, the second starting only after the
first ends, even when the first's operator is SIGKILLed while it holds the lock; and a
task-level semaphore."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, status, task, wait_phase

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def define(kube: Kube, name: str, tasks: list[dict[str, Any]], **spec: Any) -> None:
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": name},
        "spec": {"parameters": [{"name": "env", "type": "string"}], "tasks": tasks, **spec},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(definition))


def start(kube: Kube, name: str, workflow: str, env: str, **spec: Any) -> None:
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow}, "arguments": {"env": env}, **spec},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(instance))


def times(dsn: str, run: str) -> tuple[Any, Any]:
    """When the run's first task started, and when the run finished."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT min(t.created_at), w.finished_at "
            "FROM workflow_orchestrator_service.workflow_instances w "
            "JOIN task_execution_service.task_instances t ON t.workflow_instance_id = w.id "
            "WHERE w.name = %s GROUP BY w.finished_at",
            (run,),
        ).fetchone()
    assert row is not None, f"{run} has no task"
    return row[0], row[1]


def test_a_second_run_waits_for_the_mutex_even_across_an_operator_kill(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operator = start_operator()
    define(
        cluster,
        "deploy",
        [task("roll", duration="8s"), task("verify", deps=["roll"])],
        synchronization={"key": "'deploy-' + params.env"},
    )
    start(cluster, "deploy-a", "deploy", "prod")
    wait_until(
        lambda: status(cluster, "deploy-a").get("phase") == "Running",
        timeout=60,
        what="the first run to hold the lock and run",
    )
    start(cluster, "deploy-b", "deploy", "prod")
    start(cluster, "deploy-staging", "deploy", "staging")  # another lock: not held up
    wait_until(
        lambda: status(cluster, "deploy-b").get("waitingFor") == "lock deploy-prod (0 ahead)",
        timeout=60,
        what="the second run to wait for deploy-prod",
    )
    assert attempts(migrated_database, "deploy-b") == []
    operator.kill()  # while deploy-a holds the lock
    operator = start_operator()
    assert wait_phase(cluster, "deploy-a", timeout=120)["phase"] == "Succeeded"
    final_b = wait_phase(cluster, "deploy-b", timeout=120)
    assert final_b["phase"] == "Succeeded"
    assert "waitingFor" not in final_b
    assert wait_phase(cluster, "deploy-staging")["phase"] == "Succeeded"
    _, a_finished = times(migrated_database, "deploy-a")
    b_started, _ = times(migrated_database, "deploy-b")
    assert b_started >= a_finished, "the second run started only after the first ended"
    staging_started, _ = times(migrated_database, "deploy-staging")
    assert staging_started < a_finished, "a run of another lock did not wait"
    with psycopg.connect(migrated_database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM workflow_orchestrator_service.lock_requests"
        ).fetchone()
    assert left == (0,), "every lock was let go"


def test_a_task_semaphore_bounds_attempts_across_runs(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    push = task("push", duration="3s", inputs={"env": "params.env"})
    push["synchronization"] = {"key": "'registry-' + inputs.env", "limit": 2}
    define(cluster, "publish", [push])
    runs = [f"publish-{i}" for i in range(4)]
    for name in runs:
        start(cluster, name, "publish", "eu")
    for name in runs:
        assert wait_phase(cluster, name, timeout=120)["phase"] == "Succeeded"
    with psycopg.connect(migrated_database) as conn:
        spans = conn.execute(
            "SELECT created_at, finished_at FROM task_execution_service.task_instances "
            "WHERE task_name = 'push'"
        ).fetchall()
    assert len(spans) == 4
    most = max(sum(1 for s, f in spans if s <= moment < f) for moment, _ in spans)
    assert most == 2, f"at most two pushes at once, and two did overlap: {spans}"
