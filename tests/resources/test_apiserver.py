"""The generated CRDs on a real kube-apiserver: accepted, enforced, explained.

These rules are checked by the apiserver itself (structural schema, CEL cost estimates,
CEL rules, printer columns), so only a real one can tell whether the CRDs are right.
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.kube import REPO_ROOT, Kube, KubeCluster

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube_with_crds(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def test_every_example_is_accepted_and_listed_by_category(kube_with_crds: Kube) -> None:
    kube = kube_with_crds
    kube.kubectl("apply", "-f", str(REPO_ROOT / "examples"))
    listed = kube.kubectl("get", "plait", "-o", "name").split()
    kinds = {name.split("/")[0] for name in listed}
    assert kinds == {
        "eventdefinition.plait.dev",
        "eventtrigger.plait.dev",
        "integration.plait.dev",
        "taskdefinition.plait.dev",
        "workflowdefinition.plait.dev",
        "workflowinstance.plait.dev",
        "workflowtest.plait.dev",
    }


def test_printer_columns(kube_with_crds: Kube) -> None:
    kube = kube_with_crds
    kube.kubectl("apply", "-f", str(REPO_ROOT / "examples"))
    header = kube.kubectl("get", "workflowinstances").splitlines()[0].split()
    assert header == ["NAME", "DEFINITION", "PHASE", "PROGRESS", "AGE", "DURATION"]


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            {
                "kind": "WorkflowDefinition",
                "spec": {
                    "tasks": [
                        {"name": "a", "taskRef": {"name": "x"}, "template": {"image": "busybox"}}
                    ]
                },
            },
            "spec.tasks[0]: Invalid value: exactly one of taskRef, template, waitForEvent, "
            "workflowRef or http",
        ),
        (
            {
                "kind": "WorkflowDefinition",
                "spec": {
                    "tasks": [
                        {"name": "a", "template": {"image": "busybox"}},
                        {"name": "a", "template": {"image": "busybox"}},
                    ]
                },
            },
            'spec.tasks[1]: Duplicate value: {"name":"a"}',
        ),
        (
            {
                "kind": "EventTrigger",
                "spec": {
                    "eventType": "x",
                    "schedule": {"cron": "* * * * *"},
                    "workflowRef": {"name": "w"},
                },
            },
            "exactly one of eventType or schedule must be set",
        ),
        (
            {"kind": "WorkflowInstance", "spec": {}},
            "spec.workflowRef: Required value",
        ),
        (
            {
                "kind": "WorkflowDefinition",
                "spec": {
                    "tasks": [{"name": "a", "template": {"image": "busybox"}}],
                    "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}],
                },
            },
            "a toleration with operator Exists has no value",
        ),
        (
            {
                "kind": "TaskDefinition",
                "spec": {
                    "template": {
                        "image": "busybox",
                        "tolerations": [{"key": "k", "tolerationSeconds": 5}],
                    }
                },
            },
            "tolerationSeconds is only allowed with effect NoExecute",
        ),
        (
            {"kind": "Integration", "spec": {"type": "http", "secretRef": {}}},
            "spec.secretRef.name: Required value",
        ),
    ],
)
def test_schema_and_cel_rules_reject_bad_objects(
    kube_with_crds: Kube, manifest: dict[str, object], message: str
) -> None:
    obj = {"apiVersion": "plait.dev/v1alpha1", "metadata": {"name": "bad"}, **manifest}
    proc = kube_with_crds.run_kubectl("create", "-f", "-", input=json.dumps(obj))
    assert proc.returncode != 0
    assert message in proc.stderr
    assert kube_with_crds.kubectl("get", "plait", "-o", "name").strip() == ""


def test_workflow_ref_is_immutable(kube_with_crds: Kube) -> None:
    kube = kube_with_crds
    kube.kubectl("apply", "-f", str(REPO_ROOT / "examples" / "workflowinstance.yaml"))
    name = kube.kubectl("get", "wfi", "-o", "jsonpath={.items[0].metadata.name}")
    proc = kube.run_kubectl(
        "patch", "wfi", name, "--type=merge", "-p", '{"spec":{"workflowRef":{"name":"other"}}}'
    )
    assert proc.returncode != 0
    assert "spec.workflowRef: Invalid value: workflowRef is immutable" in proc.stderr
    ref = kube.kubectl("get", "wfi", name, "-o", "jsonpath={.spec.workflowRef.name}")
    assert ref != "other"


def test_a_five_thousand_task_definition_fits_the_schema_and_cel_budget(
    kube_with_crds: Kube,
) -> None:
    tasks = [
        {
            "name": f"t{i}",
            "template": {"image": "busybox"},
            **({"dependencies": [f"t{i - 1}"]} if i else {}),
        }
        for i in range(5000)
    ]
    obj = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "big"},
        "spec": {"tasks": tasks},
    }
    kube_with_crds.kubectl("create", "-f", "-", input=json.dumps(obj))
    last = kube_with_crds.kubectl("get", "wfd", "big", "-o", "jsonpath={.spec.tasks[4999].name}")
    assert last == "t4999"


def test_explain_describes_the_spec(kube_with_crds: Kube) -> None:
    text = kube_with_crds.kubectl("explain", "workflowdefinition.spec.tasks")
    for field in ("dependencies", "when", "inputs", "retries", "timeoutSeconds", "template"):
        assert field in text
