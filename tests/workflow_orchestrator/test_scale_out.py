"""Several operator replicas sharing the runs, on the local control plane (tasks
simulated by kwok): the work is spread over the live replicas, and a replica SIGKILLed
in the middle has its runs taken over, with nothing lost and nothing done twice."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import OperatorProcess, StartOperator
from tests.workflow_orchestrator.test_execution import _check_every_run, status, task, wait_phase

pytestmark = pytest.mark.e2e

RUNS = 24


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def started_runs(operator: OperatorProcess) -> float:
    """The runs this replica started (plait_workflow_instances_started_total)."""
    url = f"http://127.0.0.1:{operator.health_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r"^plait_workflow_instances_started_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(v) for v in found)


def members_seen(operator: OperatorProcess) -> int:
    """How many members this replica last saw (its 'operator members:' log line)."""
    lines = re.findall(r"operator members: ([^(\"]*) \(this one", operator.output())
    return len(lines[-1].split(", ")) if lines else 0


def test_three_replicas_share_the_runs_and_take_over_from_one_killed(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operators = [start_operator("--share-runs") for _ in range(3)]
    wait_until(
        lambda: all(members_seen(o) == 3 for o in operators),
        timeout=60,
        what="each replica to see the three members",
    )
    chain = [
        task("a", duration="3s"),
        task("b", deps=["a"], duration="3s"),
        task("c", deps=["b"]),
    ]
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "chain"},
        "spec": {"tasks": chain},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    names = [f"chain-{i}" for i in range(RUNS)]
    runs = [
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowInstance",
            "metadata": {"name": name},
            "spec": {"workflowRef": {"name": "chain"}},
        }
        for name in names
    ]
    cluster.kubectl(
        "create", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": runs})
    )
    wait_until(
        lambda: sum(started_runs(o) for o in operators) == RUNS,
        timeout=120,
        what="every run to be started",
    )
    shares = [started_runs(o) for o in operators]
    assert all(share > 0 for share in shares), f"a replica started no run: {shares}"

    # Kill the replica with the most runs while they are at their first or second task.
    victim = operators[shares.index(max(shares))]
    unfinished = [n for n in names if status(cluster, n).get("phase") != "Succeeded"]
    assert unfinished, "the runs ended before the kill: nothing to take over"
    victim.kill()
    killed_at = time.monotonic()
    for name in names:
        wait_phase(cluster, name, timeout=180)
    taken_over_within = time.monotonic() - killed_at
    _check_every_run(cluster, migrated_database, names, tasks_per_run=3)
    survivors = [o for o in operators if o is not victim]
    assert all(members_seen(o) == 2 for o in survivors), "the survivors saw the dead one go"
    assert any("resumed" in o.output() for o in survivors), "no survivor took a run over"
    print(f"all runs ended {taken_over_within:.1f}s after the kill")
