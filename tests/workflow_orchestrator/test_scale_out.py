"""Several operator replicas sharing the runs, on the local control plane (tasks
simulated by kwok): the work is spread over the live replicas, and a replica SIGKILLed
in the middle has its runs taken over, with nothing lost and nothing done twice."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid

import psycopg
import pytest

from plait.testing._process import wait_until
from plait.workflow_orchestrator.members import owner_of
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


def test_a_run_never_recorded_is_handled_by_the_replica_it_passes_to(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    """A run created while a replica that then died owned it has no row and no status:
    no watch event will come for it, and resuming from PostgreSQL does not know it. The
    replica it passes to handles it when the division changes."""
    operator = start_operator("--share-runs")
    with psycopg.connect(migrated_database, autocommit=True) as conn:

        def members() -> list[tuple[str, str]]:
            return [
                (str(m), str(s))
                for m, s in conn.execute(
                    "SELECT member, scope FROM workflow_orchestrator_service.operator_members"
                ).fetchall()
            ]

        wait_until(lambda: len(members()) == 1, timeout=60, what="the replica's heartbeat")
        ((me, scope),) = members()

        def ghost_beats() -> None:
            conn.execute(
                "INSERT INTO workflow_orchestrator_service.operator_members (member, scope) "
                "VALUES ('ghost', %s) ON CONFLICT (member) DO UPDATE "
                "SET heartbeat_at = clock_timestamp()",
                (scope,),
            )

        ghost_beats()
        wait_until(lambda: members_seen(operator) == 2, timeout=30, what="the ghost member")
        definition = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": "one"},
            "spec": {"tasks": [task("a")]},
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
        ghosts: list[str] = []
        mine: list[str] = []
        for i in range(40):
            ghost_beats()
            name = f"run-{i}"
            created = json.loads(
                cluster.kubectl(
                    "create",
                    "-o",
                    "json",
                    "-f",
                    "-",
                    input=json.dumps(
                        {
                            "apiVersion": "plait.dev/v1alpha1",
                            "kind": "WorkflowInstance",
                            "metadata": {"name": name},
                            "spec": {"workflowRef": {"name": "one"}},
                        }
                    ),
                )
            )
            owner = owner_of(uuid.UUID(created["metadata"]["uid"]), sorted([me, "ghost"]))
            (ghosts if owner == "ghost" else mine).append(name)
            if ghosts and mine:
                break
        assert ghosts, "no run fell to the ghost"
        assert mine, "no run fell to the replica"

        def mine_done_while_the_ghost_lives() -> bool:
            ghost_beats()
            return status(cluster, mine[0]).get("phase") == "Succeeded"

        wait_until(mine_done_while_the_ghost_lives, timeout=60, what=f"{mine[0]} to succeed")
        assert status(cluster, ghosts[0]) == {}, "the ghost's run was handled while it lived"
        # The ghost stops beating: after its lease its run is this replica's.
    wait_phase(cluster, ghosts[0], timeout=60)
    _check_every_run(cluster, migrated_database, [*mine, *ghosts], tasks_per_run=1)
