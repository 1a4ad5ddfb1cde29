"""Workflows run for real: Jobs on the control plane, state in PostgreSQL.

Tasks are simulated by kwok: each task's pod annotations (``sim.plait.dev/*``, through
``podMetadata``) decide its exit code, termination message (outputs) and duration.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e

FINAL = {"Succeeded", "Failed", "Cancelled", "Error"}


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def task(
    name: str,
    *,
    deps: list[str] | None = None,
    exit_code: int = 0,
    outputs: dict[str, Any] | None = None,
    duration: str = "0s",
    **extra: Any,
) -> dict[str, Any]:
    annotations = {
        "sim.plait.dev/exit-code": str(exit_code),
        "sim.plait.dev/duration": duration,
    }
    if outputs is not None:
        annotations["sim.plait.dev/message"] = json.dumps(outputs)
    return {
        "name": name,
        "template": {"image": "busybox", "podMetadata": {"annotations": annotations}},
        **({"dependencies": deps} if deps else {}),
        **extra,
    }


def submit(
    kube: Kube,
    name: str,
    tasks: list[dict[str, Any]],
    *,
    arguments: dict[str, Any] | None = None,
    **spec: Any,
) -> None:
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": name},
        "spec": {"tasks": tasks, **spec},
    }
    instance = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": f"{name}-run"},
        "spec": {"workflowRef": {"name": name}, "arguments": arguments or {}},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(definition))
    kube.kubectl("create", "-f", "-", input=json.dumps(instance))


def status(kube: Kube, instance: str) -> dict[str, Any]:
    out = kube.kubectl("get", "wfi", instance, "-o", "jsonpath={.status}")
    return dict(json.loads(out)) if out else {}


def wait_phase(
    kube: Kube, instance: str, phases: set[str] = FINAL, timeout: float = 90
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        nonlocal seen
        seen = status(kube, instance)
        return seen.get("phase") in phases

    try:
        wait_until(reached, timeout=timeout, what=f"{instance} to reach {sorted(phases)}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last status: {seen}") from None
    return seen


def attempts(dsn: str, instance: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT t.task_name, t.attempt, t.state, t.exit_code, t.outputs, t.message, t.job_name "
            "FROM task_execution_service.task_instances t "
            "JOIN workflow_orchestrator_service.workflow_instances w "
            "ON w.id = t.workflow_instance_id WHERE w.name = %s "
            "ORDER BY t.task_name, t.attempt",
            (instance,),
        ).fetchall()


def jobs(kube: Kube) -> dict[str, dict[str, Any]]:
    items = json.loads(kube.kubectl("get", "jobs", "-o", "json"))["items"]
    return {j["metadata"]["name"]: j for j in items}


def test_a_dag_runs_with_outputs_flowing_downstream(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "flow",
        [
            task("produce", outputs={"count": 20, "word": "hi"}, inputs={"base": "params.base"}),
            task(
                "double",
                deps=["produce"],
                outputs={"result": 40},
                inputs={"n": "tasks.produce.outputs.count * 2", "w": "tasks.produce.outputs.word"},
            ),
        ],
        parameters=[{"name": "base", "type": "integer", "default": 1}],
        arguments={"base": 7},
        outputs={"answer": "tasks.double.outputs.result", "seen": "tasks.produce.outputs.word"},
    )
    final = wait_phase(cluster, "flow-run")
    assert final["phase"] == "Succeeded", final
    assert final["progress"] == "2/2"
    assert final["counts"]["succeeded"] == 2
    rows = attempts(migrated_database, "flow-run")
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("double", 1, "Succeeded", {"result": 40}),
        ("produce", 1, "Succeeded", {"count": 20, "word": "hi"}),
    ]
    job = jobs(cluster)[rows[0][6]]
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (env["PLAIT_INPUT_N"], env["PLAIT_INPUT_W"]) == ("40", "hi")
    assert json.loads(env["PLAIT_INPUTS"]) == {"n": 40, "w": "hi"}
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("WorkflowInstance", "flow-run")
    with psycopg.connect(migrated_database) as conn:
        row = conn.execute(
            "SELECT outputs, inputs FROM workflow_orchestrator_service.workflow_instances"
        ).fetchone()
    assert row == ({"answer": 40, "seen": "hi"}, {"base": 7})
    listing = cluster.kubectl("get", "workflowinstances")
    assert re.search(r"flow-run\s+flow\s+Succeeded\s+2/2", listing), listing


def test_failures_are_retried_as_new_attempts_then_reported(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "flaky",
        [
            task(
                "boom",
                exit_code=3,
                outputs=None,
                retries={"limit": 2, "backoff": {"initialSeconds": 0}},
            ),
            task("after", deps=["boom"]),
        ],
    )
    final = wait_phase(cluster, "flaky-run")
    assert final["phase"] == "Failed"
    assert final["failure"]["task"] == "boom"
    assert final["failure"]["attempt"] == 3
    assert final["failure"]["exitCode"] == 3
    assert "task boom attempt 3 failed with exit code 3" in final["failure"]["message"]
    rows = attempts(migrated_database, "flaky-run")
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("after", 1, "Skipped", None),
        ("boom", 1, "Failed", 3),
        ("boom", 2, "Failed", 3),
        ("boom", 3, "Failed", 3),
    ]
    assert {r[6] for r in rows[1:]} <= set(jobs(cluster)), "one Job per attempt"
    assert final["counts"]["skipped"] == 1
    cond = next(c for c in final["conditions"] if c["type"] == "Succeeded")
    assert (cond["status"], cond["reason"]) == ("False", "Failed")


def test_a_task_past_its_timeout_is_stopped_and_the_run_fails(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(cluster, "slow", [task("sleepy", duration="60s", timeoutSeconds=1)])
    final = wait_phase(cluster, "slow-run")
    assert final["phase"] == "Failed"
    assert "timed out" in final["failure"]["message"]
    assert [(r[0], r[2]) for r in attempts(migrated_database, "slow-run")] == [
        ("sleepy", "TimedOut")
    ]


def test_a_task_definition_gives_its_retries_timeout_and_input_defaults(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    """What a TaskDefinition declares reaches the tasks that name it: its retry policy
    (retryOn included), its attempt timeout on the Job, and its input defaults in the
    container's environment; a task's own settings win."""
    start_operator()
    failing = {"sim.plait.dev/exit-code": "5", "sim.plait.dev/duration": "0s"}
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "TaskDefinition",
        "metadata": {"name": "flaky-step"},
        "spec": {
            "inputs": [{"name": "who"}, {"name": "mode", "default": "fast"}],
            "template": {"image": "busybox", "podMetadata": {"annotations": failing}},
            "retries": {"limit": 1, "backoff": {"initialSeconds": 0}},
            "timeoutSeconds": 45,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    submit(
        cluster,
        "defaults",
        [
            {"name": "inherits", "taskRef": {"name": "flaky-step"}, "inputs": {"who": "'a'"}},
            {
                "name": "overrides",
                "taskRef": {"name": "flaky-step"},
                "inputs": {"who": "'b'", "mode": "'slow'"},
                "retries": {"limit": 1, "retryOn": "OnError"},
                "timeoutSeconds": 7,
            },
        ],
    )
    final = wait_phase(cluster, "defaults-run")
    assert final["phase"] == "Failed"
    with psycopg.connect(migrated_database) as conn:
        rows = conn.execute(
            "SELECT task_name, attempt, state, exit_code, failure_cause, job_name "
            "FROM task_execution_service.task_instances ORDER BY task_name, attempt"
        ).fetchall()
    assert [r[:5] for r in rows] == [
        ("inherits", 1, "Failed", 5, "Failure"),
        ("inherits", 2, "Failed", 5, "Failure"),  # the definition's OnFailure retry
        ("overrides", 1, "Failed", 5, "Failure"),  # its own OnError: an exit is no error
    ]
    made = jobs(cluster)

    def job_of(name: str) -> tuple[int, dict[str, str]]:
        spec = made[name]["spec"]
        env = spec["template"]["spec"]["containers"][0]["env"]
        return spec["activeDeadlineSeconds"], {e["name"]: e.get("value") for e in env}

    deadline, env = job_of(rows[0][5])
    assert (deadline, env["PLAIT_INPUT_WHO"], env["PLAIT_INPUT_MODE"]) == (45, "a", "fast")
    deadline, env = job_of(rows[2][5])
    assert (deadline, env["PLAIT_INPUT_WHO"], env["PLAIT_INPUT_MODE"]) == (7, "b", "slow")


def test_depends_runs_a_handler_on_failure_and_the_run_succeeds(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "handled",
        [
            task("build", exit_code=2),
            task("ship", deps=["build"]),
            task(
                "rollback",
                deps=["build", "ship"],
                depends="tasks.build.phase == 'Failed'",
                inputs={"why": "tasks.build.phase"},
            ),
            task("audit", deps=["build"], depends="tasks.build.phase == 'Succeeded'"),
        ],
    )
    final = wait_phase(cluster, "handled-run")
    assert final["phase"] == "Succeeded", final
    rows = {r[0]: (r[2], r[5]) for r in attempts(migrated_database, "handled-run")}
    assert rows == {
        "build": ("Failed", "Error"),  # kwok's container reason
        "ship": ("Skipped", "upstream task build did not succeed"),
        "rollback": ("Succeeded", None),
        "audit": ("Skipped", "depends: \"tasks.build.phase == 'Succeeded'\" is false"),
    }


def test_when_false_skips_a_branch_and_the_rest_runs(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "branch",
        [
            task("start", outputs={"env": "dev"}),
            task("deploy", deps=["start"], when="tasks.start.outputs.env == 'prod'"),
            task("finish", deps=["deploy"]),
        ],
    )
    final = wait_phase(cluster, "branch-run")
    assert final["phase"] == "Succeeded"
    rows = {r[0]: r for r in attempts(migrated_database, "branch-run")}
    assert rows["deploy"][2] == "Skipped"
    assert "is false" in rows["deploy"][5]
    assert rows["finish"][2] == "Succeeded"


def test_cancel_stops_running_tasks(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "long",
        [task("forever", duration="300s"), task("next", deps=["forever"])],
        onExit=task("report"),
    )
    wait_phase(cluster, "long-run", {"Running"})
    wait_until(
        lambda: attempts(migrated_database, "long-run")[0][2] == "Running",
        timeout=30,
        what="the task to run",
    )
    cluster.kubectl("patch", "wfi", "long-run", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    final = wait_phase(cluster, "long-run")
    assert final["phase"] == "Cancelled"
    rows = attempts(migrated_database, "long-run")
    assert [(r[0], r[2], r[5]) for r in rows] == [
        ("forever", "Cancelled", "the workflow was cancelled"),
        ("next", "Skipped", "not started: the workflow was cancelled"),
        ("report", "Skipped", "not started: the workflow was cancelled"),
    ]
    # Nothing of a finished run is left pending: the counts add up to the total.
    assert final["counts"] == {
        "total": 3,
        "pending": 0,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "skipped": 2,
        "cancelled": 1,
    }
    assert final["progress"] == "3/3"
    wait_until(lambda: not jobs(cluster), timeout=30, what="the Job to be deleted")


def test_suspend_holds_new_tasks_and_resume_continues(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(cluster, "pause", [task("first", duration="3s"), task("second", deps=["first"])])
    wait_phase(cluster, "pause-run", {"Running"})
    cluster.kubectl("patch", "wfi", "pause-run", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    wait_phase(cluster, "pause-run", {"Suspended"})
    wait_until(
        lambda: attempts(migrated_database, "pause-run")[0][2] == "Succeeded",
        timeout=30,
        what="the running task to finish",
    )
    assert [r[0] for r in attempts(migrated_database, "pause-run")] == ["first"]
    cluster.kubectl("patch", "wfi", "pause-run", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    final = wait_phase(cluster, "pause-run")
    assert final["phase"] == "Succeeded"
    assert [r[0] for r in attempts(migrated_database, "pause-run")] == ["first", "second"]


def test_deleting_an_instance_cancels_it_and_keeps_its_history(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(cluster, "gone", [task("forever", duration="300s")])
    wait_until(
        lambda: (
            bool(attempts(migrated_database, "gone-run"))
            and attempts(migrated_database, "gone-run")[0][2] == "Running"
        ),
        timeout=30,
        what="the task to run",
    )
    cluster.kubectl("delete", "wfi", "gone-run", "--wait=true", "--timeout=60s")

    def phase() -> tuple[str, ...] | None:
        with psycopg.connect(migrated_database) as conn:
            return conn.execute(
                "SELECT phase FROM workflow_orchestrator_service.workflow_instances"
            ).fetchone()

    # No finalizer holds the object: the run is cancelled as the watch reports the deletion.
    wait_until(lambda: phase() == ("Cancelled",), timeout=30, what="the run to be cancelled")
    assert [(r[0], r[2]) for r in attempts(migrated_database, "gone-run")] == [
        ("forever", "Cancelled")
    ]


def _check_every_run(kube: Kube, dsn: str, names: list[str], tasks_per_run: int) -> None:
    """Every run succeeded with exactly one attempt (and one Job) per task."""
    for name in names:
        assert status(kube, name).get("phase") == "Succeeded", (name, status(kube, name))
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(
            "SELECT count(*), count(DISTINCT job_name), max(attempt), "
            "count(*) FILTER (WHERE state <> 'Succeeded') "
            "FROM task_execution_service.task_instances"
        ).fetchone()
    assert counts == (len(names) * tasks_per_run, len(names) * tasks_per_run, 1, 0)
    all_jobs = jobs(kube)
    with psycopg.connect(dsn) as conn:
        recorded = {
            r[0] for r in conn.execute("SELECT job_name FROM task_execution_service.task_instances")
        }
    assert set(all_jobs) == recorded, "a Job without its attempt row, or the reverse"


#: SIGKILLs of the operator during the runs (then the last one is left to finish them).
REPEATED_KILLS = 12


def test_killing_the_operator_repeatedly_loses_and_repeats_nothing(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    rng = random.Random(7)
    operator = start_operator()
    chain = [
        task("a", duration="200ms"),
        task("b", deps=["a"], duration="200ms"),
        task("c", deps=["a"]),
        task("d", deps=["b", "c"]),
    ]
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "chain"},
        "spec": {"tasks": chain},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    names = [f"chain-{i}" for i in range(12)]
    for name in names:
        cluster.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "plait.dev/v1alpha1",
                    "kind": "WorkflowInstance",
                    "metadata": {"name": name},
                    "spec": {"workflowRef": {"name": "chain"}},
                }
            ),
        )
    kills = 0
    while kills < REPEATED_KILLS:
        time.sleep(rng.uniform(0.3, 1.5))
        operator.kill()
        kills += 1
        operator = start_operator()
        if all(status(cluster, n).get("phase") in FINAL for n in names):
            break
    for name in names:
        wait_phase(cluster, name, timeout=120)
    assert kills >= 3
    _check_every_run(cluster, migrated_database, names, tasks_per_run=4)


@pytest.mark.parametrize("sharing", ["--share-runs", "--no-share-runs"])
def test_two_operators_at_once_launch_nothing_twice(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, sharing: str
) -> None:
    """Sharing the runs (the default) or each advancing every run it sees."""
    start_operator(sharing)
    start_operator(sharing)
    fan = [task("root")] + [task(f"leaf{i}", deps=["root"]) for i in range(4)]
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "fan"},
        "spec": {"tasks": fan},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    names = [f"fan-{i}" for i in range(8)]
    for name in names:
        cluster.kubectl(
            "create",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "plait.dev/v1alpha1",
                    "kind": "WorkflowInstance",
                    "metadata": {"name": name},
                    "spec": {"workflowRef": {"name": "fan"}},
                }
            ),
        )
    for name in names:
        wait_phase(cluster, name)
    _check_every_run(cluster, migrated_database, names, tasks_per_run=5)


def plait_cli(kube: Kube, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "PLAIT_DATABASE_URL": dsn}
    return subprocess.run(
        [sys.executable, "-m", "plait", *args, "-n", kube.namespace],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_retry_reruns_the_failed_tasks_only_and_show_prints_the_dag(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    submit(
        cluster,
        "again",
        [
            task("ok", outputs={"n": 1}),
            task("flaky", deps=["ok"], exit_code=4),
            task("after", deps=["flaky"]),
        ],
    )
    first = wait_phase(cluster, "again-run")
    assert first["phase"] == "Failed"
    early = plait_cli(cluster, migrated_database, "instances", "retry", "flow-none")
    assert early.returncode == 1
    assert "not found" in early.stderr
    proc = plait_cli(cluster, migrated_database, "instances", "retry", "again-run")
    assert proc.returncode == 0, proc.stderr
    assert "retry 1 requested" in proc.stdout

    def retried() -> bool:
        return any(r[0] == "flaky" and r[1] == 2 for r in attempts(migrated_database, "again-run"))

    wait_until(retried, timeout=60, what="the second attempt of the failed task")
    final = wait_phase(cluster, "again-run")
    assert final["phase"] == "Failed"
    assert (final["failure"]["task"], final["failure"]["attempt"]) == ("flaky", 2)
    rows = [(r[0], r[1], r[2]) for r in attempts(migrated_database, "again-run")]
    assert rows == [
        ("after", 1, "Skipped"),
        ("after", 2, "Skipped"),
        ("flaky", 1, "Failed"),
        ("flaky", 2, "Failed"),
        ("ok", 1, "Succeeded"),
    ]
    with psycopg.connect(migrated_database) as conn:
        kept = conn.execute(
            "SELECT count(*) FROM task_execution_service.task_instances "
            "WHERE superseded_at IS NOT NULL"
        ).fetchone()
        retries = conn.execute(
            "SELECT retries FROM workflow_orchestrator_service.workflow_instances"
        ).fetchone()
    assert (kept, retries) == ((2,), (1,))
    shown = plait_cli(cluster, migrated_database, "instances", "show", "again-run")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("again-run  again v1  Failed  3/3")
    assert re.search(r"^ok\s+Succeeded\s+1\s+\S+s\s+\{\"n\": 1\}$", shown.stdout, re.M)
    assert re.search(r"^  └ flaky\s+Failed\s+1\s", shown.stdout, re.M)
    assert re.search(r"^    └ after\s+Skipped\s+1\s+-\s+upstream task flaky", shown.stdout, re.M)
    assert '"task": "flaky"' in shown.stdout
    suspended = plait_cli(cluster, migrated_database, "instances", "suspend", "again-run")
    assert suspended.returncode == 0
    assert cluster.kubectl("get", "wfi", "again-run", "-o", "jsonpath={.spec.suspend}") == "true"
