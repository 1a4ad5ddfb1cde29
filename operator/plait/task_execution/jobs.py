"""A task attempt as a Kubernetes Job: its deterministic name and its manifest.

The name is a function of the instance's uid, the task and the attempt number, so every
operator process (before or after a crash, or two at once) names the same attempt's Job
the same way, and the API server's uniqueness of names makes its creation idempotent.
Plait retries by itself (``backoffLimit: 0``), so every attempt is its own Job and row.

Every Job passes the ``restricted`` Pod Security level unless its task asks otherwise
(:func:`security`), and carries the Integrations its task lists: settings as environment
variables, secret keys as files the kubelet projects from the Secret (:func:`integration_env`,
:func:`integration_volume`), so no secret value is ever part of a Job.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait import API_GROUP, API_VERSION
from plait.integration.credentials import TaskIntegration
from plait.resources.common import ContainerTemplate, SecurityContext
from plait.resources.workflow import InputArtifact, WorkflowDefinitionSpec

__all__ = [
    "ANNOTATION_TASK_INSTANCE",
    "ARTIFACTS_MOUNT",
    "DEFAULT_RUN_AS_USER",
    "INTEGRATIONS_MOUNT",
    "LABEL_ATTEMPT",
    "LABEL_INSTANCE",
    "LABEL_INSTANCE_UID",
    "LABEL_TASK",
    "JobArtifacts",
    "JobRequest",
    "artifact_secret",
    "build_job",
    "integration_env",
    "integration_volume",
    "job_name",
    "security",
    "with_workflow_defaults",
]

LABEL_INSTANCE = "plait.dev/instance"
LABEL_INSTANCE_UID = "plait.dev/instance-uid"
LABEL_TASK = "plait.dev/task"
LABEL_ATTEMPT = "plait.dev/attempt"
#: The attempt's row id, on its Pod: the task-log collector names it in each line without
#: reading the attempt (set by Plait only; a template's own value is dropped).
ANNOTATION_TASK_INSTANCE = "plait.dev/task-instance-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "plait"}
TERMINATION_MESSAGE_LIMIT = 4096
#: The user a task runs as unless it says otherwise: not root, whatever the image's USER
#: (65532 is distroless' "nonroot"); restricted Pod Security refuses root.
DEFAULT_RUN_AS_USER = 65532
#: Where an Integration's secret keys appear: ``<mount>/<integration>/<key>``.
INTEGRATIONS_MOUNT = "/var/run/plait/integrations"
INTEGRATIONS_VOLUME = "plait-integrations"
#: Where plait-artifacts finds its plan (``plan/plan.json``, from the attempt's Secret) and
#: itself (``bin/``, copied there by the init container).
ARTIFACTS_MOUNT = "/var/run/plait/artifacts"
ARTIFACTS_VOLUME = "plait-artifacts"
ARTIFACTS_PLAN_VOLUME = "plait-artifacts-plan"


def _label_safe(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "x"


def job_name(instance_name: str, instance_uid: str, task: str, attempt: int) -> str:
    """``<instance>-<task>-<attempt>-<hash>``, at most 52 characters.

    52 leaves room for the suffix the Job controller adds to Pod names within the 63 of a
    label value (``job-name``). The hash keeps truncated names unique.
    """
    digest = hashlib.sha256(f"{instance_uid}/{task}/{attempt}".encode()).hexdigest()[:8]
    head = f"{_label_safe(instance_name, 20)}-{_label_safe(task, 16)}"
    return f"{head}-{attempt}-{digest}"


@dataclass(frozen=True)
class JobArtifacts:
    """An attempt's artifacts as its Job carries them (the URLs stay in its Secret)."""

    image: str
    """Image of plait-artifacts (the init container, and the wrapper it copies)."""
    secret_name: str
    plan: str
    """``plan.json``: the presigned URLs; the Secret's only key."""
    inputs: tuple[tuple[str, str], ...] = ()
    """(name, path) of each input artifact."""
    wrap: bool = False
    """The task has output artifacts: plait-artifacts runs its command, then uploads."""


