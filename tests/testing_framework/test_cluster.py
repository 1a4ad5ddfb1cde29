"""WorkflowTests run in the cluster: each case a real WorkflowInstance whose mocked tasks
start no Job, judged by the checker of local runs; the same test gives the same case
results both ways."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from plait.testing._process import wait_until
from plait.testing_framework.cli import load, run_suite
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def _sim(exit_code: int = 0, outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """A container kwok simulates (exit code, termination message)."""
    annotations = {"sim.plait.dev/exit-code": str(exit_code), "sim.plait.dev/duration": "0s"}
    if outputs is not None:
        annotations["sim.plait.dev/message"] = json.dumps(outputs)
    return {"image": "busybox", "podMetadata": {"annotations": annotations}}


SHAPES_WORKFLOW = {
    "apiVersion": "plait.dev/v1alpha1",
    "kind": "WorkflowDefinition",
    "metadata": {"name": "shapes"},
    "spec": {
        "tasks": [
            {"name": "flip", "template": _sim(outputs={"result": "heads"})},
            {
                "name": "heads",
                "dependencies": ["flip"],
                "when": "tasks.flip.outputs.result == 'heads'",
                "template": _sim(),
            },
            {
                "name": "flaky",
                "dependencies": ["flip"],
                "template": _sim(),
                "retries": {"limit": 2, "backoff": {"initialSeconds": 1, "factor": 1}},
            },
        ],
        "onExit": {
            "name": "notify",
            "when": "workflow.phase == 'Failed'",
            "inputs": {"phase": "workflow.phase"},
            "template": _sim(),
        },
    },
}

SHAPES_TEST = {
    "apiVersion": "plait.dev/v1alpha1",
    "kind": "WorkflowTest",
    "metadata": {"name": "shapes"},
    "spec": {
        "workflowRef": {"name": "shapes"},
        "cases": [
            {
                "name": "heads-and-a-retry",
                "mocks": {
                    "flip": {"outputs": {"result": "heads"}},
                    "heads": {"outputs": {"seen": True}},
                    "flaky": {"failAttempts": 1, "exitCode": 3, "message": "transient"},
                    "notify": {},
                },
                "expect": {
                    "phase": "Succeeded",
                    "order": ["flip", "flaky"],
                    "tasks": {
                        "heads": {"state": "Succeeded", "outputs": {"seen": True}},
                        "flaky": {"state": "Succeeded", "attempts": 2},
                        "notify": {"state": "Skipped", "messageContains": "when:"},
                    },
                },
            },
            {
                "name": "tails-skips-heads",
                "mocks": {"flip": {"outputs": {"result": "tails"}}, "flaky": {}, "notify": {}},
                "expect": {
                    "phase": "Succeeded",
                    "tasks": {"heads": {"state": "Skipped", "messageContains": "when:"}},
                    "assertions": ["tasks.flaky.attempts == 1"],
                },
            },
            {
                "name": "gives-up-and-notifies",
                "mocks": {
                    "flip": {"outputs": {"result": "tails"}},
                    "flaky": {"exitCode": 2, "message": "still broken"},
                    "notify": {"outputExpressions": {"phase": "inputs.phase"}},
                },
                "expect": {
                    "phase": "Failed",
                    "failure": {
                        "task": "flaky",
                        "attempt": 3,
                        "exitCode": 2,
                        "messageContains": "still broken",
                    },
                    "tasks": {"notify": {"state": "Succeeded", "outputs": {"phase": "Failed"}}},
                },
            },
            {
                "name": "deliberately-wrong",
                "mocks": {
                    "flip": {"outputs": {"result": "heads"}},
                    "heads": {},
                    "flaky": {},
                    "notify": {},
                },
                "expect": {
                    "phase": "Failed",
                    "tasks": {"flaky": {"attempts": 5}, "heads": {"state": "Skipped"}},
                    "assertions": ["tasks.flip.outputs.result == 'tails'"],
                },
            },
        ],
    },
}


def _write(path: Path, *documents: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def _status(kube: Kube, name: str) -> dict[str, Any]:
    obj = json.loads(kube.kubectl("get", "workflowtest", name, "-o", "json"))
    return dict(obj.get("status") or {})


def _ready(kube: Kube, name: str) -> None:
    def ready() -> bool:
        conditions = _status(kube, name).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_until(ready, timeout=60, what=f"WorkflowTest {name} to be Ready")


def _cli(kube: Kube, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PLAIT_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "plait", "test", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _stored_results(dsn: str, run_id: str) -> dict[str, tuple[str, list[Any], str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT case_name, outcome, details FROM testing_framework_service.test_case_results "
            "WHERE test_run_id = %s",
            (run_id,),
        ).fetchall()
    return {name: (outcome, details["mismatches"], details.get("error")) for name, outcome,
            details in rows}  # fmt: skip


def _jobs(kube: Kube) -> list[str]:
    return [j.metadata.name for j in kube.batch.list_namespaced_job(kube.namespace).items]


def test_local_and_cluster_runs_of_a_test_give_the_same_case_results(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, tmp_path: Path
) -> None:
    path = _write(tmp_path / "shapes.yaml", SHAPES_WORKFLOW, SHAPES_TEST)
    local = {
        c.case: (
            c.outcome.value,
            [{"path": m.path, "expected": m.expected, "actual": m.actual} for m in c.mismatches],
            c.error,
        )
        for c in run_suite(load([path]))[0].cases
    }
    assert local["deliberately-wrong"][0] == "Failed"
    assert [v[0] for k, v in local.items() if k != "deliberately-wrong"] == ["Passed"] * 3

    start_operator()
    cluster.kubectl("apply", "-f", str(path))
    _ready(cluster, "shapes")
    done = _cli(cluster, migrated_database, "run", "shapes", "-n", cluster.namespace,
                "--junit", str(tmp_path / "junit.xml"))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # a case failed
    assert "  FAIL deliberately-wrong (Succeeded" in done.stdout, done.stdout
    assert "  PASS heads-and-a-retry (Succeeded" in done.stdout, done.stdout
    assert "        tasks.flaky.attempts: expected 5, got 1" in done.stdout, done.stdout
    assert "4 cases: 3 passed, 1 failed" in done.stdout, done.stdout
    assert "coverage: tasks run: 4/4" in done.stdout, done.stdout
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()

    status = _status(cluster, "shapes")
    last = status["lastRun"]
    assert (last["result"], last["total"], last["passed"], last["failed"]) == ("Failed", 4, 3, 1)
    assert last["definitionVersion"] == 1
    tested = next(c for c in status["conditions"] if c["type"] == "Tested")
    assert (tested["status"], tested["reason"]) == ("False", "Failed")
    columns = cluster.kubectl("get", "workflowtests", "shapes", "--no-headers")
    assert columns.split()[1:5] == ["shapes", "Failed", "3", "1"], columns

    stored = _stored_results(migrated_database, last["runId"])
    assert stored == {k: (o, m, e) for k, (o, m, e) in local.items()}
    assert _jobs(cluster) == []  # every task was mocked: not one Job
    with psycopg.connect(migrated_database) as conn:
        attempts = conn.execute(
            "SELECT t.task_name, t.attempt, t.state, t.exit_code, t.message "
            "FROM task_execution_service.task_instances t JOIN "
            "workflow_orchestrator_service.workflow_instances w ON w.id = t.workflow_instance_id "
            "WHERE w.name = %s ORDER BY t.task_name, t.attempt",
            (f"shapes-{last['runId'].replace('-', '')[:10]}-0",),
        ).fetchall()
    assert ("flaky", 1, "Failed", 3, "transient") in attempts, attempts
    assert ("flaky", 2, "Succeeded", 0, "transient") in attempts, attempts  # the mock's message
    assert ("flip", 1, "Succeeded", 0, "") in attempts, attempts


def test_unmocked_tasks_run_for_real_and_a_new_version_is_tested_again(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, tmp_path: Path
) -> None:
    workflow = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "half-mocked"},
        "spec": {
            "tasks": [
                {"name": "real", "template": _sim(outputs={"v": 7})},
                {
                    "name": "after",
                    "dependencies": ["real"],
                    "inputs": {"v": "tasks.real.outputs.v"},
                    "template": _sim(),
                },
            ]
        },
    }
    test = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowTest",
        "metadata": {"name": "half-mocked"},
        "spec": {
            "workflowRef": {"name": "half-mocked"},
            "runOnDefinitionChange": True,
            "cases": [
                {
                    "name": "doubles",
                    "mocks": {"after": {"outputExpressions": {"doubled": "inputs.v * 2"}}},
                    "expect": {
                        "phase": "Succeeded",
                        "tasks": {
                            "real": {"state": "Succeeded", "outputs": {"v": 7}},
                            "after": {"outputs": {"doubled": 14}},
                        },
                    },
                }
            ],
        },
    }
    start_operator()
    cluster.kubectl("apply", "-f", str(_write(tmp_path / "a.yaml", workflow, test)))

    def last_run(version: int) -> dict[str, Any] | None:
        last = _status(cluster, "half-mocked").get("lastRun") or {}
        if last.get("definitionVersion") == version and last.get("result") != "Running":
            return dict(last)
        return None

    wait_until(lambda: last_run(1) is not None, timeout=120, what="the test of version 1")
    first = last_run(1)
    assert first is not None
    assert (first["result"], first["passed"]) == ("Passed", 1), first
    jobs = _jobs(cluster)
    assert len(jobs) == 1, jobs  # the unmocked task ran; `after` did not
    assert "real" in jobs[0], jobs

    workflow["spec"]["tasks"][0]["template"] = _sim(outputs={"v": 8})  # type: ignore[index]
    cluster.kubectl("apply", "-f", str(_write(tmp_path / "b.yaml", workflow)))
    wait_until(lambda: last_run(2) is not None, timeout=120, what="the test of version 2")
    second = last_run(2)
    assert second is not None
    assert (second["result"], second["failed"]) == ("Failed", 1), second
    stored = _stored_results(migrated_database, second["runId"])
    assert stored["doubles"][1] == [
        {"path": "tasks.real.outputs.v", "expected": 7, "actual": 8},
        {"path": "tasks.after.outputs.doubled", "expected": 14, "actual": 16},
    ]


def test_a_case_started_by_an_event_trigger_runs_with_the_triggers_arguments(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, tmp_path: Path
) -> None:
    workflow = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "orders"},
        "spec": {
            "parameters": [{"name": "order", "type": "string"}],
            "tasks": [{"name": "check", "inputs": {"order": "params.order"}, "template": _sim()}],
        },
    }
    trigger = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "EventTrigger",
        "metadata": {"name": "on-order"},
        "spec": {
            "eventType": "example.order.created",
            "workflowRef": {"name": "orders"},
            "arguments": {"order": "'order ' + event.data.id"},
        },
    }
    test = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowTest",
        "metadata": {"name": "orders"},
        "spec": {
            "workflowRef": {"name": "orders"},
            "cases": [
                {
                    "name": "from-an-event",
                    "trigger": {"eventTrigger": "on-order", "event": {"data": {"id": "A-17"}}},
                    "mocks": {"check": {"outputExpressions": {"seen": "inputs.order"}}},
                    "expect": {"tasks": {"check": {"outputs": {"seen": "order A-17"}}}},
                }
            ],
        },
    }
    path = _write(tmp_path / "orders.yaml", workflow, trigger, test)
    local = run_suite(load([path]))[0].cases
    assert [c.outcome.value for c in local] == ["Passed"]
    start_operator()
    cluster.kubectl("apply", "-f", str(path))
    _ready(cluster, "orders")  # its EventTrigger is found (the operator keeps an index of them)
    done = _cli(cluster, migrated_database, "run", "orders", "-n", cluster.namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  PASS from-an-event (Succeeded" in done.stdout, done.stdout
    assert "(workflow orders version 1)" in done.stdout, done.stdout


def test_a_case_with_events_gets_them_in_the_cluster_and_no_other_run_does(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, tmp_path: Path
) -> None:
    workflow = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "approvals"},
        "spec": {
            "parameters": [{"name": "order", "type": "string", "default": "A-1"}],
            "tasks": [
                {"name": "prepare", "template": _sim()},
                {
                    "name": "approved",
                    "dependencies": ["prepare"],
                    "waitForEvent": {
                        "eventType": "example.approved",
                        "correlation": "event.data.order == params.order",
                    },
                },
                {
                    "name": "ship",
                    "dependencies": ["approved"],
                    "inputs": {"by": "tasks.approved.outputs.by"},
                    "template": _sim(),
                },
            ],
        },
    }
    test = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowTest",
        "metadata": {"name": "approvals"},
        "spec": {
            "workflowRef": {"name": "approvals"},
            "cases": [
                {
                    "name": "approved-by-ana",
                    "mocks": {
                        "prepare": {},
                        "ship": {"outputExpressions": {"shippedBy": "inputs.by"}},
                    },
                    "events": [
                        # not this order: it completes nothing
                        {
                            "type": "example.approved",
                            "afterSeconds": 4,
                            "data": {"order": "B-2", "by": "bob"},
                        },
                        {
                            "type": "example.approved",
                            "afterSeconds": 6,
                            "data": {"order": "A-1", "by": "ana"},
                        },
                    ],
                    "expect": {
                        "phase": "Succeeded",
                        "tasks": {
                            "approved": {"state": "Succeeded", "outputs": {"by": "ana"}},
                            "ship": {"outputs": {"shippedBy": "ana"}},
                        },
                        "order": ["prepare", "approved", "ship"],
                    },
                }
            ],
        },
    }
    path = _write(tmp_path / "approvals.yaml", workflow, test)
    local = run_suite(load([path]))[0].cases
    assert [c.outcome.value for c in local] == ["Passed"], local
    start_operator()
    cluster.kubectl("apply", "-f", str(path))
    _ready(cluster, "approvals")
    # A run of the same workflow, not a test's, waits for the same event type meanwhile.
    other = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": "real-order"},
        "spec": {"workflowRef": {"name": "approvals"}},
    }
    cluster.kubectl("apply", "-f", str(_write(tmp_path / "other.yaml", other)))

    def waiting() -> list[tuple[str, str]]:
        with psycopg.connect(migrated_database) as conn:
            rows = conn.execute(
                "SELECT s.task_name, s.status "
                "FROM workflow_orchestrator_service.workflow_event_subscriptions s "
                "JOIN workflow_orchestrator_service.workflow_instances i "
                "ON i.id = s.workflow_instance_id WHERE i.name = 'real-order'"
            ).fetchall()
        return [(str(t), str(s)) for t, s in rows]

    wait_until(lambda: waiting() == [("approved", "Waiting")], timeout=60,
               what="the other run to wait for its approval")  # fmt: skip
    done = _cli(cluster, migrated_database, "run", "approvals", "-n", cluster.namespace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  PASS approved-by-ana (Succeeded" in done.stdout, done.stdout
    assert waiting() == [("approved", "Waiting")]  # the test's events were not for it
