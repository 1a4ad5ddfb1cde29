"""Sub-workflows (a task with ``workflowRef``) run by the real operator on the local
control plane, tasks simulated by kwok: the child is a WorkflowInstance owned by the
parent, its outputs flow downstream, and cancelling the parent cancels the child."""

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
    obj = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": name},
        "spec": {"tasks": tasks, **spec},
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(obj))


def run(kube: Kube, name: str, workflow: str) -> None:
    obj = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": workflow}},
    }
    kube.kubectl("create", "-f", "-", input=json.dumps(obj))


def child_of(kube: Kube, parent: str) -> dict[str, Any]:
    items = json.loads(kube.kubectl("get", "wfi", "-o", "json"))["items"]
    (child,) = [
        i
        for i in items
        if any(o["name"] == parent for o in i["metadata"].get("ownerReferences", []))
    ]
    return dict(child)


def test_a_sub_workflow_runs_as_a_child_and_its_outputs_flow_down(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    define(
        cluster,
        "deploy",
        [task("roll", outputs={"version": "v7"}, inputs={"env": "params.env"})],
        parameters=[{"name": "env", "type": "string"}],
        outputs={"released": "tasks.roll.outputs.version", "env": "params.env"},
    )
    call = {"name": "call", "dependencies": ["build"], "workflowRef": {"name": "deploy"}}
    call["inputs"] = {"env": "'prod-' + tasks.build.outputs.region"}
    define(
        cluster,
        "release",
        [
            task("build", outputs={"region": "eu"}),
            call,
            task("announce", deps=["call"], inputs={"what": "tasks.call.outputs.released"}),
        ],
        outputs={"released": "tasks.call.outputs.released", "env": "tasks.call.outputs.env"},
    )
    run(cluster, "release-1", "release")
    final = wait_phase(cluster, "release-1", timeout=120)
    assert final["phase"] == "Succeeded", final
    child = child_of(cluster, "release-1")
    assert child["spec"]["arguments"] == {"env": "prod-eu"}
    assert child["metadata"]["annotations"]["plait.dev/parent-task"] == "call"
    assert child["status"]["phase"] == "Succeeded"
    rows = {r[0]: r for r in attempts(migrated_database, "release-1")}
    assert (rows["call"][2], rows["call"][4], rows["call"][6]) == (
        "Succeeded",
        {"released": "v7", "env": "prod-eu"},
        child["metadata"]["name"],
    )
    assert rows["announce"][2] == "Succeeded"
    with psycopg.connect(migrated_database) as conn:
        outputs = conn.execute(
            "SELECT outputs FROM workflow_orchestrator_service.workflow_instances "
            "WHERE name = 'release-1'"
        ).fetchone()
    assert outputs == ({"released": "v7", "env": "prod-eu"},)


def test_cancelling_the_parent_cancels_the_sub_workflow(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    define(cluster, "slow", [task("wait", duration="120s")])
    define(cluster, "outer", [{"name": "inner", "workflowRef": {"name": "slow"}}])
    run(cluster, "outer-1", "outer")

    def child_running() -> bool:
        return (
            status(cluster, child_of(cluster, "outer-1")["metadata"]["name"]).get("phase")
            == "Running"
        )

    wait_until(child_running, timeout=60, what="the sub-workflow to run")
    child = child_of(cluster, "outer-1")["metadata"]["name"]
    cluster.kubectl("patch", "wfi", "outer-1", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    assert wait_phase(cluster, "outer-1")["phase"] == "Cancelled"
    assert wait_phase(cluster, child)["phase"] == "Cancelled"
    assert cluster.kubectl("get", "wfi", child, "-o", "jsonpath={.spec.cancel}") == "true"
    assert [r[2] for r in attempts(migrated_database, child)] == ["Cancelled"]
