"""The test gate (WorkflowDefinition spec.testGate) in the cluster: a new version becomes
current for runs that name none only once the workflow's WorkflowTests pass on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import Kube, KubeCluster
from tests.fixtures.operator import StartOperator
from tests.testing_framework.test_cluster import _sim, _write

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def _workflow(answer: str) -> dict[str, Any]:
    """Version after version, only the workflow's output expression changes."""
    return {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "gated"},
        "spec": {
            "testGate": True,
            "tasks": [{"name": "pick", "template": _sim(outputs={"v": 21})}],
            "outputs": {"answer": answer},
        },
    }


TEST = {
    "apiVersion": "plait.dev/v1alpha1",
    "kind": "WorkflowTest",
    "metadata": {"name": "gated-answer"},
    "spec": {
        "workflowRef": {"name": "gated"},
        "cases": [
            {
                "name": "answers-42",
                "mocks": {"pick": {"outputs": {"v": 21}}},
                "expect": {"phase": "Succeeded", "outputs": {"answer": 42}},
            }
        ],
    },
}


def _definition_status(kube: Kube) -> dict[str, Any]:
    obj = json.loads(kube.kubectl("get", "workflowdefinition", "gated", "-o", "json"))
    return dict(obj.get("status") or {})


def _tests_passed(kube: Kube) -> dict[str, Any]:
    found = [
        c for c in _definition_status(kube).get("conditions") or [] if c["type"] == "TestsPassed"
    ]
    return dict(found[0]) if found else {}


def _wait_decided(kube: Kube, version: int, reason: str) -> dict[str, Any]:
    def decided() -> bool:
        tested = _tests_passed(kube)
        return tested.get("reason") == reason and f"version {version} " in tested.get("message", "")

    wait_until(decided, timeout=120, what=f"version {version} of gated to be {reason}")
    return _tests_passed(kube)


def _run(kube: Kube, tmp_path: Path, name: str, version: int | None = None) -> None:
    ref: dict[str, Any] = {"name": "gated"}
    if version is not None:
        ref["version"] = version
    run = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": name},
        "spec": {"workflowRef": ref},
    }
    kube.kubectl("apply", "-f", str(_write(tmp_path / f"{name}.yaml", run)))


def _ran(dsn: str, namespace: str, name: str) -> tuple[int, str, Any] | None:
    """The version a run was recorded against, its phase and its outputs."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT workflow_version, phase, outputs "
            "FROM workflow_orchestrator_service.workflow_instances "
            "WHERE namespace = %s AND name = %s",
            (namespace, name),
        ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), row[2])


def _finished(dsn: str, namespace: str, name: str) -> tuple[int, str, Any]:
    def ended() -> bool:
        found = _ran(dsn, namespace, name)
        return found is not None and found[1] in ("Succeeded", "Failed")

    wait_until(ended, timeout=120, what=f"run {name} to end")
    found = _ran(dsn, namespace, name)
    assert found is not None
    return found


def test_a_version_whose_tests_fail_is_not_used_by_new_runs_until_one_passes(
    cluster: Kube, start_operator: StartOperator, migrated_database: str, tmp_path: Path
) -> None:
    start_operator()
    ns = cluster.namespace
    cluster.kubectl(
        "apply",
        "-f",
        str(_write(tmp_path / "v1.yaml", TEST, _workflow("tasks.pick.outputs.v * 2"))),
    )
    tested = _wait_decided(cluster, 1, "Passed")
    assert tested["status"] == "True", tested
    assert tested["message"] == (
        "version 1 passed its tests: WorkflowTest gated-answer (1/1 cases); it is current"
    )
    assert _definition_status(cluster)["currentVersion"] == 1

    # Version 2 breaks the answer: its test fails, so it never becomes current.
    cluster.kubectl(
        "apply", "-f", str(_write(tmp_path / "v2.yaml", _workflow("tasks.pick.outputs.v * 3")))
    )
    tested = _wait_decided(cluster, 2, "Failed")
    assert tested["status"] == "False", tested
    assert tested["message"] == (
        "version 2 failed its tests: WorkflowTest 'gated-answer' case 'answers-42' failed: "
        "outputs.answer: expected 42, got 63; version 1 stays current"
    )
    status = _definition_status(cluster)
    assert (status["version"], status["currentVersion"]) == (2, 1)
    columns = cluster.kubectl("get", "workflowdefinitions", "gated", "--no-headers").split()
    assert columns[1:3] == ["2", "1"], columns

    _run(cluster, tmp_path, "unpinned-after-v2")
    assert _finished(migrated_database, ns, "unpinned-after-v2") == (1, "Succeeded", {"answer": 42})
    _run(cluster, tmp_path, "pinned-to-v2", version=2)  # a pinned run runs what it names
    assert _finished(migrated_database, ns, "pinned-to-v2") == (2, "Succeeded", {"answer": 63})

    # Version 3 fixes it: it passes and becomes current.
    cluster.kubectl(
        "apply", "-f", str(_write(tmp_path / "v3.yaml", _workflow("tasks.pick.outputs.v + 21")))
    )
    tested = _wait_decided(cluster, 3, "Passed")
    assert _definition_status(cluster)["currentVersion"] == 3
    _run(cluster, tmp_path, "unpinned-after-v3")
    assert _finished(migrated_database, ns, "unpinned-after-v3") == (3, "Succeeded", {"answer": 42})

    with psycopg.connect(migrated_database) as conn:
        gates = conn.execute(
            "SELECT d.version, g.state "
            "FROM workflow_orchestrator_service.workflow_definition_gates g "
            "JOIN workflow_orchestrator_service.workflow_definitions d ON d.id = g.definition_id "
            "WHERE d.name = 'gated' ORDER BY d.version"
        ).fetchall()
        runs = conn.execute(
            "SELECT workflow_version, status, requested_by "
            "FROM testing_framework_service.test_runs "
            "WHERE test_name = 'gated-answer' ORDER BY workflow_version"
        ).fetchall()
    assert gates == [(1, "Passed"), (2, "Failed"), (3, "Passed")]
    assert runs == [
        (1, "Passed", "definition-change"),
        (2, "Failed", "definition-change"),
        (3, "Passed", "definition-change"),
    ]


def test_a_gated_workflow_no_test_names_is_current_untested(
    cluster: Kube, start_operator: StartOperator, tmp_path: Path
) -> None:
    start_operator()
    cluster.kubectl(
        "apply", "-f", str(_write(tmp_path / "v1.yaml", _workflow("tasks.pick.outputs.v")))
    )
    tested = _wait_decided(cluster, 1, "NoTests")
    assert tested["status"] == "True", tested
    assert tested["message"] == (
        "no WorkflowTest names WorkflowDefinition 'gated': version 1 is current untested"
    )
    assert _definition_status(cluster)["currentVersion"] == 1
