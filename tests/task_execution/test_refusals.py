"""Which FailedCreate Events fail an attempt: only the refusals no retry can cure.

A refusal that does (Pod Security) is followed end to end on the control plane in
``test_jobs_e2e.py``; here, the ones that must leave the attempt alone, decided before any
database or Kubernetes call.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from plait.kernel.database import Database
from plait.kernel.kube import Kube
from plait.task_execution.service import TaskExecution


def event(message: str, *, reason: str = "FailedCreate", kind: str = "Job") -> dict[str, Any]:
    return {
        "metadata": {"name": "run-t-1-abc.17f", "namespace": "ns"},
        "involvedObject": {"kind": kind, "name": "run-t-1-abc", "namespace": "ns"},
        "reason": reason,
        "message": message,
    }


@pytest.mark.parametrize(
    "body",
    [
        # The Job controller retries these, and they can succeed later.
        event(
            'Error creating: pods "run-t-1-abc-x" is forbidden: exceeded quota: pods, '
            "requested: pods=1, used: pods=10, limited: pods=10"
        ),
        event('Error creating: Internal error occurred: failed calling webhook "x"'),
        # Not a Job's pod creation at all.
        event("violates PodSecurity", reason="FailedScheduling"),
        event("violates PodSecurity", kind="ReplicaSet"),
    ],
)
async def test_refusals_that_may_pass_later_leave_the_attempt_alone(body: dict[str, Any]) -> None:
    # Neither the database nor the API server may be touched: both are absent.
    tasks = TaskExecution(cast(Database, None), cast(Kube, None))
    assert await tasks.observe_refusal(body) is None
