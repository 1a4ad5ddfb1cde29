"""Task logs: real containers' stdout and stderr, collected by the real operator.

Each test starts ``plait operator`` for its namespace and runs Plait's Job (as
``build_job`` makes it, with the run's labels and ``TRACEPARENT``) on the real node; the
operator follows the Pod's log into ``observability_logs``. What is checked is what a
person sees: ``plait logs --instance --task`` (click's runner against the test's real
database) after the Pod and Job are deleted, the truncation marker past the bound, lines in
the table while the container still runs, and a SIGKILLed operator resuming without
repeating or losing a line.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, cast

import psycopg
import pytest
from click.testing import CliRunner
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from plait.observability.cli import logs_command
from plait.resources import ContainerTemplate
from plait.task_execution.jobs import JobRequest, build_job
from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster, RealNode
from tests.fixtures.operator import OperatorProcess, StartOperator
from tests.task_execution.test_real_tasks import placement
from tests.workflow_orchestrator.test_execution import submit, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

MAX_BYTES = 2000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
def operator(
    plait_crds: KubeCluster, start_operator: StartOperator, monkeypatch: pytest.MonkeyPatch
) -> OperatorProcess:
    monkeypatch.setenv("PLAIT_TASK_LOG_MAX_BYTES", str(MAX_BYTES))
    return start_operator()


def run_job(kube: Kube, real_node: RealNode, task: str, script: str) -> tuple[str, str]:
    """Create Plait's Job for ``task`` on the real node; (run uid, Job name)."""
    uid = str(uuid.uuid4())
    manifest: dict[str, Any] = build_job(
        JobRequest(
            namespace=kube.namespace,
            instance_name="logged",
            instance_uid=uid,
            task=task,
            attempt=1,
            template=ContainerTemplate.model_validate(
                {"image": real_node.busybox, "command": ["sh", "-c", script]}
            ),
            inputs={},
            traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01",
        )
    )
    # No WorkflowInstance owns it (the garbage collector would delete an orphan).
    del manifest["metadata"]["ownerReferences"]
    pod_spec = manifest["spec"]["template"]["spec"]
    pod_spec["nodeSelector"] = real_node.node_selector
    pod_spec["tolerations"] = [
        {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
        for t in real_node.tolerations
    ]
    kube.batch.create_namespaced_job(kube.namespace, cast(client.V1Job, manifest))
    return uid, manifest["metadata"]["name"]


def job_finished(kube: Kube, name: str) -> Callable[[], bool]:
    def check() -> bool:
        status = kube.batch.read_namespaced_job(name, kube.namespace).status
        conditions = (status.conditions if status else None) or []
        return any(c.type in ("Complete", "Failed") and c.status == "True" for c in conditions)

    return check


def delete_job_and_pod(kube: Kube, name: str) -> None:
    kube.batch.delete_namespaced_job(name, kube.namespace, propagation_policy="Background")

    def gone() -> bool:
        pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={name}")
        try:
            kube.batch.read_namespaced_job(name, kube.namespace)
        except ApiException as exc:
            return exc.status == 404 and not pods.items
        return False

    wait_until(gone, timeout=60, what=f"Job {name} and its Pod deleted")


def stored(dsn: str, uid: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(level, message, attributes) of the run's task records, in order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT level, message, attributes FROM observability_service.observability_logs "
            "WHERE workflow_instance_id = %s AND component = 'task' "
            "ORDER BY time, (attributes->>'seq')::bigint",
            (uid,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def plait_logs(dsn: str, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        logs_command, [*args, "-o", "json"], env={"PLAIT_DATABASE_URL_OBSERVABILITY": dsn}
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def test_stdout_and_stderr_outlive_the_pod_and_plait_logs_shows_them(
    operator: OperatorProcess, kube: Kube, real_node: RealNode, component_dsns: dict[str, str]
) -> None:
    script = (
        'for i in 1 2 3; do echo "out $i"; sleep 0.1; echo "err $i" >&2; sleep 0.1; done; '
        "printf 'naïve ünïcode\\n'; printf 'nul\\000byte\\n'"
    )
    uid, job = run_job(kube, real_node, "shout", script)
    other_uid, other_job = run_job(kube, real_node, "other", "echo not this task")
    dsn = component_dsns["observability"]
    expected = ["out 1", "err 1", "out 2", "err 2", "out 3", "err 3", "naïve ünïcode"]
    expected.append("nul\ufffdbyte")  # PostgreSQL's text holds no NUL
    wait_until(job_finished(kube, job), timeout=120, what=f"Job {job} to finish")
    wait_until(lambda: len(stored(dsn, uid)) == len(expected), timeout=30, what="8 lines stored")
    wait_until(lambda: len(stored(dsn, other_uid)) == 1, timeout=60, what="the other task's line")
    delete_job_and_pod(kube, job)
    delete_job_and_pod(kube, other_job)

    records = plait_logs(dsn, "--instance", uid, "--task", "shout", "-n", kube.namespace)
    assert [r["message"] for r in records] == expected
    first = records[0]
    assert first["component"] == "task"
    assert first["level"] == "INFO"
    assert first["workflow_instance_id"] == uid
    assert first["namespace"] == kube.namespace
    assert (first["trace_id"], first["span_id"]) == (TRACE_ID, SPAN_ID)
    assert first["task"] == "shout"
    assert first["attempt"] == 1
    assert first["object"] == "logged"
    assert first["container"] == "main"
    assert first["job"] == job
    assert [r["seq"] for r in records] == list(range(1, len(expected) + 1))
    # By the run's name too, and --task keeps the other task out.
    by_name = plait_logs(dsn, "--instance", "logged", "-n", kube.namespace, "--task", "other")
    assert [r["message"] for r in by_name] == ["not this task"]


def test_output_past_the_bound_is_truncated_with_a_marker(
    operator: OperatorProcess, kube: Kube, real_node: RealNode, component_dsns: dict[str, str]
) -> None:
    # 200 lines of 40 characters: 8000 bytes, four times the bound.
    script = "i=0; while [ $i -lt 200 ]; do printf 'line %03d %s\\n' $i " + "x" * 31 + "; "
    script += "i=$((i+1)); done"
    uid, job = run_job(kube, real_node, "chatty", script)
    dsn = component_dsns["observability"]
    wait_until(job_finished(kube, job), timeout=120, what=f"Job {job} to finish")

    def marked() -> bool:
        return any(a.get("truncated") for _, _, a in stored(dsn, uid))

    wait_until(marked, timeout=30, what="the truncation marker")
    url = f"http://127.0.0.1:{operator.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        exposition = response.read().decode()
    assert "\nplait_task_log_truncations_total 1.0\n" in exposition
    assert "\nplait_task_log_lines_total 51.0\n" in exposition  # 50 lines and the marker
    delete_job_and_pod(kube, job)
    records = plait_logs(dsn, "--instance", uid, "--task", "chatty")
    *lines, marker = records
    assert sum(len(r["message"].encode()) for r in lines) == MAX_BYTES
    assert [r["message"] for r in lines[:50]] == [f"line {i:03d} " + "x" * 31 for i in range(50)]
    assert len(lines) == 50  # 50 whole lines of 40 bytes fill it: the 51st is cut to nothing
    assert marker["level"] == "WARNING"
    assert marker["truncated"] is True
    assert "truncated" in marker["message"]
    assert str(MAX_BYTES) in marker["message"]


def test_lines_are_stored_while_the_task_runs_and_a_stopped_operator_resumes(
    operator: OperatorProcess,
    start_operator: StartOperator,
    kube: Kube,
    real_node: RealNode,
    component_dsns: dict[str, str],
) -> None:
    uid, job = run_job(kube, real_node, "slow", "echo started; sleep 30; echo finished")
    dsn = component_dsns["observability"]
    wait_until(
        lambda: [m for _, m, _ in stored(dsn, uid)] == ["started"],
        timeout=60,
        what="the first line stored",
    )
    (pod,) = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"job-name={job}").items
    assert pod.status is not None
    assert pod.status.container_statuses
    state = pod.status.container_statuses[0].state
    assert state is not None
    assert state.running is not None, state
    assert state.terminated is None, state
    assert not job_finished(kube, job)()
    # A graceful stop does not wait for the stream to end (the task sleeps on), and the
    # next operator goes on from the stored line without repeating it.
    began = time.monotonic()
    operator.stop()
    assert time.monotonic() - began < 10
    start_operator()
    wait_until(job_finished(kube, job), timeout=60, what=f"Job {job} to finish")
    wait_until(
        lambda: [m for _, m, _ in stored(dsn, uid)] == ["started", "finished"],
        timeout=30,
        what="both lines",
    )


def test_a_killed_operator_resumes_without_repeating_or_losing_lines(
    plait_crds: KubeCluster,
    start_operator: StartOperator,
    kube: Kube,
    real_node: RealNode,
    component_dsns: dict[str, str],
) -> None:
    first = start_operator()
    script = 'i=0; while [ $i -lt 40 ]; do echo "tick $i"; i=$((i+1)); sleep 0.25; done'
    uid, job = run_job(kube, real_node, "ticks", script)
    dsn = component_dsns["observability"]
    wait_until(lambda: len(stored(dsn, uid)) >= 5, timeout=60, what="some lines stored")
    first.kill()
    before = len(stored(dsn, uid))
    assert before < 40
    start_operator()
    wait_until(job_finished(kube, job), timeout=60, what=f"Job {job} to finish")
    wait_until(lambda: len(stored(dsn, uid)) >= 40, timeout=30, what="every line stored")
    messages = [m for _, m, _ in stored(dsn, uid)]
    assert messages == [f"tick {i}" for i in range(40)]


def test_a_runs_task_logs_join_its_attempts_and_spans_after_the_run_is_deleted(
    plait_crds: KubeCluster,
    start_operator: StartOperator,
    kube: Kube,
    real_node: RealNode,
    component_dsns: dict[str, str],
    migrated_database: str,
) -> None:
    """Through a real run: the records carry the attempt's row id and the attempt's span."""
    start_operator()
    greet = {
        "name": "greet",
        "template": {
            "image": real_node.busybox,
            "command": ["sh", "-c", "echo hello from $PLAIT_TASK; sleep 0.1; echo to stderr >&2"],
        },
    }
    submit(kube, "chatter", [greet], **placement(real_node))
    assert wait_phase(kube, "chatter-run", timeout=120)["phase"] == "Succeeded"
    dsn = component_dsns["observability"]
    with psycopg.connect(migrated_database) as conn:
        row = conn.execute(
            "SELECT w.id, t.id FROM workflow_orchestrator_service.workflow_instances w "
            "JOIN task_execution_service.task_instances t ON t.workflow_instance_id = w.id "
            "WHERE w.name = 'chatter-run'"
        ).fetchone()
    assert row is not None
    run_uid, attempt_id = row
    wait_until(lambda: len(stored(dsn, str(run_uid))) == 2, timeout=30, what="two lines stored")
    kube.kubectl("delete", "wfi", "chatter-run", "--wait=true")
    wait_until(
        lambda: (
            not kube.core.list_namespaced_pod(
                kube.namespace, label_selector=f"plait.dev/instance-uid={run_uid}"
            ).items
        ),
        timeout=60,
        what="the run's Pods deleted",
    )

    records = plait_logs(dsn, "--instance", "chatter-run", "-n", kube.namespace, "--task", "greet")
    assert [r["message"] for r in records] == ["hello from greet", "to stderr"]
    with psycopg.connect(dsn) as conn:
        span = conn.execute(
            "SELECT trace_id, span_id FROM observability_service.observability_traces "
            "WHERE name = 'plait.task' AND workflow_instance_id = %s",
            (run_uid,),
        ).fetchone()
        linked = conn.execute(
            "SELECT DISTINCT task_instance_id, trace_id, span_id "
            "FROM observability_service.observability_logs "
            "WHERE workflow_instance_id = %s AND component = 'task'",
            (run_uid,),
        ).fetchall()
    assert span is not None
    assert linked == [(attempt_id, span[0], span[1])]
