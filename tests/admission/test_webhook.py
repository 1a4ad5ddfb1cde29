"""``plait webhook`` against the real API server: what it refuses, warns about and admits.

The webhook runs as its own process (no database, no operator needed). Users other than
the admin are impersonated (``kubectl --as``), so each request's userInfo is theirs and the
webhook's SubjectAccessReviews ask about them.
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from plait.testing._process import wait_until
from tests.fixtures.kube import REPO_ROOT, Kube, KubeCluster
from tests.fixtures.operator import StartOperator, StartWebhook

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def cluster(plait_crds: KubeCluster, kube: Kube) -> Kube:
    return kube


def _obj(kind: str, name: str, spec: dict[str, Any]) -> str:
    body = {"apiVersion": "plait.dev/v1alpha1", "kind": kind, "metadata": {"name": name}}
    return json.dumps({**body, "spec": spec})


def _grant(kube: Kube, user: str, rules: list[dict[str, Any]], name: str) -> None:
    """A Role in the test's namespace with ``rules``, bound to ``user``."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1",
                                                        "items": [role, binding]}))  # fmt: skip


#: What a workflow author gets (docs/operator.md's plait-author): every Plait kind, with
#: the usual verbs (``*`` would include ``use``), nothing else.
PLAIT_AUTHOR = [
    {
        "apiGroups": ["plait.dev"],
        "resources": ["*"],
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
    }
]

#: A task that would reach a ServiceAccount, a Secret and an Integration's credentials.
DEPLOYER = {
    "tasks": [
        {
            "name": "deploy",
            "template": {
                "image": "busybox",
                "serviceAccountName": "deployer",
                "env": [{"name": "PW", "secretKeyRef": {"name": "db", "key": "password"}}],
                "integrations": [{"name": "notifier"}],
            },
        }
    ]
}


def test_a_user_with_only_plait_permissions_cannot_reach_accounts_secrets_or_integrations(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    start_webhook()
    ns = cluster.namespace
    _grant(cluster, "alice", PLAIT_AUTHOR, "plait-author-alice")
    denied = cluster.run_kubectl(
        "apply", "--as=alice", "-f", "-", input=_obj("WorkflowDefinition", "deploy", DEPLOYER)
    )
    assert denied.returncode != 0, denied.stdout
    message = denied.stderr
    assert "denied the request" in message
    assert (
        "spec.tasks[0].template.serviceAccountName: user 'alice' may not use ServiceAccount "
        f"'deployer' (run a pod as it): that needs the permission 'create pods' in namespace "
        f"'{ns}'" in message
    )
    assert "env[0].secretKeyRef.name: user 'alice' may not use Secret 'db'" in message
    assert "'get secrets/db'" in message
    assert "integrations[0].name: user 'alice' may not use Integration 'notifier'" in message
    assert "'use integrations.plait.dev/notifier'" in message

    integration = {"type": "slack", "secretRef": {"name": "slack-token"}}
    denied = cluster.run_kubectl(
        "apply", "--as=alice", "-f", "-", input=_obj("Integration", "chat", integration)
    )
    assert "spec.secretRef.name: user 'alice' may not use Secret 'slack-token'" in denied.stderr
    assert cluster.kubectl("get", "wfd,integrations", "-o", "name") == ""

    # The same user, granted exactly those permissions, is admitted.
    _grant(
        cluster,
        "alice",
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
             "resourceNames": ["db", "slack-token"]},
            {"apiGroups": ["plait.dev"], "resources": ["integrations"], "verbs": ["use"],
             "resourceNames": ["notifier"]},
        ],
        "plait-deployer-alice",
    )  # fmt: skip

    def admitted() -> bool:  # RBAC changes reach the authorizer within a moment
        proc = cluster.run_kubectl(
            "apply", "--as=alice", "-f", "-", input=_obj("WorkflowDefinition", "deploy", DEPLOYER)
        )
        return proc.returncode == 0

    wait_until(admitted, timeout=20, what="alice's definition to be admitted")
    cluster.kubectl(
        "apply", "--as=alice", "-f", "-", input=_obj("Integration", "chat", integration)
    )

    # Another Plait author may not change the task's command while it keeps those grants:
    # every change of a spec is checked against the user who makes it.
    _grant(cluster, "mallory", PLAIT_AUTHOR, "plait-author-mallory")
    changed = json.loads(_obj("WorkflowDefinition", "deploy", DEPLOYER))
    changed["spec"]["tasks"][0]["template"]["command"] = ["sh", "-c", "cat /var/run/secrets/*"]
    denied = cluster.run_kubectl("apply", "--as=mallory", "-f", "-", input=json.dumps(changed))
    assert "user 'mallory' may not use ServiceAccount 'deployer'" in denied.stderr
    # A change that leaves the spec alone (labels, finalizers: the operator's bookkeeping) is
    # not a use of anything.
    cluster.kubectl("label", "--as=mallory", "wfd", "deploy", "team=a")


