"""The operator against the real control plane and PostgreSQL: resources become rows.

Each test runs its own ``plait operator`` process, scoped to the test's namespace and
connected to the test's own migrated database as the components' roles.
"""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
import yaml

from plait.testing._process import wait_until
from tests.fixtures.kube import REPO_ROOT, Kube, KubeCluster
from tests.fixtures.operator import StartOperator

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"
DEFINITION_KINDS = (
    "workflowdefinitions",
    "taskdefinitions",
    "eventdefinitions",
    "integrations",
    "eventtriggers",
)


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


#: What the example's containers compute, given to kwok's pods as their termination
#: message (kwok runs no container; examples/ run real ones on a real node).
SIMULATED = {
    "split": {"head": "kubernetes-na", "tail": "tive workflow"},
    "echo": {"length": 13},
    "join": {"total": 52},
}


def apply_examples(kube: Kube) -> None:
    """``kubectl apply -f examples/``, each task template with its outputs for kwok."""
    items = []
    documents = [
        d for p in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
    ]
    for obj in documents:
        spec = obj["spec"]
        templates = [(obj["metadata"]["name"], spec["template"])] if "template" in spec else []
        for task in [*spec.get("tasks", ()), *([spec["onExit"]] if "onExit" in spec else [])]:
            if "template" in task:
                templates.append((task["name"], task["template"]))
        for name, template in templates:
            if name in SIMULATED:
                message = json.dumps(SIMULATED[name])
                template["podMetadata"] = {"annotations": {"sim.plait.dev/message": message}}
        items.append(obj)
    kube.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                        "items": items}))  # fmt: skip


