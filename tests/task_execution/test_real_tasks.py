"""Runs of the real ``plait operator`` whose tasks are real containers on the real node.

What kwok can only pretend: the outputs a process writes to its termination message, the
exit code and message of one that fails, ``activeDeadlineSeconds`` killing a running
``sleep``, a cancelled run stopping its container within the grace period, the
``restricted`` Pod Security level on Pods a kubelet actually starts, and an Integration's
secret key as a file the container reads. The workflows choose the real node with
``spec.nodeSelector`` and ``spec.tolerations``; no ``sim.plait.dev/*`` annotation is set.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from plait.testing.node import REAL_NODE_NAME
from tests.controller.test_operator import wait_condition
from tests.fixtures.kube import Kube, KubeCluster, RealNode
from tests.fixtures.operator import StartOperator
from tests.workflow_orchestrator.test_execution import attempts, jobs, submit, wait_phase

pytestmark = [pytest.mark.e2e, pytest.mark.realnode]

#: Pods get the default 30 s to stop after SIGTERM; a container that honours it stops long
#: before, one that does not is killed at the end of it.
GRACE_SECONDS = 30
#: A shell that exits on SIGTERM: as PID 1 it would otherwise ignore the signal.
ON_TERM = "trap 'echo got SIGTERM; exit 143' TERM"


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def placement(real_node: RealNode) -> dict[str, Any]:
    """The workflow-wide nodeSelector and tolerations that put every task on the real node."""
    tolerations = [
        {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect}
        for t in real_node.tolerations
    ]
    selector = {"nodeSelector": real_node.node_selector} if real_node.node_selector else {}
    return {**selector, "tolerations": tolerations}


def shell(real_node: RealNode, name: str, script: str, **extra: Any) -> dict[str, Any]:
    """A task running ``script`` with busybox's sh, under Plait's restricted defaults."""
    template = {"image": real_node.busybox, "command": ["sh", "-c", script]}
    return {"name": name, "template": template, **extra}


def pods_of(kube: Kube, job: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", "pods", "-l", f"job-name={job}", "-o", "json")
    return list(json.loads(out)["items"])


def running_pod(kube: Kube, dsn: str, instance: str, log_line: str) -> dict[str, Any]:
    """The only task's Pod once its container has printed ``log_line``."""
    found: list[dict[str, Any]] = []

    def printed() -> bool:
        rows = attempts(dsn, instance)
        if not rows:
            return False
        pods = pods_of(kube, rows[0][6])
        if not pods or pods[0]["status"].get("phase") != "Running":
            return False
        found[:] = pods
        name = pods[0]["metadata"]["name"]
        return log_line in kube.kubectl("logs", name, check=False)

    wait_until(printed, timeout=90, what=f"{instance}'s container to print {log_line!r}")
    return found[0]


