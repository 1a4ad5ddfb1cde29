"""How the Pods of Plait's Jobs ended, as the Pod watch delivers them.

A Job's end says only Complete or Failed; the exit code and the termination message (the
task's outputs) are on its Pod. Reading them with a LIST of the Job's Pods costs an API
call per task. The operator watches those Pods anyway (selected by the API server on
Plait's label), so each terminated container is kept here, by Job, until its Job's end is
recorded or the Pod is deleted. When the watch has not delivered it yet (a Job event can
arrive first), the Pods are listed as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plait.kernel.kube import PodResult, pod_result_of
from plait.kernel.watching import Subscription, Watched
from plait.task_execution.jobs import LABEL_INSTANCE_UID

__all__ = ["PodHandler", "PodResults", "pod_watch"]

logger = logging.getLogger(__name__)

#: The label the Job controller puts on its Pods (``batch.kubernetes.io/job-name`` too).
JOB_NAME_LABEL = "job-name"


class PodResults:
    """Terminated task containers by (namespace, Job name); bounded by the live Pods."""

    def __init__(self) -> None:
        self._by_job: dict[tuple[str, str], PodResult] = {}

    def on_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> None:
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


def _for_this_replica(
    pod: Mapping[str, Any], event_type: str | None, owns: Callable[[str], bool] | None
) -> bool:
    """Whether this replica handles this Pod event: its run is this replica's (when they
    share the runs), or the Pod is gone (whoever kept something of it lets go)."""
    if event_type == "DELETED" or owns is None:
        return True
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        return owns(labels.get(LABEL_INSTANCE_UID, ""))
    except ValueError:
        return False  # not a uid: no run's Pod


PodHandler = Callable[[str | None, Mapping[str, Any]], None]


def pod_watch(
    handlers: Sequence[PodHandler], owns: Callable[[str], bool] | None = None
) -> Subscription:
    """The watch of the Pods of Plait's Jobs (selected by the API server on Plait's
    label), feeding ``handlers`` (the Pod results, task logs) with this replica's Pods;
    ``owns``: whether this replica handles the run of that uid (others' are skipped)."""

    def pod_event(event_type: str | None, pod: Mapping[str, Any]) -> None:
        if not _for_this_replica(pod, event_type, owns):
            return
        for handler in handlers:
            try:
                handler(event_type, pod)
            except Exception:
                logger.exception("handling a Pod event failed")

    # A Pod gone unseen is handed over with its uid (task logs) and Job name (results).
    watched = Watched(
        "",
        "v1",
        "pods",
        label_selector=LABEL_INSTANCE_UID,
        kept_labels=frozenset({JOB_NAME_LABEL}),
        kept_owners=False,
    )
    return watched, pod_event