def get(kube: Kube, resource: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kube.kubectl("get", resource, name, "-o", "json")))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def warning_events(kube: Kube, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The Warning Events about the object ``name`` (of ``kind``), as kubectl lists them."""
    selector = f"involvedObject.name={name},type=Warning"
    if kind is not None:
        selector += f",involvedObject.kind={kind}"
    listed = kube.kubectl("get", "events", "--field-selector", selector, "-o", "json")
    return list(json.loads(listed)["items"])


def wait_condition(
    kube: Kube, resource: str, name: str, type_: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def check() -> bool:
        nonlocal found
        found = get(kube, resource, name)
        return condition(found, type_).get("status") == status

    try:
        wait_until(check, timeout=timeout, what=f"{resource}/{name} {type_}={status}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last seen: {json.dumps(found.get('status'))}") from None
    return found


def rows(dsn: str, query: str, *args: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, args).fetchall()


def all_names(kube: Kube, resource: str) -> list[str]:
    return kube.kubectl("get", resource, "-o", "jsonpath={.items[*].metadata.name}").split()


def test_examples_become_rows_with_ready_conditions(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    apply_examples(cluster)
    for resource in DEFINITION_KINDS:
        for name in all_names(cluster, resource):
            obj = wait_condition(cluster, resource, name, "Ready", "True")
            assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            assert "plait.dev/finalizer" in obj["metadata"]["finalizers"]
    for name in all_names(cluster, "workflowinstances"):
        obj = wait_condition(cluster, "workflowinstances", name, "Succeeded", "True")
        assert obj["status"]["phase"] == "Succeeded"
        assert obj["status"]["definitionVersion"] == 1
    ns = cluster.namespace
    assert rows(
        migrated_database,
        "SELECT name, version FROM workflow_orchestrator_service.workflow_definitions "
        "WHERE namespace = %s ORDER BY name",
        ns,
    ) == [("diamond", 1), ("fanout", 1), ("report", 1)]
    assert rows(
        migrated_database,
        "SELECT count(*) FROM workflow_orchestrator_service.workflow_instances "
        "WHERE namespace = %s AND workflow_name = 'diamond' AND workflow_version = 1",
        ns,
    ) == [(len(all_names(cluster, "workflowinstances")),)]
    assert rows(
        migrated_database,
        "SELECT count(*) FROM task_execution_service.task_definitions WHERE namespace = %s",
        ns,
    ) == [(1,)]
    assert rows(
        migrated_database,
        "SELECT count(*) FROM event_processing_service.event_definitions WHERE namespace = %s",
        ns,
    ) == [(1,)]
    assert rows(
        migrated_database,
        "SELECT count(*) FROM integration_service.integration_instances WHERE namespace = %s",
        ns,
    ) == [(1,)]
    assert rows(
        migrated_database,
        "SELECT count(*) FROM workflow_orchestrator_service.workflow_event_triggers "
        "WHERE namespace = %s",
        ns,
    ) == [(1,)]
    listing = cluster.kubectl("get", "workflowinstances")
    assert re.search(r"diamond\s+Succeeded\s+5/5\s+\S+\s+\d+s", listing), listing


def test_spec_change_is_a_new_version_and_reapply_writes_nothing(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    cluster.kubectl("apply", "-f", str(EXAMPLES / "taskdefinition.yaml"))
    cluster.kubectl("apply", "-f", str(EXAMPLES / "integration.yaml"))
    cluster.kubectl("apply", "-f", str(EXAMPLES / "workflowdefinition.yaml"))
    wait_condition(cluster, "wfd", "diamond", "Ready", "True")
    cluster.kubectl(
        "patch", "wfd", "diamond", "--type=merge", "-p", '{"spec":{"description":"second version"}}'
    )

    def version_two() -> bool:
        obj = get(cluster, "wfd", "diamond")
        return bool(
            obj.get("status", {}).get("version") == 2
            and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        )

    wait_until(version_two, timeout=60, what="version 2")
    versions = rows(
        migrated_database,
        "SELECT version, spec->>'description' FROM "
        "workflow_orchestrator_service.workflow_definitions "
        "WHERE namespace = %s ORDER BY version",
        cluster.namespace,
    )
    assert versions[1] == (2, "second version")
    assert len(versions) == 2
    # Applying the file again returns to the first spec: a third version, not a reuse of
    # version 1 (history is append-only), and applying it twice more adds nothing.
    cluster.kubectl("apply", "-f", str(EXAMPLES / "workflowdefinition.yaml"))
    wait_until(
        lambda: get(cluster, "wfd", "diamond")["status"].get("version") == 3,
        timeout=60,
        what="version 3",
    )
    cluster.kubectl("apply", "-f", str(EXAMPLES / "workflowdefinition.yaml"))
    assert rows(
        migrated_database,
        "SELECT count(*) FROM workflow_orchestrator_service.workflow_definitions "
        "WHERE namespace = %s",
        cluster.namespace,
    ) == [(3,)]


def test_delete_marks_rows_deleted_then_releases_the_finalizer(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    cluster.kubectl("apply", "-f", str(EXAMPLES / "taskdefinition.yaml"))
    wait_condition(cluster, "taskdefinitions", "echo", "Ready", "True")
    cluster.kubectl("delete", "taskdefinition", "echo", "--wait=true", "--timeout=60s")
    assert cluster.run_kubectl("get", "taskdefinition", "echo").returncode != 0
    kept = rows(
        migrated_database,
        "SELECT version, deleted_at IS NOT NULL FROM task_execution_service.task_definitions "
        "WHERE namespace = %s AND name = 'echo'",
        cluster.namespace,
    )
    assert kept == [(1, True)]


def test_invalid_resource_without_webhook_is_ready_false_and_writes_nothing(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    cyclic = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "loop"},
        "spec": {
            "tasks": [
                {"name": "a", "dependencies": ["b"], "template": {"image": "busybox"}},
                {"name": "b", "dependencies": ["a"], "template": {"image": "busybox"}},
            ]
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cyclic))
    obj = wait_condition(cluster, "wfd", "loop", "Ready", "False")
    ready = condition(obj, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "cycle" in ready["message"]
    assert "a -> b -> a" in ready["message"]
    assert any("a -> b -> a" in e["message"] for e in warning_events(cluster, "loop"))
    assert rows(
        migrated_database,
        "SELECT count(*) FROM workflow_orchestrator_service.workflow_definitions "
        "WHERE namespace = %s",
        cluster.namespace,
    ) == [(0,)]


def test_webhook_refuses_invalid_resources_with_the_exact_problem(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator(webhook=True)
    try:
        bad_expression = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": "bad-cel"},
            "spec": {"tasks": [{"name": "a", "when": "params.x >", "template": {"image": "b"}}]},
        }
        proc = cluster.run_kubectl("apply", "-f", "-", input=json.dumps(bad_expression))
        assert proc.returncode != 0
        assert "denied the request" in proc.stderr
        assert "spec.tasks[0].when" in proc.stderr
        assert all_names(cluster, "wfd") == []
        # A reference to an object that does not exist yet is a warning, not a refusal: the
        # object waits (ReferenceNotFound) until its referent is applied.
        missing_ref = {
            "apiVersion": "plait.dev/v1alpha1",
            "kind": "WorkflowDefinition",
            "metadata": {"name": "bad-ref"},
            "spec": {"tasks": [{"name": "a", "taskRef": {"name": "nowhere"}}]},
        }
        proc = cluster.run_kubectl("apply", "-f", "-", input=json.dumps(missing_ref))
        assert proc.returncode == 0, proc.stderr
        assert "Warning: spec.tasks[0].taskRef.name: TaskDefinition 'nowhere' not found" in (
            proc.stderr
        )
        ready = wait_condition(cluster, "wfd", "bad-ref", "Ready", "False")
        assert condition(ready, "Ready")["reason"] == "ReferenceNotFound"
        cluster.kubectl("apply", "-f", str(EXAMPLES))
        assert all_names(cluster, "wfd") == ["bad-ref", "diamond", "fanout", "report"]
    finally:
        cluster.cluster.kubectl(
            "delete", "validatingwebhookconfiguration", "plait.dev", "--ignore-not-found"
        )


def test_restarting_the_operator_changes_nothing(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    operator = start_operator()
    apply_examples(cluster)
    for resource in DEFINITION_KINDS:
        for name in all_names(cluster, resource):
            wait_condition(cluster, resource, name, "Ready", "True")
    for name in all_names(cluster, "workflowinstances"):  # the example run goes on by itself
        wait_condition(cluster, "workflowinstances", name, "Succeeded", "True")
    before = json.loads(cluster.kubectl("get", "plait", "-o", "json"))["items"]
    versions = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in before}
    counts = rows(
        migrated_database,
        "SELECT (SELECT count(*) FROM workflow_orchestrator_service.workflow_definitions),"
        " (SELECT count(*) FROM workflow_orchestrator_service.workflow_instances)",
    )
    operator.stop()
    assert operator.proc is not None
    assert operator.proc.returncode == 0, "SIGTERM must stop the operator cleanly"
    restarted = start_operator()
    # Every object is resumed (runs are followed by their watch events, the other kinds
    # by Kopf's handlers); wait until the new process has handled all of them.
    runs = [o for o in before if o["kind"] == "WorkflowInstance"]
    assert runs
    # The operator reconciles no WorkflowTest: `plait test run` runs them.
    reconciled = [o for o in before if o["kind"] not in ("WorkflowInstance", "WorkflowTest")]
    wait_until(
        lambda: (
            restarted.output().count("Resuming is processed") >= len(reconciled)
            and all(f"/{o['metadata']['name']} generation" in restarted.output() for o in runs)
        ),
        timeout=60,
        what="the restarted operator to resume every object",
    )
    after = json.loads(cluster.kubectl("get", "plait", "-o", "json"))["items"]
    assert {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in after} == versions
    assert (
        rows(
            migrated_database,
            "SELECT (SELECT count(*) FROM workflow_orchestrator_service.workflow_definitions),"
            " (SELECT count(*) FROM workflow_orchestrator_service.workflow_instances)",
        )
        == counts
    )


def test_resync_repairs_rows_changed_behind_its_back(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator("--resync-seconds", "2")
    cluster.kubectl("apply", "-f", str(EXAMPLES / "eventdefinition.yaml"))
    name = all_names(cluster, "eventdefinitions")[0]
    wait_condition(cluster, "eventdefinitions", name, "Ready", "True")
    with psycopg.connect(migrated_database) as conn:
        conn.execute("DELETE FROM event_processing_service.event_definitions")
    wait_until(
        lambda: (
            rows(
                migrated_database,
                "SELECT count(*) FROM event_processing_service.event_definitions "
                "WHERE deleted_at IS NULL",
            )[0][0]
            == 1
        ),
        timeout=30,
        what="the resync to restore the definition row",
    )


def test_integration_settings_are_checked_against_the_catalog_schema(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    bad = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "Integration",
        "metadata": {"name": "hook"},
        "spec": {"type": "http", "settings": {"url": "https://x"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(bad))
    ready = condition(wait_condition(cluster, "integrations", "hook", "Ready", "False"), "Ready")
    assert ready["reason"] == "InvalidSettings"
    assert "'baseUrl' is a required property" in ready["message"]
    unknown = {**bad, "metadata": {"name": "odd"}, "spec": {"type": "carrier-pigeon"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(unknown))
    ready = condition(wait_condition(cluster, "integrations", "odd", "Ready", "False"), "Ready")
    assert ready["reason"] == "UnknownType"
    assert "known types: github, http, postgres, s3, slack, webhook" in ready["message"]
    assert [e["reason"] for e in warning_events(cluster, "odd")] == ["UnknownType"]
    assert rows(
        migrated_database, "SELECT count(*) FROM integration_service.integration_instances"
    ) == [(0,)]


def test_a_five_thousand_task_definition_is_reconciled_with_small_annotations(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    tasks = [
        {"name": f"t{i}", "template": {"image": "busybox"}, "dependencies": [f"t{i - 1}"]}
        if i
        else {"name": "t0", "template": {"image": "busybox"}}
        for i in range(5000)
    ]
    big = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "big"},
        "spec": {"tasks": tasks},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(big))
    obj = wait_condition(cluster, "wfd", "big", "Ready", "True", timeout=120)
    annotations = obj["metadata"].get("annotations", {})
    assert annotations, "Kopf's bookkeeping annotations are expected"
    assert all(len(v) < 1024 for v in annotations.values()), annotations
    stored = rows(
        migrated_database,
        "SELECT jsonb_array_length(spec->'tasks') FROM "
        "workflow_orchestrator_service.workflow_definitions WHERE name = 'big'",
    )
    assert stored == [(5000,)]


def test_a_run_pinned_to_a_version_not_stored_yet_waits_then_runs(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()

    def definition(image: str) -> str:
        return json.dumps(
            {
                "apiVersion": "plait.dev/v1alpha1",
                "kind": "WorkflowDefinition",
                "metadata": {"name": "pinned"},
                "spec": {"tasks": [{"name": "a", "template": {"image": image}}]},
            }
        )

    cluster.kubectl("apply", "-f", "-", input=definition("busybox:1"))
    wait_condition(cluster, "wfd", "pinned", "Ready", "True")
    run = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": "pinned-run"},
        "spec": {"workflowRef": {"name": "pinned", "version": 2}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(run))
    waiting = wait_condition(cluster, "wfi", "pinned-run", "Succeeded", "Unknown")
    assert condition(waiting, "Succeeded")["reason"] == "ReferenceNotFound"
    assert (
        "WorkflowDefinition 'pinned' version 2 is not stored yet"
        in (condition(waiting, "Succeeded")["message"])
    )
    assert waiting["status"]["phase"] == "Pending"
    cluster.kubectl("apply", "-f", "-", input=definition("busybox:2"))  # version 2
    done = wait_condition(cluster, "wfi", "pinned-run", "Succeeded", "True", timeout=90)
    assert done["status"]["definitionVersion"] == 2


def test_a_run_of_a_workflow_not_applied_yet_is_warned_about_then_runs(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator()
    run = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowInstance",
        "metadata": {"name": "early-run"},
        "spec": {"workflowRef": {"name": "later"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(run))
    waiting = wait_condition(cluster, "wfi", "early-run", "Succeeded", "Unknown")
    assert condition(waiting, "Succeeded")["reason"] == "ReferenceNotFound"
    assert waiting["status"]["phase"] == "Pending"
    # The operator's own Warning Event on the run, as `kubectl describe` shows it.
    warnings: list[dict[str, Any]] = []

    def warned() -> bool:
        warnings[:] = warning_events(cluster, "early-run", kind="WorkflowInstance")
        return bool(warnings)

    wait_until(warned, timeout=30, what="a Warning Event on the waiting run")
    assert [(e["reason"], e["source"]["component"]) for e in warnings] == [
        ("ReferenceNotFound", "plait")
    ]
    assert "WorkflowDefinition 'later' not found" in warnings[0]["message"]
    assert warnings[0]["involvedObject"]["uid"] == waiting["metadata"]["uid"]
    definition = {
        "apiVersion": "plait.dev/v1alpha1",
        "kind": "WorkflowDefinition",
        "metadata": {"name": "later"},
        "spec": {"tasks": [{"name": "a", "template": {"image": "busybox"}}]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(definition))
    wait_condition(cluster, "wfi", "early-run", "Succeeded", "True", timeout=90)