@dataclass(frozen=True)
class JobRequest:
    """Everything needed to build the Job of one attempt."""

    namespace: str
    instance_name: str
    instance_uid: str
    task: str
    attempt: int
    template: ContainerTemplate
    inputs: Mapping[str, Any]
    timeout_seconds: int | None = None
    ttl_seconds: int = 600
    traceparent: str | None = None
    integrations: tuple[TaskIntegration, ...] = ()
    """The template's Integrations, resolved (settings and Secret names, no values)."""
    artifact_repository: str | None = None
    """The workflow's artifactRepository Integration."""
    input_artifacts: tuple[InputArtifact, ...] = ()
    """The task's inputArtifacts."""
    artifacts: JobArtifacts | None = None
    """The attempt's artifacts, resolved (keys, presigned URLs)."""
    attempt_id: uuid.UUID | None = None
    """The attempt's row id, once recorded (see ANNOTATION_TASK_INSTANCE)."""

    @property
    def name(self) -> str:
        return job_name(self.instance_name, self.instance_uid, self.task, self.attempt)


def _input_env(inputs: Mapping[str, Any]) -> list[dict[str, str]]:
    """Inputs as ``PLAIT_INPUTS`` (all, as JSON) and ``PLAIT_INPUT_<NAME>`` each."""
    env = [{"name": "PLAIT_INPUTS", "value": json.dumps(dict(inputs), sort_keys=True)}]
    for name, value in sorted(inputs.items()):
        text = value if isinstance(value, str) else json.dumps(value)
        env.append({"name": f"PLAIT_INPUT_{name.upper()}", "value": text})
    return env


def with_workflow_defaults(
    template: ContainerTemplate, workflow: WorkflowDefinitionSpec
) -> ContainerTemplate:
    """The template with what it leaves unset of the Pod's security and placement taken
    from the workflow's defaults (``spec.securityContext``,
    ``spec.automountServiceAccountToken``, ``spec.nodeSelector``, ``spec.tolerations``)."""
    context = template.security_context
    if workflow.security_context is not None:
        context = (context or SecurityContext()).over(workflow.security_context)
    automount = template.automount_service_account_token
    if automount is None:
        automount = workflow.automount_service_account_token
    selector = workflow.node_selector if template.node_selector is None else template.node_selector
    tolerations = workflow.tolerations if template.tolerations is None else template.tolerations
    if (context, automount, selector, tolerations) == (
        template.security_context,
        template.automount_service_account_token,
        template.node_selector,
        template.tolerations,
    ):
        return template
    return template.model_copy(
        update={
            "security_context": context,
            "automount_service_account_token": automount,
            "node_selector": selector,
            "tolerations": tolerations,
        }
    )


