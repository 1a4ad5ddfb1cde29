"""What an object makes the operator use on its author's behalf: the permissions asked."""

from __future__ import annotations

from plait.admission.access import UserInfo, needs, subject_access_review
from plait.resources.validation import parse_spec


def _needs(kind: str, spec: dict[str, object]) -> list[tuple[str, str]]:
    return [(n.path, n.permission()) for n in needs(parse_spec(kind, spec))]


def test_a_plain_task_needs_nothing() -> None:
    spec = {"tasks": [{"name": "a", "template": {"image": "busybox", "env": [
        {"name": "X", "value": "1"}], "serviceAccountName": "default"}}]}  # fmt: skip
    assert _needs("WorkflowDefinition", spec) == []


def test_every_account_secret_and_integration_of_every_task_is_asked_for() -> None:
    template = {
        "image": "busybox",
        "serviceAccountName": "deployer",
        "env": [{"name": "PW", "secretKeyRef": {"name": "db", "key": "password"}}],
        "integrations": [{"name": "slack"}],
    }
    spec = {
        "tasks": [{"name": "a", "template": template}, {"name": "b", "taskRef": {"name": "t"}}],
        "onExit": {"name": "z", "template": {"image": "x", "automountServiceAccountToken": True}},
    }
    assert _needs("WorkflowDefinition", spec) == [
        ("spec.tasks[0].template.serviceAccountName", "create pods"),
        ("spec.tasks[0].template.env[0].secretKeyRef.name", "get secrets/db"),
        ("spec.tasks[0].template.integrations[0].name", "use integrations.plait.dev/slack"),
        ("spec.onExit.template.automountServiceAccountToken", "create pods"),
    ]
    assert _needs("TaskDefinition", {"template": template})[0] == (
        "spec.template.serviceAccountName",
        "create pods",
    )


def test_a_workflow_wide_token_is_asked_for_once_even_for_task_refs() -> None:
    spec = {
        "automountServiceAccountToken": True,
        "tasks": [{"name": "a", "taskRef": {"name": "t"}}],
    }
    assert _needs("WorkflowDefinition", spec) == [
        ("spec.automountServiceAccountToken", "create pods")
    ]
    spec["automountServiceAccountToken"] = False
    assert _needs("WorkflowDefinition", spec) == []


def test_an_integrations_secret_is_asked_for() -> None:
    spec = {"type": "slack", "secretRef": {"name": "slack-token"}}
    assert _needs("Integration", spec) == [("spec.secretRef.name", "get secrets/slack-token")]
    assert _needs("Integration", {"type": "http", "settings": {"baseUrl": "https://x"}}) == []


def test_the_review_carries_the_whole_identity() -> None:
    user = UserInfo.from_review(
        {"username": "alice", "uid": "42", "groups": ["dev"], "extra": {"scopes": ["a"]}}
    )
    [need] = needs(parse_spec("Integration", {"type": "slack", "secretRef": {"name": "s"}}))
    review = subject_access_review(user, "team", need)
    assert review["spec"] == {
        "user": "alice",
        "uid": "42",
        "groups": ["dev"],
        "extra": {"scopes": ["a"]},
        "resourceAttributes": {"namespace": "team", "verb": "get", "resource": "secrets",
                               "name": "s"},
    }  # fmt: skip