def test_outputs_are_what_the_container_wrote_and_flow_downstream(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    # Kubernetes expands $(PLAIT_TASK) itself and turns $$$$ into the shell's $$ (sh is PID 1).
    add = shell(
        real_node,
        "add",
        'printf \'{"sum": %d, "host": "%s", "task": "%s", "pid": %d}\''
        ' $((PLAIT_INPUT_A + PLAIT_INPUT_B)) "$(hostname)" "$(PLAIT_TASK)" $$$$'
        " > /dev/termination-log",
        inputs={"a": "params.a", "b": "20"},
    )
    double = shell(
        real_node,
        "double",
        "printf '{\"twice\": %d}' $((PLAIT_INPUT_N * 2)) > /dev/termination-log",
        dependencies=["add"],
        inputs={"n": "tasks.add.outputs.sum"},
    )
    submit(
        cluster,
        "sums",
        [add, double],
        parameters=[{"name": "a", "type": "integer"}],
        arguments={"a": 22},
        outputs={"answer": "tasks.double.outputs.twice"},
        **placement(real_node),
    )
    final = wait_phase(cluster, "sums-run", timeout=120)
    assert final["phase"] == "Succeeded", final
    rows = {row[0]: row for row in attempts(migrated_database, "sums-run")}
    add_pods = pods_of(cluster, rows["add"][6])
    # The container's hostname is its Pod's name: only a real process could have known it.
    host = add_pods[0]["metadata"]["name"]
    assert rows["add"][4] == {"sum": 42, "host": host, "task": "add", "pid": 1}
    assert rows["double"][4] == {"twice": 84}
    if real_node.local:
        assert add_pods[0]["spec"]["nodeName"] == REAL_NODE_NAME


def test_a_non_zero_exit_and_its_message_fail_the_attempt(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    script = "echo 'disk full: /data' > /dev/termination-log; exit 7"
    submit(cluster, "broken", [shell(real_node, "write", script)], **placement(real_node))
    final = wait_phase(cluster, "broken-run", timeout=120)
    assert final["phase"] == "Failed"
    (row,) = attempts(migrated_database, "broken-run")
    assert (row[2], row[3], row[4]) == ("Failed", 7, None)
    assert row[5] == "disk full: /data\n", "the message as the process wrote it"
    assert final["failure"]["exitCode"] == 7
    assert "task write attempt 1 failed with exit code 7" in final["failure"]["message"]
    assert "disk full: /data" in final["failure"]["message"]


def test_retry_on_retries_a_container_that_cannot_start_and_not_a_failing_exit(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    """A command that does not exist is an error around the task (runc cannot start it);
    a process that exits non-zero is the task's own failure: ``retryOn: OnError`` retries
    only the first, and the cause is recorded for each attempt."""
    start_operator()
    on_error = {"limit": 1, "retryOn": "OnError", "backoff": {"initialSeconds": 0}}
    missing = {
        "name": "missing",
        "template": {"image": real_node.busybox, "command": ["/no/such/program"]},
        "retries": on_error,
    }
    exits = shell(real_node, "exits", "exit 4", retries=on_error)
    submit(cluster, "causes", [missing, exits], **placement(real_node))
    final = wait_phase(cluster, "causes-run", timeout=120)
    assert final["phase"] == "Failed"
    with psycopg.connect(migrated_database) as conn:
        rows = conn.execute(
            "SELECT task_name, attempt, state, failure_cause, message "
            "FROM task_execution_service.task_instances ORDER BY task_name, attempt"
        ).fetchall()
    assert [r[:4] for r in rows] == [
        ("exits", 1, "Failed", "Failure"),
        ("missing", 1, "Failed", "Error"),
        ("missing", 2, "Failed", "Error"),
    ]
    assert "/no/such/program" in rows[1][4], rows[1][4]


def test_a_fan_out_over_a_containers_output_under_both_failure_policies(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    """The list comes from what a container wrote; each item's container computes from its
    own value, and the item whose value is "bad" exits 3. Continue at a ratio of 0.5 lets
    the fan-out succeed and hands the outputs down in item order (null for the failed
    item); Stop starts no item after the failure and fails the run naming it."""
    start_operator()
    listing = shell(
        real_node,
        "list",
        """printf '{"words": ["alpha", "bad", "gamma", "delta"]}' > /dev/termination-log""",
    )
    script = (
        '[ "$PLAIT_INPUT_WORD" = bad ] && { echo "cannot take $PLAIT_INPUT_WORD" >&2; exit 3; }; '
        'printf \'{"length": %d, "at": %d}\' "${#PLAIT_INPUT_WORD}" "$PLAIT_INPUT_AT" '
        "> /dev/termination-log"
    )

    def fan_out(policy: dict[str, Any]) -> list[dict[str, Any]]:
        each = shell(real_node, "each", script, dependencies=["list"])
        each["forEach"] = {"expression": "tasks.list.outputs.words", "parallelism": 1, **policy}
        each["inputs"] = {"word": "item", "at": "index"}
        return [listing, each]

    submit(
        cluster,
        "tolerant",
        fan_out({"failurePolicy": "Continue", "minSuccessRatio": 0.5}),
        outputs={"lengths": "tasks.each.outputs.map(o, o == null ? -1 : o.length)"},
        **placement(real_node),
    )
    final = wait_phase(cluster, "tolerant-run", timeout=180)
    assert final["phase"] == "Succeeded", final
    assert final["progress"] == "5/5"
    with psycopg.connect(migrated_database) as conn:
        outputs = conn.execute(
            "SELECT outputs FROM workflow_orchestrator_service.workflow_instances "
            "WHERE name = 'tolerant-run'"
        ).fetchone()
    assert outputs == ({"lengths": [5, -1, 5, 5]},)
    rows = {r[0]: r for r in attempts(migrated_database, "tolerant-run")}
    assert (rows["each[1]"][2], rows["each[1]"][3]) == ("Failed", 3)

    submit(cluster, "strict", fan_out({}), **placement(real_node))
    final = wait_phase(cluster, "strict-run", timeout=180)
    assert final["phase"] == "Failed"
    assert final["failure"]["message"].startswith(
        "task each[1] attempt 1 failed with exit code 3"
    ), final["failure"]
    states = {r[0]: r[2] for r in attempts(migrated_database, "strict-run")}
    assert states == {
        "list": "Succeeded",
        "each[0]": "Succeeded",
        "each[1]": "Failed",
        "each[2]": "Skipped",
        "each[3]": "Skipped",
    }


def test_the_task_timeout_kills_a_real_sleep(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    script = f"{ON_TERM}; echo sleeping; sleep 300 & wait"
    submit(
        cluster,
        "slow",
        [shell(real_node, "sleepy", script, timeoutSeconds=3)],
        **placement(real_node),
    )
    running_pod(cluster, migrated_database, "slow-run", "sleeping")
    started = time.monotonic()
    final = wait_phase(cluster, "slow-run", timeout=90)
    assert final["phase"] == "Failed"
    assert "timed out" in final["failure"]["message"]
    (row,) = attempts(migrated_database, "slow-run")
    assert row[2] == "TimedOut"
    # Ended by its deadline and the SIGTERM, not by sleep 300 nor by the grace period.
    assert time.monotonic() - started < GRACE_SECONDS
    wait_until(lambda: not pods_of(cluster, row[6]), timeout=30, what="the Pod to be gone")


def test_cancel_stops_the_running_container_within_its_grace_period(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    script = f"{ON_TERM}; echo working; sleep 300 & wait"
    submit(cluster, "long", [shell(real_node, "work", script)], **placement(real_node))
    pod = running_pod(cluster, migrated_database, "long-run", "working")
    name = pod["metadata"]["name"]
    cancelled = time.monotonic()
    cluster.kubectl("patch", "wfi", "long-run", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    final = wait_phase(cluster, "long-run", timeout=60)
    assert final["phase"] == "Cancelled"
    (row,) = attempts(migrated_database, "long-run")
    assert (row[2], row[5]) == ("Cancelled", "the workflow was cancelled")
    # The Job goes, its Pod with it: the kubelet stopped the container, which left on
    # SIGTERM well within the 30 s before a SIGKILL.
    gone = cluster.kubectl("get", "pod", name, "--ignore-not-found", "-o", "name")
    if gone:
        cluster.kubectl("wait", "--for=delete", f"pod/{name}", f"--timeout={GRACE_SECONDS}s")
    assert time.monotonic() - cancelled < GRACE_SECONDS
    assert row[6] not in jobs(cluster)


def test_a_run_in_a_restricted_namespace_runs_as_non_root(
    cluster: Kube,
    plait_crds: KubeCluster,
    real_node: RealNode,
    start_operator: StartOperator,
    migrated_database: str,
) -> None:
    plait_crds.kubectl(
        "label", "namespace", cluster.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    start_operator()
    script = (
        'printf \'{"uid": %d, "caps": "%s"}\' "$(id -u)"'
        ' "$(grep CapEff /proc/self/status | cut -f2)" > /dev/termination-log'
    )
    submit(cluster, "locked", [shell(real_node, "who", script)], **placement(real_node))
    final = wait_phase(cluster, "locked-run", timeout=120)
    assert final["phase"] == "Succeeded", final
    (row,) = attempts(migrated_database, "locked-run")
    # Plait's defaults: uid 65532 whatever busybox's USER (root), every capability dropped.
    assert row[4] == {"uid": 65532, "caps": "0000000000000000"}
    (pod,) = pods_of(cluster, row[6])
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_an_integration_secret_is_a_file_in_the_container_and_not_in_the_job(
    cluster: Kube, real_node: RealNode, start_operator: StartOperator, migrated_database: str
) -> None:
    token = f"tok-{secrets.token_hex(16)}"
    cluster.kubectl("create", "secret", "generic", "hook-secret", f"--from-literal=token={token}")
    integration = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "notifier"},
        "spec": {
            "type": "http",
            "settings": {"baseUrl": "https://hooks.example.com/plait"},
            "secretRef": {"name": "hook-secret"},
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(integration))
    start_operator()
    wait_condition(cluster, "integrations", "notifier", "Ready", "True")
    # Only the digest leaves the container: the value is never printed anywhere.
    script = (
        "f=/var/run/plait/integrations/notifier/token;"
        ' printf \'{"sha": "%s", "url": "%s"}\''
        ' "$(sha256sum "$f" | cut -d" " -f1)" "$PLAIT_INTEGRATION_NOTIFIER_BASE_URL"'
        " > /dev/termination-log"
    )
    notify = shell(real_node, "notify", script)
    notify["template"]["integrations"] = [{"name": "notifier"}]
    submit(cluster, "notify", [notify], **placement(real_node))
    final = wait_phase(cluster, "notify-run", timeout=120)
    assert final["phase"] == "Succeeded", final
    (row,) = attempts(migrated_database, "notify-run")
    assert row[4] == {
        "sha": hashlib.sha256(token.encode()).hexdigest(),
        "url": "https://hooks.example.com/plait",
    }
    job = jobs(cluster)[row[6]]
    assert token not in json.dumps(job)
    assert token not in json.dumps(pods_of(cluster, row[6]))
