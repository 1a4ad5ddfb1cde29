"""How the end of a failed Job's Pod is told apart: the task's own failure or an error."""

from __future__ import annotations

import pytest

from plait.kernel.kube import PodResult
from plait.task_execution.service import failure_cause
from plait.task_execution.states import FailureCause

FAILURE, ERROR = FailureCause.FAILURE, FailureCause.ERROR


@pytest.mark.parametrize(
    ("result", "cause"),
    [
        (PodResult(3, "disk full", "Error"), FAILURE),
        (PodResult(137, None, "OOMKilled"), FAILURE),
        (PodResult(128, "exec: no such file", "StartError"), ERROR),
        (PodResult(137, None, "Error", "Evicted"), ERROR),
        (PodResult(0, None, "Completed"), ERROR),  # exited 0, yet the Job failed
        (PodResult(None, None, None), ERROR),
        (None, ERROR),  # no Pod left to say how it ended
    ],
    ids=["exit", "oom", "start-error", "evicted", "zero", "no-exit", "no-pod"],
)
def test_only_a_non_zero_exit_of_the_process_itself_is_a_failure(
    result: PodResult | None, cause: FailureCause
) -> None:
    assert failure_cause(result) is cause
