"""A task attempt as a Kubernetes Job: its deterministic name and its manifest.

The name is a function of the instance's uid, the task and the attempt number, so every
operator process (before or after a crash, or two at once) names the same attempt's Job
the same way, and the API server's uniqueness of names makes its creation idempotent.
Plait retries by itself (``backoffLimit: 0``), so every attempt is its own Job and row.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait import API_GROUP, API_VERSION
from plait.resources.common import ContainerTemplate

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_INSTANCE",
    "LABEL_INSTANCE_UID",
    "LABEL_TASK",
    "JobRequest",
    "build_job",
    "job_name",
]

LABEL_INSTANCE = "plait.dev/instance"
LABEL_INSTANCE_UID = "plait.dev/instance-uid"
LABEL_TASK = "plait.dev/task"
LABEL_ATTEMPT = "plait.dev/attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "plait"}
TERMINATION_MESSAGE_LIMIT = 4096


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


def build_job(request: JobRequest) -> dict[str, Any]:
    """The Job manifest of one attempt."""
    t = request.template
    labels = {
        **MANAGED_BY,
        LABEL_INSTANCE: _label_safe(request.instance_name, 63),
        LABEL_INSTANCE_UID: request.instance_uid,
        LABEL_TASK: _label_safe(request.task, 63),
        LABEL_ATTEMPT: str(request.attempt),
    }
    env: list[dict[str, Any]] = []
    for var in t.env or ():
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
    env.append({"name": "PLAIT_TASK", "value": request.task})
    env.append({"name": "PLAIT_ATTEMPT", "value": str(request.attempt)})
    if request.traceparent:
        env.append({"name": "TRACEPARENT", "value": request.traceparent})
    container: dict[str, Any] = {
        "name": "main",
        "image": t.image,
        "env": env,
        "terminationMessagePolicy": "File",
    }
    if t.command:
        container["command"] = list(t.command)
    if t.args:
        container["args"] = list(t.args)
    if t.working_dir:
        container["workingDir"] = t.working_dir
    if t.resources is not None:
        container["resources"] = t.resources.model_dump(by_alias=True, exclude_none=True)
    pod_metadata = t.pod_metadata
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": request.ttl_seconds,
        "template": {
            "metadata": {
                "labels": {**(pod_metadata.labels if pod_metadata else {}), **labels},
                "annotations": dict(pod_metadata.annotations) if pod_metadata else {},
            },
            "spec": pod_spec,
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
