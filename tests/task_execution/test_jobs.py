"""The Job of one attempt, as built: Pod security and the task's Integrations.

What the API server makes of these Jobs (Pod Security admission, the projected volume) is
tested on the control plane in ``test_jobs_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from plait.integration.credentials import SecretItem, TaskIntegration
from plait.resources import ContainerTemplate, WorkflowDefinitionSpec
from plait.task_execution.jobs import (
    ANNOTATION_TASK_INSTANCE,
    DEFAULT_RUN_AS_USER,
    INTEGRATIONS_MOUNT,
    JobRequest,
    build_job,
    with_workflow_defaults,
)

UID = "7b0e5f8e-4c55-4a4b-9d3a-2f2a6f0c1d11"


def request(template: dict[str, Any], integrations: tuple[TaskIntegration, ...] = ()) -> JobRequest:
    return JobRequest(
        namespace="ns",
        instance_name="run",
        instance_uid=UID,
        task="t",
        attempt=1,
        template=ContainerTemplate.model_validate({"image": "busybox", **template}),
        inputs={"n": 1},
        integrations=integrations,
    )


def job(template: dict[str, Any], integrations: tuple[TaskIntegration, ...] = ()) -> dict[str, Any]:
    return build_job(request(template, integrations))


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(manifest["spec"]["template"]["spec"])


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return dict(pod(manifest)["containers"][0])


def test_default_job_is_restricted_and_has_no_token() -> None:
    manifest = job({})
    assert pod(manifest)["automountServiceAccountToken"] is False
    assert pod(manifest)["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": DEFAULT_RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container(manifest)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "volumes" not in pod(manifest)


def test_the_pod_names_its_attempt_row_and_a_template_cannot() -> None:
    """The task-log collector takes the attempt's row id from the Pod; a template's own
    annotation of that name would misfile the lines, so Plait's value replaces it."""
    template = {"podMetadata": {"annotations": {ANNOTATION_TASK_INSTANCE: "forged", "a": "b"}}}
    unrecorded = build_job(request(template))["spec"]["template"]["metadata"]["annotations"]
    assert unrecorded == {"a": "b"}
    attempt = uuid.uuid4()
    recorded = build_job(dataclasses.replace(request(template), attempt_id=attempt))
    annotations = recorded["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"a": "b", ANNOTATION_TASK_INSTANCE: str(attempt)}


def test_a_task_asks_for_its_token_and_service_account() -> None:
    manifest = job({"serviceAccountName": "deployer", "automountServiceAccountToken": True})
    assert pod(manifest)["serviceAccountName"] == "deployer"
    assert pod(manifest)["automountServiceAccountToken"] is True


@pytest.mark.parametrize(
    ("context", "pod_context", "container_context"),
    [
        (  # root because the image needs it: runAsNonRoot follows
            {"runAsUser": 0},
            {"runAsNonRoot": False, "runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        ),
        (  # the image's own USER, whatever it is
            {"runAsNonRoot": False},
            {"runAsNonRoot": False, "seccompProfile": {"type": "RuntimeDefault"}},
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        ),
        (
            {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
            {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 3000,
                "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        ),
        (  # privileged: escalation is then the kernel's, not ours, to refuse
            {"privileged": True},
            {
                "runAsNonRoot": True,
                "runAsUser": DEFAULT_RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            {"privileged": True, "capabilities": {"drop": ["ALL"]}},
        ),
        (
            {
                "capabilities": {"add": ["NET_BIND_SERVICE"]},
                "readOnlyRootFilesystem": True,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/task.json"},
            },
            {
                "runAsNonRoot": True,
                "runAsUser": DEFAULT_RUN_AS_USER,
                "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/task.json"},
            },
            {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "readOnlyRootFilesystem": True,
            },
        ),
        (
            {"capabilities": {"drop": ["NET_RAW"]}, "allowPrivilegeEscalation": True},
            {
                "runAsNonRoot": True,
                "runAsUser": DEFAULT_RUN_AS_USER,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            {"allowPrivilegeEscalation": True, "capabilities": {"drop": ["NET_RAW"]}},
        ),
    ],
)
def test_a_task_overrides_what_it_needs_and_keeps_the_rest(
    context: dict[str, Any], pod_context: dict[str, Any], container_context: dict[str, Any]
) -> None:
    manifest = job({"securityContext": context})
    assert pod(manifest)["securityContext"] == pod_context
    assert container(manifest)["securityContext"] == container_context


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"privileged": True, "allowPrivilegeEscalation": False},
            "a privileged container always allows privilege escalation",
        ),
        ({"runAsUser": 0, "runAsNonRoot": True}, "contradicts runAsNonRoot true"),
        ({"seccompProfile": {"type": "Localhost"}}, "localhostProfile is required"),
        (
            {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}},
            "localhostProfile is required",
        ),
        ({"runAsUser": -1}, "greater than or equal to 0"),
        ({"capabilities": {"add": ["net_admin"]}}, "should match pattern"),
        ({"hostNetwork": True}, "Extra inputs are not permitted"),
    ],
)
def test_contradictory_or_unknown_security_fields_are_refused(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ContainerTemplate.model_validate({"image": "x", "securityContext": context})


def test_the_workflow_sets_defaults_that_a_task_overrides_field_by_field() -> None:
    workflow = WorkflowDefinitionSpec.model_validate(
        {
            "tasks": [{"name": "a", "template": {"image": "x"}}],
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "automountServiceAccountToken": True,
        }
    )
    plain = ContainerTemplate.model_validate({"image": "x"})
    inherited = with_workflow_defaults(plain, workflow)
    assert inherited.security_context is not None
    assert inherited.security_context.to_dict() == {"runAsUser": 1000, "fsGroup": 2000}
    assert inherited.automount_service_account_token is True

    own = ContainerTemplate.model_validate(
        {
            "image": "x",
            "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": True},
            "automountServiceAccountToken": False,
        }
    )
    merged = with_workflow_defaults(own, workflow)
    assert merged.security_context is not None
    assert merged.security_context.to_dict() == {
        "runAsUser": 0,
        "fsGroup": 2000,
        "readOnlyRootFilesystem": True,
    }
    assert merged.automount_service_account_token is False
    # Nothing to inherit: the very same template.
    bare = WorkflowDefinitionSpec.model_validate({"tasks": [{"name": "a", "template": plain}]})
    assert with_workflow_defaults(own, bare) is own


@pytest.mark.parametrize(
    ("workflow", "own", "merged"),
    [
        ({"runAsNonRoot": True}, {"runAsUser": 0}, {"runAsUser": 0}),
        ({"runAsUser": 0}, {"runAsNonRoot": True}, {"runAsNonRoot": True}),
        ({"allowPrivilegeEscalation": False}, {"privileged": True}, {"privileged": True}),
        (
            {"privileged": True, "fsGroup": 1},
            {"allowPrivilegeEscalation": False},
            {"allowPrivilegeEscalation": False, "fsGroup": 1},
        ),
    ],
)
def test_a_task_field_beats_an_inherited_one_it_contradicts(
    workflow: dict[str, Any], own: dict[str, Any], merged: dict[str, Any]
) -> None:
    spec = WorkflowDefinitionSpec.model_validate(
        {"tasks": [{"name": "a", "template": {"image": "x"}}], "securityContext": workflow}
    )
    template = ContainerTemplate.model_validate({"image": "x", "securityContext": own})
    inherited = with_workflow_defaults(template, spec).security_context
    assert inherited is not None
    assert inherited.to_dict() == merged


REAL_NODE = {"plait.dev/node-kind": "real"}
TOLERATE = {"key": "plait.dev/real-node", "operator": "Equal", "value": "true",
            "effect": "NoSchedule"}  # fmt: skip


def test_a_job_has_no_placement_unless_asked_and_then_the_pods_own() -> None:
    assert not {"nodeSelector", "tolerations"} & pod(job({})).keys()
    placed = pod(
        job({"nodeSelector": REAL_NODE, "tolerations": [TOLERATE, {"operator": "Exists"}]})
    )
    assert placed["nodeSelector"] == REAL_NODE
    assert placed["tolerations"] == [TOLERATE, {"operator": "Exists"}]


def test_the_workflow_places_the_tasks_that_do_not_place_themselves() -> None:
    workflow = WorkflowDefinitionSpec.model_validate(
        {
            "tasks": [{"name": "a", "template": {"image": "x"}}],
            "nodeSelector": REAL_NODE,
            "tolerations": [TOLERATE],
        }
    )
    inherited = with_workflow_defaults(ContainerTemplate.model_validate({"image": "x"}), workflow)
    assert inherited.node_selector == REAL_NODE
    assert [t.to_dict() for t in inherited.tolerations or ()] == [TOLERATE]
    # A task's own replaces the workflow's whole; an empty one clears it.
    own = ContainerTemplate.model_validate(
        {"image": "x", "nodeSelector": {"disk": "ssd"}, "tolerations": []}
    )
    replaced = with_workflow_defaults(own, workflow)
    assert replaced.node_selector == {"disk": "ssd"}
    assert replaced.tolerations == []


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"operator": "Exists", "value": "x"}, "operator Exists has no value"),
        ({"key": "k", "tolerationSeconds": 5}, "only allowed with effect NoExecute"),
        ({"key": "k", "effect": "NoRun"}, "effect"),
    ],
)
def test_inconsistent_tolerations_are_refused(toleration: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ContainerTemplate.model_validate({"image": "x", "tolerations": [toleration]})


NOTIFIER = TaskIntegration(
    name="notifier",
    type="http",
    settings={
        "baseUrl": "https://hooks.example.com/plait",
        "headers": {"Content-Type": "application/json"},
        "timeoutSeconds": 10,
    },
    secret_name="notifier-credentials",
    secret_items=(SecretItem("token", "token"),),
)
STORE = TaskIntegration(
    name="data.lake",
    type="s3",
    settings={"bucket": "lake"},
    secret_name="aws",
    secret_items=(
        SecretItem("accessKeyId", "AWS_ACCESS_KEY_ID"),
        SecretItem("secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
    ),
)
NO_SECRET = TaskIntegration("open", "http", {"baseUrl": "http://x"}, None, ())


def test_integration_settings_become_variables() -> None:
    env = {e["name"]: e["value"] for e in container(job({}, (NOTIFIER, STORE, NO_SECRET)))["env"]}
    assert env["PLAIT_INTEGRATION_NOTIFIER_BASE_URL"] == "https://hooks.example.com/plait"
    assert json.loads(env["PLAIT_INTEGRATION_NOTIFIER_HEADERS"]) == {
        "Content-Type": "application/json"
    }
    assert env["PLAIT_INTEGRATION_NOTIFIER_TIMEOUT_SECONDS"] == "10"
    assert env["PLAIT_INTEGRATION_DATA_LAKE_BUCKET"] == "lake"
    assert env["PLAIT_INTEGRATION_OPEN_BASE_URL"] == "http://x"
    assert json.loads(env["PLAIT_INTEGRATIONS"]) == {
        "notifier": {
            "type": "http",
            "settings": NOTIFIER.settings,
            "secretsDir": f"{INTEGRATIONS_MOUNT}/notifier",
        },
        "data.lake": {
            "type": "s3",
            "settings": {"bucket": "lake"},
            "secretsDir": f"{INTEGRATIONS_MOUNT}/data.lake",
        },
        "open": {"type": "http", "settings": {"baseUrl": "http://x"}},
    }


def test_secret_keys_become_one_projected_volume_naming_secrets_and_keys() -> None:
    manifest = job({}, (NOTIFIER, STORE, NO_SECRET))
    assert pod(manifest)["volumes"] == [
        {
            "name": "plait-integrations",
            "projected": {
                "sources": [
                    {
                        "secret": {
                            "name": "notifier-credentials",
                            "items": [{"key": "token", "path": "notifier/token"}],
                        }
                    },
                    {
                        "secret": {
                            "name": "aws",
                            "items": [
                                {"key": "AWS_ACCESS_KEY_ID", "path": "data.lake/accessKeyId"},
                                {
                                    "key": "AWS_SECRET_ACCESS_KEY",
                                    "path": "data.lake/secretAccessKey",
                                },
                            ],
                        }
                    },
                ]
            },
        }
    ]
    assert container(manifest)["volumeMounts"] == [
        {"name": "plait-integrations", "mountPath": INTEGRATIONS_MOUNT, "readOnly": True}
    ]


def test_colliding_variable_names_are_an_error_not_a_silent_overwrite() -> None:
    a = TaskIntegration("a-b", "http", {"baseUrl": "http://1"}, None, ())
    b = TaskIntegration("a.b", "http", {"baseUrl": "http://2"}, None, ())
    with pytest.raises(ValueError, match="both become PLAIT_INTEGRATION_A_B_BASE_URL"):
        job({}, (a, b))