def security(context: SecurityContext | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Pod's and the container's securityContext: the task's fields over defaults that
    pass the ``restricted`` Pod Security level (non-root, no privilege escalation, every
    capability dropped, the runtime's seccomp profile)."""
    sc = context or SecurityContext()
    run_as_user = sc.run_as_user
    if run_as_user is None and sc.run_as_non_root is not False:
        run_as_user = DEFAULT_RUN_AS_USER
    run_as_non_root = sc.run_as_non_root
    if run_as_non_root is None:
        run_as_non_root = run_as_user != 0
    pod: dict[str, Any] = {"runAsNonRoot": run_as_non_root}
    if run_as_user is not None:
        pod["runAsUser"] = run_as_user
    if sc.run_as_group is not None:
        pod["runAsGroup"] = sc.run_as_group
    if sc.fs_group is not None:
        pod["fsGroup"] = sc.fs_group
    pod["seccompProfile"] = (
        sc.seccomp_profile.to_dict() if sc.seccomp_profile else {"type": "RuntimeDefault"}
    )
    container: dict[str, Any] = {}
    escalation = sc.allow_privilege_escalation
    if escalation is None and not sc.privileged:
        escalation = False
    if escalation is not None:
        container["allowPrivilegeEscalation"] = escalation
    if sc.privileged is not None:
        container["privileged"] = sc.privileged
    capabilities = sc.capabilities
    drop = capabilities.drop if capabilities and capabilities.drop is not None else ["ALL"]
    container["capabilities"] = {"drop": list(drop)}
    if capabilities and capabilities.add:
        container["capabilities"]["add"] = list(capabilities.add)
    if sc.read_only_root_filesystem is not None:
        container["readOnlyRootFilesystem"] = sc.read_only_root_filesystem
    return pod, container


def _env_part(text: str) -> str:
    """``baseUrl`` -> ``BASE_URL``, ``my-hook.prod`` -> ``MY_HOOK_PROD``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    return re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").upper()


def integration_env(integrations: tuple[TaskIntegration, ...]) -> list[dict[str, str]]:
    """``PLAIT_INTEGRATIONS`` (every integration's type, settings and credentials folder, as
    JSON) and ``PLAIT_INTEGRATION_<NAME>_<SETTING>`` for each top-level setting (strings
    as they are, other values as JSON). Raises ValueError when two names collide."""
    if not integrations:
        return []
    summary = {
        i.name: {
            "type": i.type,
            "settings": i.settings,
            **({"secretsDir": f"{INTEGRATIONS_MOUNT}/{i.name}"} if i.secret_items else {}),
        }
        for i in integrations
    }
    env = [{"name": "PLAIT_INTEGRATIONS", "value": json.dumps(summary, sort_keys=True)}]
    origin: dict[str, str] = {}
    for integration in integrations:
        prefix = f"PLAIT_INTEGRATION_{_env_part(integration.name)}"
        for setting, value in sorted(integration.settings.items()):
            name = f"{prefix}_{_env_part(setting)}"
            where = f"setting {setting!r} of Integration {integration.name!r}"
            if name in origin:
                raise ValueError(f"{where} and {origin[name]} both become {name}")
            origin[name] = where
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            env.append({"name": name, "value": text})
    return env


def integration_volume(integrations: tuple[TaskIntegration, ...]) -> dict[str, Any] | None:
    """One projected volume with each Integration's secret keys as ``<name>/<key>``: the
    Job names the Secrets and keys, the kubelet reads them. None when there is none."""
    sources = [
        {
            "secret": {
                "name": i.secret_name,
                "items": [
                    {"key": item.secret_key, "path": f"{i.name}/{item.type_key}"}
                    for item in i.secret_items
                ],
            }
        }
        for i in integrations
        if i.secret_name and i.secret_items
    ]
    if not sources:
        return None
    return {"name": INTEGRATIONS_VOLUME, "projected": {"sources": sources}}


def build_job(request: JobRequest) -> dict[str, Any]:
    """The Job manifest of one attempt.

    Raises ValueError when the task's integrations cannot be given to it (colliding
    variable names)."""
    labels = _labels(request)
    pod_metadata = request.template.pod_metadata
    annotations = dict(pod_metadata.annotations) if pod_metadata else {}
    annotations.pop(ANNOTATION_TASK_INSTANCE, None)
    if request.attempt_id is not None:
        annotations[ANNOTATION_TASK_INSTANCE] = str(request.attempt_id)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": request.ttl_seconds,
        "template": {
            "metadata": {
                "labels": {**(pod_metadata.labels if pod_metadata else {}), **labels},
                "annotations": annotations,
            },
            "spec": _pod_spec(request),
        },
    }
    if request.timeout_seconds:
        job_spec["activeDeadlineSeconds"] = request.timeout_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.name,
            "namespace": request.namespace,
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": "WorkflowInstance",
                    "name": request.instance_name,
                    "uid": request.instance_uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": job_spec,
    }


def _labels(request: JobRequest) -> dict[str, str]:
    """The labels that tie the Job and its Pod to their run, task and attempt."""
    return {
        **MANAGED_BY,
        LABEL_INSTANCE: _label_safe(request.instance_name, 63),
        LABEL_INSTANCE_UID: request.instance_uid,
        LABEL_TASK: _label_safe(request.task, 63),
        LABEL_ATTEMPT: str(request.attempt),
    }


def _environment(request: JobRequest) -> list[dict[str, Any]]:
    """The template's variables, then the inputs, the integrations' settings and Plait's
    own (``PLAIT_TASK``, ``PLAIT_ATTEMPT``, ``TRACEPARENT``)."""
    env: list[dict[str, Any]] = []
    for var in request.template.env or ():
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            env.append(
                {
                    "name": var.name,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
        else:
            env.append({"name": var.name, "value": var.value or ""})
    env += _input_env(request.inputs)
    env += integration_env(request.integrations)
    env.append({"name": "PLAIT_TASK", "value": request.task})
    env.append({"name": "PLAIT_ATTEMPT", "value": str(request.attempt)})
    if request.traceparent:
        env.append({"name": "TRACEPARENT", "value": request.traceparent})
    return env


def _pod_spec(request: JobRequest) -> dict[str, Any]:
    """The attempt's Pod: one restricted container, never restarted in place (a retry is a
    new attempt, hence a new Job)."""
    t = request.template
    pod_security, container_security = security(t.security_context)
    container: dict[str, Any] = {
        "name": "main",
        "image": t.image,
        "env": _environment(request),
        "terminationMessagePolicy": "File",
        "securityContext": container_security,
    }
    if t.command:
        container["command"] = list(t.command)
    if t.args:
        container["args"] = list(t.args)
    if t.working_dir:
        container["workingDir"] = t.working_dir
    if t.resources is not None:
        container["resources"] = t.resources.model_dump(by_alias=True, exclude_none=True)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": bool(t.automount_service_account_token),
        "securityContext": pod_security,
        "containers": [container],
    }
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    if t.node_selector:
        pod_spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        pod_spec["tolerations"] = [
            x.model_dump(by_alias=True, exclude_none=True) for x in t.tolerations
        ]
    volume = integration_volume(request.integrations)
    if volume is not None:
        pod_spec["volumes"] = [volume]
        container["volumeMounts"] = [
            {"name": volume["name"], "mountPath": INTEGRATIONS_MOUNT, "readOnly": True}
        ]
    if request.artifacts is not None:
        _add_artifacts(pod_spec, container, request.artifacts)
    return pod_spec


def _add_artifacts(pod: dict[str, Any], main: dict[str, Any], artifacts: JobArtifacts) -> None:
    """An init container that copies plait-artifacts into a shared emptyDir and downloads
    the inputs there; the inputs mounted read-only at their paths in the task's container;
    its command wrapped by plait-artifacts when it has outputs to upload."""
    plan = f"{ARTIFACTS_MOUNT}/plan/plan.json"
    shared = f"{ARTIFACTS_MOUNT}/shared"
    pod.setdefault("volumes", []).extend(
        [
            {"name": ARTIFACTS_VOLUME, "emptyDir": {}},
            {
                "name": ARTIFACTS_PLAN_VOLUME,
                "secret": {"secretName": artifacts.secret_name, "defaultMode": 0o444},
            },
        ]
    )
    plan_mount = {
        "name": ARTIFACTS_PLAN_VOLUME,
        "mountPath": f"{ARTIFACTS_MOUNT}/plan",
        "readOnly": True,
    }
    pod["initContainers"] = [
        {
            "name": "plait-artifacts",
            "image": artifacts.image,
            "command": ["/plait-artifacts", "init", plan, shared],
            "terminationMessagePolicy": "File",
            "securityContext": dict(main["securityContext"]),
            "volumeMounts": [{"name": ARTIFACTS_VOLUME, "mountPath": shared}, plan_mount],
        }
    ]
    mounts = main.setdefault("volumeMounts", [])
    for name, path in artifacts.inputs:
        mounts.append(
            {"name": ARTIFACTS_VOLUME, "mountPath": path, "subPath": f"in/{name}", "readOnly": True}
        )
    if artifacts.wrap:
        mounts.append(
            {
                "name": ARTIFACTS_VOLUME,
                "mountPath": f"{ARTIFACTS_MOUNT}/bin",
                "subPath": "bin",
                "readOnly": True,
            }
        )
        mounts.append(plan_mount)
        main["command"] = [
            f"{ARTIFACTS_MOUNT}/bin/plait-artifacts",
            "run",
            plan,
            "--",
            *main.get("command", ()),
        ]


def artifact_secret(request: JobRequest) -> dict[str, Any] | None:
    """The attempt's Secret holding ``plan.json`` (its URLs), labelled like its Job and,
    like it, owned by the run: the operator creates it before the Job (so a Job never waits
    for a Secret no one will create) and deletes it when the attempt ends."""
    if request.artifacts is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": request.artifacts.secret_name,
            "namespace": request.namespace,
            "labels": {
                **MANAGED_BY,
                LABEL_INSTANCE_UID: request.instance_uid,
                LABEL_TASK: _label_safe(request.task, 63),
                LABEL_ATTEMPT: str(request.attempt),
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": "WorkflowInstance",
                    "name": request.instance_name,
                    "uid": request.instance_uid,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "stringData": {"plan.json": request.artifacts.plan},
    }
