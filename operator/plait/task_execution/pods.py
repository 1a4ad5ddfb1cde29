"""How the Pods of Plait's Jobs ended, as the Pod watch delivers them.

A Job's end says only Complete or Failed; the exit code and the termination message (the
task's outputs) are on its Pod. Reading them with a LIST of the Job's Pods costs an API
call per task. The operator watches those Pods anyway (selected by the API server on
Plait's label), so each terminated container is kept here, by Job, until its Job's end is
recorded or the Pod is deleted. When the watch has not delivered it yet (a Job event can
arrive first), the Pods are listed as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from plait.kernel.kube import PodResult, pod_result_of
from plait.task_execution.jobs import LABEL_INSTANCE_UID

__all__ = ["PodResults", "for_this_replica", "register_pod_results"]

#: The label the Job controller puts on its Pods (``batch.kubernetes.io/job-name`` too).
JOB_NAME_LABEL = "job-name"


class PodResults:
    """Terminated task containers by (namespace, Job name); bounded by the live Pods."""

    def __init__(self) -> None:
        self._by_job: dict[tuple[str, str], PodResult] = {}

    def on_pod(self, pod: Mapping[str, Any], event_type: str | None) -> None:
        meta = pod.get("metadata") or {}
        job = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
        namespace = meta.get("namespace")
        if not job or not namespace:
            return
        if event_type == "DELETED":
            self._by_job.pop((namespace, job), None)
            return
        result = pod_result_of(pod)
        if result is not None:
            self._by_job[namespace, job] = result

    def take(self, namespace: str, job: str) -> PodResult | None:
        """How the Job's Pod ended, if the watch has delivered it; forgotten once taken."""
        return self._by_job.pop((namespace, job), None)

    def __len__(self) -> int:
        return len(self._by_job)


def for_this_replica(
    pod: kopf.Body, event_type: str | None, owns: Callable[[str], bool] | None
) -> bool:
    """Whether this replica handles this Pod event: its run is this replica's (when they
    share the runs), or the Pod is gone (whoever kept something of it lets go)."""
    if event_type == "DELETED" or owns is None:
        return True
    try:
        return owns(pod.metadata.labels.get(LABEL_INSTANCE_UID, ""))
    except ValueError:
        return False  # not a uid: no run's Pod


def register_pod_results(
    registry: kopf.OperatorRegistry,
    results: PodResults,
    owns: Callable[[str], bool] | None = None,
) -> None:
    """Watch the Pods of Plait's Jobs (selected by the API server) into ``results``;
    ``owns``: whether this replica handles the run of that uid (others' Pods are not kept)."""

    async def select_pods(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.watching.label_selectors["", "v1", "pods"] = LABEL_INSTANCE_UID

    async def pod_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        if for_this_replica(body, type, owns):
            results.on_pod(body, type)

    kopf.on.startup(id="select-job-pods", registry=registry)(select_pods)
    kopf.on.event(
        "",
        "v1",
        "pods",
        id="keep-pod-results",
        labels={LABEL_INSTANCE_UID: kopf.PRESENT},
        registry=registry,
    )(pod_event)
