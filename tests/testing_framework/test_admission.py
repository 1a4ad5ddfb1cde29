"""The admission webhook refuses a malformed WorkflowTest with a precise message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.kube import REPO_ROOT, Kube, KubeCluster
from tests.fixtures.operator import StartWebhook

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def _test(cases: list[dict[str, Any]], workflow: str = "diamond") -> str:
    return json.dumps(
        {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowTest",
            "metadata": {"name": "bad"},
            "spec": {"workflowRef": {"name": workflow}, "cases": cases},
        }
    )


def test_malformed_tests_are_refused_and_the_example_admitted(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    start_webhook()
    cluster.kubectl("apply", "-f", str(EXAMPLES / "taskdefinition.yaml"))
    cluster.kubectl("apply", "-f", str(EXAMPLES / "workflowdefinition.yaml"))
    refused = [
        (
            [{"name": "a", "mocks": {"splitt": {}}}],
            "spec.cases[0].mocks.splitt: mocks task 'splitt', which is not a task of "
            "WorkflowDefinition 'diamond' (tasks: split, left, right, join, report)",
        ),
        (
            [{"name": "a", "expect": {"assertions": ["workflow.phase =="]}}],
            "spec.cases[0].expect.assertions[0]: assertion: not a valid CEL expression: at 1:18",
        ),
        (
            [{"name": "a", "expect": {"tasks": {"joined": {"state": "Succeeded"}}}}],
            "spec.cases[0].expect.tasks.joined: expects task 'joined', which is not a task of "
            "WorkflowDefinition 'diamond'",
        ),
        (
            [{"name": "a", "expect": {"assertions": ["tasks.joined.phase == 'Succeeded'"]}}],
            "spec.cases[0].expect.assertions[0]: assertion: tasks.joined is not a task of this "
            "workflow",
        ),
        (
            [{"name": "a", "mocks": {"join": {"outputExpressions": {"total": "inputs."}}}}],
            "spec.cases[0].mocks.join.outputExpressions.total: output expression: not a valid "
            "CEL expression",
        ),
    ]
    for cases, message in refused:
        proc = cluster.run_kubectl("apply", "-f", "-", input=_test(cases))
        assert proc.returncode != 0, f"{cases} was admitted"
        assert message in proc.stderr, proc.stderr
    # A missing workflow is admitted with a warning, as every reference is (objects
    # applied together arrive in any order); `plait test run` refuses it.
    proc = cluster.run_kubectl("apply", "-f", "-", input=_test([{"name": "a"}], "ghost"))
    assert proc.returncode == 0, proc.stderr
    assert "WorkflowDefinition 'ghost' not found in this namespace" in proc.stderr
    cluster.kubectl("apply", "-f", str(EXAMPLES / "workflowtest.yaml"))
    listed = cluster.kubectl("get", "workflowtests", "-o", "name").split()
    assert sorted(listed) == [
        "workflowtest.plait.dev/bad",
        "workflowtest.plait.dev/diamond",
        "workflowtest.plait.dev/fanout",
        "workflowtest.plait.dev/report",
    ]