def test_examples_dry_run_on_a_fresh_namespace_succeeds_with_warnings(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    hook = start_webhook()
    # In reverse order: every reference points at something not applied yet.
    for path in sorted(EXAMPLES.glob("*.yaml"), reverse=True):
        proc = cluster.run_kubectl("apply", "--dry-run=server", "-f", str(path))
        assert proc.returncode == 0, proc.stderr
    proc = cluster.run_kubectl("apply", "--dry-run=server", "-f", str(EXAMPLES))
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("Warning:")]
    assert any("WorkflowDefinition 'diamond' not found" in w for w in warnings), proc.stderr
    assert any("TaskDefinition 'echo' not found" in w for w in warnings), proc.stderr
    assert any("Integration 'notifier' not found" in w for w in warnings), proc.stderr
    assert all("admitted; it waits until that exists" in w for w in warnings)
    assert cluster.kubectl("get", "plait", "-o", "name") == ""  # a dry run stores nothing
    assert _metric(hook.health_port, "WorkflowInstance", "warned") == 2
    assert _metric(hook.health_port, "EventDefinition", "allowed") == 2


def _metric(health_port: int, kind: str, verdict: str) -> float:
    """A sample of plait_admission_reviews_total from the webhook's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = f'plait_admission_reviews_total{{kind="{kind}",verdict="{verdict}"}} '
    found = [line for line in text.splitlines() if line.startswith(wanted)]
    return float(found[0].split()[-1]) if found else 0.0


def test_content_is_still_refused(cluster: Kube, start_webhook: StartWebhook) -> None:
    hook = start_webhook()
    cases = [
        ("Integration", "x", {"type": "telepathy"}, "spec.type: 'telepathy' is not an "
         "integration type (types: github, http, postgres, s3, slack, webhook)"),
        ("Integration", "y", {"type": "http", "settings": {"port": 1}},
         "'baseUrl' is a required property"),
        ("EventTrigger", "z", {"workflowRef": {"name": "w"}, "schedule": {"cron": "0 0 31 2 *"}},
         "spec.schedule.cron: invalid cron expression: Bad day-of-month"),
        ("EventDefinition", "e", {"type": "t", "schema": {"minLength": -1}},
         "spec.schema.minLength: -1 is less than the minimum of 0"),
        ("WorkflowDefinition", "w", {"tasks": [{"name": "a", "dependencies": ["ghost"],
                                                "template": {"image": "b"}}]},
         "task 'a' depends on 'ghost', which is not a task of this workflow"),
    ]  # fmt: skip
    for kind, name, spec, message in cases:
        proc = cluster.run_kubectl("apply", "-f", "-", input=_obj(kind, name, spec))
        assert proc.returncode != 0, f"{kind} {spec} was admitted"
        assert message in proc.stderr, proc.stderr
    assert cluster.kubectl("get", "plait", "-o", "name") == ""
    assert _metric(hook.health_port, "Integration", "invalid") == 2
    assert _metric(hook.health_port, "EventTrigger", "invalid") == 1


def test_admission_works_while_the_operator_is_stopped(
    cluster: Kube, start_operator: StartOperator
) -> None:
    operator = start_operator(webhook=True)
    operator.stop()
    bad = _obj("WorkflowDefinition", "bad", {"tasks": [{"name": "a", "when": "params.x >",
                                                         "template": {"image": "b"}}]})  # fmt: skip
    proc = cluster.run_kubectl("apply", "-f", "-", input=bad)
    assert "denied the request" in proc.stderr
    assert "spec.tasks[0].when" in proc.stderr
    good = _obj(
        "WorkflowDefinition", "good", {"tasks": [{"name": "a", "template": {"image": "b"}}]}
    )
    cluster.kubectl("apply", "-f", "-", input=good)
    assert cluster.kubectl("get", "wfd", "-o", "name").split() == [
        "workflowdefinition.plait.dev/good"
    ]


def _succeeded(cluster: Kube, name: str) -> dict[str, Any]:
    obj = json.loads(cluster.kubectl("get", "wfi", name, "-o", "json"))
    status = obj.get("status") or {}
    found = [c for c in status.get("conditions", []) if c["type"] == "Succeeded"]
    return {"phase": status.get("phase"), **(found[0] if found else {})}


def test_a_run_applied_before_its_definition_waits_then_runs(
    cluster: Kube, start_operator: StartOperator, migrated_database: str
) -> None:
    start_operator(webhook=True)
    run = _obj("WorkflowInstance", "early", {"workflowRef": {"name": "later"}})
    proc = cluster.run_kubectl("apply", "-f", "-", input=run)
    assert proc.returncode == 0, proc.stderr
    assert "WorkflowDefinition 'later' not found" in proc.stderr  # kubectl prints the warning
    wait_until(
        lambda: _succeeded(cluster, "early").get("reason") == "ReferenceNotFound",
        timeout=60,
        what="the run to report ReferenceNotFound",
    )
    waiting = _succeeded(cluster, "early")
    assert (waiting["status"], waiting["phase"]) == ("Unknown", "Pending"), waiting
    assert "WorkflowDefinition 'later' not found" in waiting["message"]
    task = {"name": "a", "template": {"image": "busybox"}}
    cluster.kubectl(
        "apply", "-f", "-", input=_obj("WorkflowDefinition", "later", {"tasks": [task]})
    )
    wait_until(
        lambda: _succeeded(cluster, "early").get("status") == "True",
        timeout=90,
        what=f"the waiting run to succeed (last: {_succeeded(cluster, 'early')})",
    )


def test_an_object_admitted_under_older_rules_can_still_be_labelled_and_deleted(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    # Stored while no webhook ran (as under an earlier release's rules): a schedule that
    # never fires. Metadata changes (the operator's finalizers and annotations among them)
    # are not a change of what it does, so they are admitted; a change of spec is checked.
    stale = {"workflowRef": {"name": "w"}, "schedule": {"cron": "0 0 31 2 *"}}
    cluster.kubectl("apply", "-f", "-", input=_obj("EventTrigger", "stale", stale))
    start_webhook()
    cluster.kubectl("label", "etr", "stale", "team=a")
    cluster.kubectl("annotate", "etr", "stale", "note=kept")
    proc = cluster.run_kubectl(
        "patch", "etr", "stale", "--type=merge", "-p", json.dumps({"spec": {"suspend": True}})
    )
    assert "spec.schedule.cron: invalid cron expression: Bad day-of-month" in proc.stderr
    cluster.kubectl("delete", "etr", "stale")


def test_a_run_that_mocks_a_task_its_definition_lacks_is_refused(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    start_webhook()
    tasks = [
        {"name": "split", "template": {"image": "b"}},
        {"name": "join", "template": {"image": "b"}},
    ]
    cluster.kubectl(
        "apply", "-f", "-", input=_obj("WorkflowDefinition", "diamond", {"tasks": tasks})
    )
    bad = {"workflowRef": {"name": "diamond"}, "mocks": {"split": {}, "splitt": {"exitCode": 1}}}
    proc = cluster.run_kubectl("apply", "-f", "-", input=_obj("WorkflowInstance", "bad", bad))
    assert proc.returncode != 0, "a mock of no task was admitted"
    assert (
        "spec.mocks.splitt: mocks task 'splitt', which is not a task of WorkflowDefinition "
        "'diamond' (tasks: split, join)"
    ) in proc.stderr, proc.stderr
    good = {"workflowRef": {"name": "diamond"}, "mocks": {"split": {}, "join": {}}}
    cluster.kubectl("apply", "-f", "-", input=_obj("WorkflowInstance", "good", good))
    assert cluster.kubectl("get", "wfi", "-o", "name").split() == [
        "workflowinstance.plait.dev/good"
    ]


def test_the_certificate_a_webhook_made_for_itself_is_removed_when_it_stops(
    cluster: Kube, start_webhook: StartWebhook
) -> None:
    def cert_folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("plait-webhook-*"))

    before = cert_folders()
    hook = start_webhook()
    made = cert_folders() - before
    assert len(made) == 1, made
    (folder,) = made
    assert (folder / "tls.key").exists()
    hook.stop()
    assert not folder.exists(), "the webhook's private key was left behind"
